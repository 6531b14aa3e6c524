"""The ``wallet`` command: serve, migrate, and the operator's everyday set-up tasks.

Every command works against ``WALLET_DATABASE_URL`` / ``WALLET_REDIS_URL`` when set, and against
local servers in ``WALLET_DATA_DIR`` otherwise (see :mod:`app.local`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import secrets
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import orjson

from app import db, local
from app.config import Settings
from app.errors import WalletError
from app.ledger import service as ledger
from app.operator import service as operator

T = TypeVar("T")
DEMO_PROVIDER = "demo"
DEMO_PLAYERS = {"demo-alice": 100_000, "demo-bob": 50_000}


def _print(obj: Any) -> None:
    print(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode())


async def _with_conn(dsn: str, work: Callable[[asyncpg.Connection, db.Queries], Awaitable[T]]) -> T:
    conn = await asyncpg.connect(dsn)
    try:
        return await work(conn, db.Queries.load())
    finally:
        await conn.close()


async def _migrate(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return await db.migrate(conn)
    finally:
        await conn.close()


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    with local.services(settings) as s:
        assert s.database_url is not None
        applied = asyncio.run(_migrate(s.database_url))
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    host = args.host or settings.host
    port = args.port or settings.port
    with local.services(settings) as s:
        assert s.database_url is not None and s.redis_url is not None
        applied = asyncio.run(_migrate(s.database_url))
        if applied:
            print("applied migrations: " + ", ".join(applied))
        # Workers (and the app factory) read the URLs from the environment.
        os.environ["WALLET_DATABASE_URL"] = s.database_url
        os.environ["WALLET_REDIS_URL"] = s.redis_url
        admin_key = settings.admin_api_key
        if admin_key is None:
            admin_key_text = "wk_admin_" + secrets.token_urlsafe(24)
            os.environ["WALLET_ADMIN_API_KEY"] = admin_key_text
        else:
            admin_key_text = str(admin_key)
        if args.demo:
            demo = asyncio.run(_with_conn(s.database_url, _demo_setup))
            _print_demo(demo, f"http://{host}:{port}", admin_key_text, settings.admin_api_key)
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=host,
            port=port,
            workers=args.workers,
            log_level="info",
            access_log=False,
            timeout_graceful_shutdown=10,
        )
    return 0


async def _demo_setup(conn: asyncpg.Connection, q: db.Queries) -> dict[str, Any]:
    """A demo provider with a fresh key, and two funded players with fresh sessions."""
    if await conn.fetchval(q.provider_exists, DEMO_PROVIDER) is None:
        key = (await operator.create_provider(conn, q, DEMO_PROVIDER, "Demo provider"))["keys"][0]
    else:
        # Keys are shown once only: a new run rotates to a new key it can show.
        key = (await operator.rotate_key(conn, q, DEMO_PROVIDER))["keys"][0]
    players = {}
    for player_id, funds in DEMO_PLAYERS.items():
        player, _ = await operator.create_player(conn, q, player_id, "EUR")
        if player["balance"] == 0:
            await operator.adjust(
                conn,
                q,
                player_id,
                funds,
                "demo funding",
                f"demo-funding-{player_id}-{secrets.token_hex(4)}",
                "demo",
            )
        session = await operator.issue_session(
            conn, q, player_id, DEMO_PROVIDER, "demo-slot", 8 * 3600
        )
        players[player_id] = session["session_token"]
    return {"key": key, "players": players}


def _print_demo(demo: dict[str, Any], url: str, admin_key: str, configured: object) -> None:
    from app.client import seal_event

    key = demo["key"]
    alice, token = next(iter(demo["players"].items()))
    import time

    event = {
        "event": "balance",
        "request_id": "demo-" + secrets.token_hex(4),
        "timestamp": int(time.time()),
        "player_id": alice,
    }
    body = seal_event(base64.b64decode(key["key"]), DEMO_PROVIDER, event).decode()
    lines = [
        "",
        "Wallet demo",
        f"  operator API   {url}  (Authorization: Bearer <admin key>)",
        "  admin key      " + ("from WALLET_ADMIN_API_KEY" if configured else admin_key),
        f"  provider       {DEMO_PROVIDER}  key_id {key['key_id']}",
        f"  provider key   {key['key']}   (base64, AES-256-GCM)",
    ]
    for player_id, tok in demo["players"].items():
        lines.append(f"  player         {player_id}  session_token {tok}")
    lines += [
        "",
        "Send a bet (the wallet command seals the event, posts it and opens the answer):",
        f"  .venv/bin/wallet send --url {url} --provider {DEMO_PROVIDER} --key {key['key']} \\",
        f"      bet player_id={alice} session_token={token} transaction_id=tx-1 round_id=rd-1 \\",
        "      game_id=demo-slot amount=250 currency=EUR",
        "",
        "Or paste this balance request (its timestamp is valid for 5 minutes):",
        f"  curl -s {url}/v1/seamless/{DEMO_PROVIDER} -H 'content-type: application/json' \\",
        f"      -d '{body}'",
        "",
    ]
    print("\n".join(lines), flush=True)


def cmd_send(settings: Settings, args: argparse.Namespace) -> int:
    from app.client import ProviderClient

    fields: dict[str, Any] = {}
    for item in args.fields:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"fields are name=value, got {item!r}")
        fields[name] = int(value) if value.lstrip("-").isdigit() else value
        if value in ("true", "false"):
            fields[name] = value == "true"

    async def send() -> dict[str, Any]:
        client = ProviderClient(args.url, args.provider, args.key, key_id=args.key_id)
        try:
            return await client.send(args.event, **fields)
        finally:
            await client.aclose()

    _print(asyncio.run(send()))
    return 0


def _db_command(
    work: Callable[[asyncpg.Connection, db.Queries], Awaitable[Any]],
) -> Callable[[Settings, argparse.Namespace], int]:
    def run(settings: Settings, args: argparse.Namespace) -> int:
        with local.services(settings) as s:
            assert s.database_url is not None
            _print(asyncio.run(_with_conn(s.database_url, work)))
        return 0

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wallet", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="apply migrations and serve the API")
    serve.add_argument("--host", help="default WALLET_HOST or 127.0.0.1")
    serve.add_argument("--port", type=int, help="default WALLET_PORT or 8080")
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    serve.add_argument(
        "--demo",
        action="store_true",
        help="create a demo provider and funded players and print how to call",
    )
    serve.set_defaults(run=cmd_serve)

    sub.add_parser("migrate", help="apply pending migrations").set_defaults(run=cmd_migrate)

    provider = sub.add_parser("provider", help="game providers").add_subparsers(
        dest="action", required=True
    )
    p_create = provider.add_parser("create", help="register a provider; prints its first key")
    p_create.add_argument("code")
    p_create.add_argument("--name")
    p_create.set_defaults(
        run=lambda s, a: _db_command(
            lambda c, q: operator.create_provider(c, q, a.code, a.name or a.code)
        )(s, a)
    )
    p_rotate = provider.add_parser("rotate-key", help="new current key; old one stays previous")
    p_rotate.add_argument("code")
    p_rotate.set_defaults(
        run=lambda s, a: _db_command(lambda c, q: operator.rotate_key(c, q, a.code))(s, a)
    )

    player = sub.add_parser("player", help="players").add_subparsers(dest="action", required=True)
    pl_create = player.add_parser("create", help="create a player (optionally funded)")
    pl_create.add_argument("player_id")
    pl_create.add_argument("--currency", required=True)
    pl_create.add_argument("--balance", type=int, default=0, help="initial credit, minor units")
    pl_create.set_defaults(
        run=lambda s, a: _db_command(
            lambda c, q: _create_player(c, q, a.player_id, a.currency, a.balance)
        )(s, a)
    )

    session = sub.add_parser("session", help="sessions").add_subparsers(
        dest="action", required=True
    )
    s_issue = session.add_parser("issue", help="issue a session token")
    s_issue.add_argument("player_id")
    s_issue.add_argument("--provider", required=True)
    s_issue.add_argument("--game", default="default")
    s_issue.set_defaults(
        run=lambda s, a: _db_command(
            lambda c, q: operator.issue_session(
                c, q, a.player_id, a.provider, a.game, s.session_ttl_seconds
            )
        )(s, a)
    )

    check = sub.add_parser("ledger", help="ledger").add_subparsers(dest="action", required=True)
    check.add_parser("check", help="verify every ledger invariant").set_defaults(
        run=lambda s, a: _db_command(ledger.check)(s, a)
    )

    send = sub.add_parser("send", help="send one seamless event as a provider would")
    send.add_argument("--url", default="http://127.0.0.1:8080")
    send.add_argument("--provider", required=True)
    send.add_argument("--key", required=True, help="the provider key, base64")
    send.add_argument("--key-id")
    send.add_argument("event")
    send.add_argument("fields", nargs="*", help="name=value (digits become integers)")
    send.set_defaults(run=cmd_send)
    return parser


async def _create_player(
    conn: asyncpg.Connection, q: db.Queries, player_id: str, currency: str, balance: int
) -> dict[str, Any]:
    player, _ = await operator.create_player(conn, q, player_id, currency)
    if balance:
        await operator.adjust(
            conn,
            q,
            player_id,
            balance,
            "initial balance (cli)",
            f"cli-{secrets.token_hex(8)}",
            "cli",
        )
        player = await operator.get_player(conn, q, player_id)
    return player


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # One line per HTTP request from the provider client is noise on a terminal.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        settings = Settings.from_env()
        result: int = args.run(settings, args)
        return result
    except WalletError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
