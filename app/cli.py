"""The wallet command: serve, migrate, and the operator's everyday tasks.

Every command works against ``WALLET_DATABASE_URL`` / ``WALLET_REDIS_URL`` when set, and against
local servers in ``WALLET_DATA_DIR`` otherwise (see :mod:`app.dev.local`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from app import cli_args, cli_ops, cli_output, cli_provider, db, gauges, logs, metrics_files
from app.cli_db import CLI_ACTOR, run_db
from app.cli_db import with_conn as _with_conn
from app.config import Settings
from app.dev import demo, local
from app.ledger import service as ledger
from app.operator import adjustments, api_keys, players, postings, providers, reports
from app.progress import Progress
from app.seamless import keys
from app.secrets import master_key_bytes
from app.web.auth import ROLES
from app.web.errors import WalletError


async def _migrate(dsn: str) -> list[str]:
    conn = await db.connect(dsn)
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
    # Local servers or the demo keep a master key in the data folder; a real deployment must
    # give one, or it would seal keys under a key nobody keeps.
    master_text = local.master_key(settings, local=args.demo or settings.database_url is None)
    master = master_key_bytes(master_text)
    logs.register_secret_bytes(master)
    with ExitStack() as stack:
        s = stack.enter_context(local.services(settings))
        assert s.database_url is not None and s.redis_url is not None
        applied = asyncio.run(_migrate(s.database_url))
        if applied:
            print("applied migrations: " + ", ".join(applied))
        # A master key that opens none of the stored keys stops here rather than failing every
        # request, and keys stored raw before migration 005 are sealed before anything serves.
        asyncio.run(_with_conn(s.database_url, lambda c, q: _seal_and_check(c, q, master)))
        # Workers (and the app factory) read the URLs and the master key from the environment.
        os.environ["WALLET_DATABASE_URL"] = s.database_url
        os.environ["WALLET_REDIS_URL"] = s.redis_url
        os.environ["WALLET_MASTER_KEY"] = master_text
        if args.demo or settings.database_url is None:
            # Kept next to the master key, so that a restart and the back office agree.
            os.environ["WALLET_ADMIN_API_KEY"] = local.admin_key(settings)
        elif settings.admin_api_key is None:
            os.environ["WALLET_ADMIN_API_KEY"] = "wk_admin_" + secrets.token_urlsafe(24)
        if args.demo:
            url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
            psp = None
            if not settings.psps:
                # Stopped before the local servers: the stack unwinds in reverse.
                psp = stack.enter_context(demo.sandbox_psp(settings))
                os.environ["WALLET_PSPS"] = psp.routes()
            # Where PSPs send their webhooks: here, on the port --port chose too.
            os.environ.setdefault("WALLET_PUBLIC_URL", url)
            made = asyncio.run(_with_conn(s.database_url, lambda c, q: demo.setup(c, q, master)))
            page = None
            if psp is not None:
                public = os.environ["WALLET_PUBLIC_URL"]
                page = asyncio.run(demo.first_deposit(s.database_url, Settings.from_env(), public))
            admin = None if settings.admin_api_key else os.environ["WALLET_ADMIN_API_KEY"]
            listening = "127.0.0.1" if host in ("0.0.0.0", "::") else host
            demo.announce_when_listening(demo.banner(made, url, admin, psp, page), listening, port)
        # uvicorn re-raises the signal that stopped it once the graceful shutdown is over. As
        # KeyboardInterrupt (absorbed by uvicorn.run) a SIGTERM ends `wallet serve` with status 0
        # and leaves through `local.services` like Ctrl+C does, rather than dying of the signal.
        # (With --workers N the supervisor handles signals itself; this changes nothing there.)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        # Several workers share their metrics through files in one directory (app/metrics_files.py).
        with metrics_files.serving_dir(args.workers):
            uvicorn.run(
                "app.main:create_app",
                factory=True,
                host=host,
                port=port,
                workers=args.workers,
                log_level="info",
                access_log=False,
                log_config=None,
                timeout_graceful_shutdown=10,
            )
    return 0


async def _seal_and_check(conn: asyncpg.Connection, q: db.Queries, master: bytes) -> None:
    # Checked first: raw keys must not be sealed under a master key that is not this database's.
    await keys.check_master_key(conn, q, master)
    sealed = await keys.seal_raw_keys(conn, q, master)
    if sealed:
        print(f"sealed {sealed} provider keys under the master key")


def cmd_reconcile(settings: Settings, args: argparse.Namespace) -> int:
    """Print the reconciliation report of a PSP (``--psp``) or of a game provider's transaction
    report (``--provider`` and ``--file``); exit 3 when it found discrepancies (for cron
    alerts)."""
    import httpx

    from app.operator import reconciliation as provider_reconciliation
    from app.payments.psp import build_psps
    from app.payments.reconciliation import reconcile, route_named
    from app.reconciliation import default_day

    day = default_day(args.date)
    if args.provider is not None and args.file is None:
        raise SystemExit("wallet reconcile --provider needs --file (the provider's CSV report)")
    if args.psp is not None and args.file is not None:
        raise SystemExit("--file goes with --provider, not --psp")

    progress = Progress.when(args.progress, "reconcile")

    async def run(dsn: str) -> dict[str, Any]:
        if args.provider is not None:
            data = args.file.read_bytes()
            progress.say(f"read {len(data.splitlines())} lines of {args.file}")
            found = await _with_conn(
                dsn,
                lambda c, q: provider_reconciliation.reconcile(c, q, args.provider, day, data),
            )
        else:
            async with httpx.AsyncClient() as http:
                psp = route_named(build_psps(settings.psps, http), args.psp)
                progress.say(f"reading the settlement report of {psp.name} for {day}")
                found = await _with_conn(dsn, lambda c, q: reconcile(c, q, psp, day))
        # A provider's report counts every finding (its list is capped); a PSP's lists them all.
        findings = sum(found.get("findings", {}).values()) or len(found["discrepancies"])
        progress.say(f"matched {found['matched']} lines, {findings} findings")
        return found

    with local.services(settings) as s:
        assert s.database_url is not None
        report = asyncio.run(run(s.database_url))
    cli_output.show(report, args)
    return 0 if report["ok"] else 3


def _db_command(
    work: Callable[[asyncpg.Connection, db.Queries], Awaitable[Any]],
) -> Callable[[Settings, argparse.Namespace], int]:
    def run(settings: Settings, args: argparse.Namespace) -> int:
        cli_output.show(run_db(settings, work), args)
        return 0

    return run


def _master(settings: Settings) -> bytes:
    """The master key of a command that seals keys: ``WALLET_MASTER_KEY``, or with local
    servers the one in the data folder."""
    master = master_key_bytes(local.master_key(settings, local=settings.database_url is None))
    logs.register_secret_bytes(master)
    return master


def _keyed_command(
    work: Callable[[asyncpg.Connection, db.Queries, bytes], Awaitable[Any]],
) -> Callable[[Settings, argparse.Namespace], int]:
    """A database command that also needs the master key (resolved before any server starts)."""

    def run(settings: Settings, args: argparse.Namespace) -> int:
        master = _master(settings)
        return _db_command(lambda c, q: work(c, q, master))(settings, args)

    return run


def cmd_keys_rewrap(settings: Settings, args: argparse.Namespace) -> int:
    """Seal every provider key again under the new master key (``WALLET_MASTER_KEY``); the old
    one is read from a file, so that it shows in neither the process list nor a shell history."""
    old_text = args.old_master_file.read_text().strip()
    try:
        old = master_key_bytes(old_text)
    except ValueError:
        raise SystemExit(
            f"{args.old_master_file} does not hold a master key (base64 of 32 bytes)"
        ) from None
    logs.register_secret_bytes(old)
    new = _master(settings)
    if old == new:
        raise SystemExit("the old and the new master key are the same")

    async def work(conn: asyncpg.Connection, q: db.Queries) -> dict[str, int]:
        return {"rewrapped": await keys.rewrap(conn, q, old, new)}

    return _db_command(work)(settings, args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wallet", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    parser.add_argument("--version", action="version", version=cli_args.version_text())
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
        run=lambda s, a: _keyed_command(
            lambda c, q, m: providers.create_provider(
                c, q, a.code, a.name or a.code, CLI_ACTOR, master_key=m
            )
        )(s, a)
    )
    p_rotate = provider.add_parser("rotate-key", help="new current key; old one stays previous")
    p_rotate.add_argument("code")
    p_rotate.set_defaults(
        run=lambda s, a: _keyed_command(
            lambda c, q, m: providers.rotate_key(c, q, a.code, CLI_ACTOR, master_key=m)
        )(s, a)
    )

    key_commands = sub.add_parser(
        "keys", help="provider keys at rest (sealed under WALLET_MASTER_KEY)"
    ).add_subparsers(dest="action", required=True)
    key_commands.add_parser(
        "encrypt", help="seal the provider keys still stored raw (wallet serve does it too)"
    ).set_defaults(
        run=lambda s, a: _keyed_command(lambda c, q, m: _sealed_count(keys.seal_raw_keys(c, q, m)))(
            s, a
        )
    )
    k_rewrap = key_commands.add_parser(
        "rewrap", help="seal every provider key again under a new WALLET_MASTER_KEY"
    )
    k_rewrap.add_argument(
        "--old-master-file",
        type=Path,
        required=True,
        help="a file holding the master key the keys are sealed under now (base64)",
    )
    k_rewrap.set_defaults(run=cmd_keys_rewrap)

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
            lambda c, q: players.issue_session(
                c, q, a.player_id, a.provider, a.game, s.session_ttl_seconds
            )
        )(s, a)
    )

    check = sub.add_parser("ledger", help="ledger").add_subparsers(dest="action", required=True)
    l_check = check.add_parser("check", help="verify every ledger invariant")
    cli_args.progress_flag(l_check)
    l_check.set_defaults(run=cmd_ledger_check)

    apikey = sub.add_parser("apikey", help="operator API keys").add_subparsers(
        dest="action", required=True
    )
    k_create = apikey.add_parser("create", help="create a key; prints its secret once")
    k_create.add_argument("--role", required=True, choices=ROLES)
    k_create.add_argument("--name", help="what the key is for (default: the role)")
    k_create.set_defaults(
        run=lambda s, a: _db_command(
            lambda c, q: api_keys.create_api_key(c, q, a.role, a.name or a.role, CLI_ACTOR)
        )(s, a)
    )
    k_revoke = apikey.add_parser("revoke", help="revoke a key by its id")
    k_revoke.add_argument("key_id")
    k_revoke.set_defaults(
        run=lambda s, a: _db_command(
            lambda c, q: api_keys.revoke_api_key(c, q, a.key_id, CLI_ACTOR)
        )(s, a)
    )

    report = sub.add_parser("report", help="finance reports").add_subparsers(
        dest="action", required=True
    )
    r_daily = report.add_parser("daily", help="per provider and currency for one UTC day")
    r_daily.add_argument("--date", type=cli_args.day, help="YYYY-MM-DD (default today)")
    r_daily.set_defaults(
        run=lambda s, a: _db_command(
            lambda c, q: reports.daily_report(c, q, a.date or datetime.now(UTC).date())
        )(s, a)
    )
    r_statement = report.add_parser("statement", help="a player's statement")
    r_statement.add_argument("player_id")
    r_statement.add_argument(
        "--from", dest="since", type=cli_args.utc_time, help=cli_args.TIME_HELP
    )
    r_statement.add_argument("--to", dest="until", type=cli_args.utc_time, help=cli_args.TIME_HELP)
    r_statement.set_defaults(
        run=lambda s, a: _db_command(
            lambda c, q: postings.statement(
                c,
                q,
                a.player_id,
                a.since or datetime.now(UTC) - timedelta(days=30),
                a.until or datetime.now(UTC),
            )
        )(s, a)
    )

    rec = sub.add_parser(
        "reconcile",
        help="match a PSP's settlement report, or a game provider's transaction report, "
        "against the ledger",
    )
    counterpart = rec.add_mutually_exclusive_group(required=True)
    counterpart.add_argument("--psp", help="a route name from WALLET_PSPS")
    counterpart.add_argument("--provider", help="a game provider's code (with --file)")
    rec.add_argument(
        "--file",
        type=Path,
        help="the provider's CSV report (transaction_id,round_id,player_id,event,amount,currency)",
    )
    rec.add_argument("--date", type=cli_args.day, help="YYYY-MM-DD (default yesterday)")
    cli_args.progress_flag(rec)
    rec.set_defaults(run=cmd_reconcile)

    cli_provider.add_parsers(sub)
    cli_ops.add_parsers(sub, player)

    # The sandbox PSP (docs/sandbox-psp.md): in memory, needs neither Postgres nor Redis.
    def cmd_sandbox_psp(settings: Settings, args: argparse.Namespace) -> int:
        from app.dev.sandbox_psp.server import serve as serve_sandbox

        return serve_sandbox(args.host, args.port)

    sandbox_psp = sub.add_parser("sandbox-psp", help="run the sandbox payment service provider")
    sandbox_psp.add_argument("--host", default="127.0.0.1")
    sandbox_psp.add_argument("--port", type=int, default=8090)
    sandbox_psp.set_defaults(run=cmd_sandbox_psp)
    # Every command with a result prints it as tables or JSON; these print lines or serve.
    for command in cli_args.leaves(sub):
        if command.prog not in ("wallet serve", "wallet migrate", "wallet sandbox-psp"):
            cli_output.add_flags(command)
    return parser


def cmd_ledger_check(settings: Settings, args: argparse.Namespace) -> int:
    progress = Progress.when(args.progress, "ledger check")
    total = len(ledger.CHECKS)

    def step(i: int, name: str, found: int) -> None:
        progress.say(f"{i}/{total} {name}: " + (f"{found} found" if found else "ok"))

    return _db_command(lambda c, q: gauges.check_and_store(c, q, step))(settings, args)


async def _sealed_count(sealing: Awaitable[int]) -> dict[str, int]:
    return {"sealed": await sealing}


async def _create_player(
    conn: asyncpg.Connection, q: db.Queries, player_id: str, currency: str, balance: int
) -> players.Player:
    player, _ = await players.create_player(conn, q, player_id, currency, CLI_ACTOR)
    if balance:
        await adjustments.adjust(
            conn,
            q,
            player_id,
            balance,
            "initial balance (cli)",
            f"cli-{secrets.token_hex(8)}",
            CLI_ACTOR,
        )
        player = await players.get_player(conn, q, player_id)
    return player


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from app import logs

    json = False
    if args.command == "serve":
        # Text for a person (the demo, or a terminal), JSON for a log collector; workers of
        # --workers N read the choice from the environment.
        json = logs.json_from_env(terminal=args.demo or sys.stderr.isatty())
        os.environ["WALLET_LOG_FORMAT"] = "json" if json else "text"
    logs.configure_logging(logging.DEBUG if args.verbose else logging.INFO, json=json)
    # One line per HTTP request from the provider client is noise on a terminal.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        settings = Settings.from_env()
        result: int = args.run(settings, args)
        return result
    except WalletError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except (ValueError, RuntimeError, OSError, asyncpg.PostgresError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
