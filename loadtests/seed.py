"""Create a provider and N funded players with live sessions; write what the profiles need.

    python -m loadtests.seed --players 1000                  # straight into the database
    python -m loadtests.seed --players 1000 --api URL --api-key KEY   # through the operator API

The database path uses ``WALLET_DATABASE_URL`` when set, else the local servers of ``make run``.
The API path needs only an admin API key, so QA can seed any deployment it can reach. Either way
every funding is an operator adjustment (a balanced ledger posting with its audit entry), so
``wallet ledger check`` holds on a seeded database. Both also create an operator-role API key,
which the mixed profile uses to issue fresh sessions after a logout.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

from app import db
from app.audit import Actor
from app.config import Settings
from app.dev import local
from app.operator.api_keys import create_api_key as new_api_key
from app.operator.providers import create_provider
from app.progress import Progress
from app.secrets import master_key_bytes, token_hash
from loadtests.config import GAME_ID

SEED_ACTOR = Actor("loadtests.seed")
SESSION_SECONDS = 24 * 3600
REASON = "load test funding"
# Rows per statement batch when seeding through the database, so that progress can be told.
CHUNK = 5_000


def _progress(message: str) -> None:
    print(message, file=sys.stderr)


def _new_code() -> str:
    return "load-" + secrets.token_hex(3)


async def seed(
    dsn: str,
    players: int,
    balance: int,
    currency: str,
    *,
    master_key: bytes | None = None,
    shown: Progress | None = None,
) -> dict[str, Any]:
    """A provider and ``players`` players funded with ``balance`` each, in one transaction.

    The provider's key is stored sealed under ``master_key`` (``WALLET_MASTER_KEY`` by default),
    which must be the one the wallet serving this database uses.

    The same rows as the operator service writes one player at a time (player, adjustment through
    ``wallet_adjust``, audit entries, a session), sent as pipelined batches: 10,000 players take
    seconds instead of minutes. With ``shown`` enabled, each step tells how far it is (a
    million players take minutes all the same).
    """
    conn = await db.connect(dsn)
    q = db.Queries.load()
    code = _new_code()
    ids = [f"{code}-p{i}" for i in range(players)]
    tokens = [secrets.token_urlsafe(32) for _ in ids]
    started = time.monotonic()
    shown = shown or Progress("seed", enabled=False)

    async def in_chunks(step: str, query: db.Query, rows: list[dict[str, Any]]) -> None:
        # Chunks only to tell progress: all of it is still one transaction.
        for start in range(0, len(rows), CHUNK):
            await conn.executemany(*query.many(rows[start : start + CHUNK]))
            shown.tick(f"{step} {min(start + CHUNK, len(rows))}/{len(rows)}")
        shown.say(f"{step} {len(rows)}/{len(rows)} done")

    try:
        async with conn.transaction():
            provider = await create_provider(
                conn, q, code, "Load test provider", SEED_ACTOR, master_key=master_key
            )
            key = provider.keys[0].model_dump()
            await in_chunks(
                "players", q.insert_player, [{"player_id": p, "currency": currency} for p in ids]
            )
            await _audit(conn, q, "player.create", ids, None, {"currency": currency})
            if balance:
                await in_chunks(
                    "fundings",
                    q.adjust,
                    [
                        {
                            "idempotency_key": f"{p}-funding",
                            "player_id": p,
                            "amount": balance,
                            "reason": REASON,
                            "actor": SEED_ACTOR.name,
                        }
                        for p in ids
                    ],
                )
                await _audit(
                    conn,
                    q,
                    "player.adjust",
                    ids,
                    {"balance": 0},
                    {"balance": balance, "amount": balance, "reason": REASON},
                )
            await in_chunks(
                "sessions",
                q.insert_session,
                [
                    {
                        "token_hash": token_hash(t),
                        "player_id": p,
                        "provider": code,
                        "game_id": GAME_ID,
                        "ttl_seconds": float(SESSION_SECONDS),
                    }
                    for p, t in zip(ids, tokens, strict=True)
                ],
            )
    finally:
        await conn.close()
    seconds = time.monotonic() - started
    _progress(f"  {players} players in {seconds:.1f} s ({players / max(seconds, 1e-3):.0f}/s)")
    return {
        "provider": code,
        "key": key["key"],
        "key_id": key["key_id"],
        "currency": currency,
        "players": [{"player_id": p, "session_token": t} for p, t in zip(ids, tokens, strict=True)],
    }


async def _audit(
    conn: asyncpg.Connection,
    q: db.Queries,
    action: str,
    ids: list[str],
    before: dict[str, Any] | None,
    after: dict[str, Any],
) -> None:
    """One audit entry per player, as the operator service writes with each change."""
    await conn.executemany(
        *q.insert_audit.many(
            {
                "actor": SEED_ACTOR.name,
                "action": action,
                "target": f"player:{p}",
                "before": before,
                "after": after,
                "request_id": None,
            }
            for p in ids
        ),
    )


async def create_api_key(dsn: str) -> str:
    """An operator-role API key for the mixed profile (it issues sessions, as a casino does)."""
    conn = await db.connect(dsn)
    try:
        created = await new_api_key(conn, db.Queries.load(), "operator", "load tests", SEED_ACTOR)
    finally:
        await conn.close()
    return created.key


class _Api:
    """The operator API as the seed uses it: every call must answer the status it expects."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def call(
        self, path: str, body: dict[str, Any], expect: int, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        for attempt in range(5):
            response = await self.http.post(path, json=body, headers=headers)
            if response.status_code not in (429, 503) or attempt == 4:
                break
            await asyncio.sleep(0.2 * 2**attempt)  # rate-limited or degraded: back off, retry
        if response.status_code != expect:
            raise SystemExit(f"POST {path}: {response.status_code} {response.text}")
        answer: dict[str, Any] = response.json()
        return answer


async def seed_over_api(
    url: str,
    admin_key: str,
    players: int,
    balance: int,
    currency: str,
    *,
    concurrency: int = 16,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, Any]:
    """The same seed through the operator API of a running wallet: no database access needed.

    Each player is created, funded (an adjustment with an Idempotency-Key, so a retried call
    never funds twice) and given a session; ``concurrency`` players are in flight at once.
    """
    headers = {"authorization": f"Bearer {admin_key}"}
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=30, transport=transport
    ) as http:
        api = _Api(http)
        code = _new_code()
        provider = await api.call("/v1/providers", {"code": code, "name": "Load test"}, 201)
        api_key = await api.call("/v1/api-keys", {"role": "operator", "name": "load tests"}, 201)
        gate = asyncio.Semaphore(concurrency)
        done = 0
        started = time.monotonic()

        async def one(i: int) -> dict[str, str]:
            nonlocal done
            player_id = f"{code}-p{i}"
            async with gate:
                await api.call("/v1/players", {"player_id": player_id, "currency": currency}, 201)
                if balance:
                    await api.call(
                        f"/v1/players/{player_id}/adjustments",
                        {"amount": balance, "reason": REASON},
                        201,
                        {"idempotency-key": f"{player_id}-funding"},
                    )
                session = await api.call(
                    f"/v1/players/{player_id}/sessions",
                    {"provider": code, "game_id": GAME_ID},
                    201,
                )
            done += 1
            if done % 500 == 0:
                rate = done / (time.monotonic() - started)
                _progress(f"  {done}/{players} players ({rate:.0f}/s)")
            return {"player_id": player_id, "session_token": session["session_token"]}

        seeded = await asyncio.gather(*(one(i) for i in range(players)))
    key = provider["keys"][0]
    return {
        "provider": code,
        "key": key["key"],
        "key_id": key["key_id"],
        "currency": currency,
        "players": list(seeded),
        "api_key": api_key["key"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--players", type=int, default=1000)
    parser.add_argument("--balance", type=int, default=10_000_000, help="minor units each")
    parser.add_argument("--currency", default="EUR")
    parser.add_argument("--out", type=Path, default=Path("loadtests/seed.json"))
    parser.add_argument("--api", metavar="URL", help="seed through this wallet's operator API")
    parser.add_argument("--api-key", help="an admin API key of that wallet (with --api)")
    parser.add_argument(
        "--progress",
        action="store_true",
        help="progress lines on stderr (seeding through the database), even in a pipe",
    )
    args = parser.parse_args(argv)
    if bool(args.api) != bool(args.api_key):
        parser.error("--api and --api-key go together")
    if args.players < 1 or args.balance < 0:
        parser.error("--players must be at least 1 and --balance not negative")
    if args.api:
        result = asyncio.run(
            seed_over_api(args.api, args.api_key, args.players, args.balance, args.currency)
        )
    else:
        settings = Settings.from_env()
        # The key `wallet serve` seals provider keys under on these servers (local: .data's).
        master = master_key_bytes(local.master_key(settings, local=settings.database_url is None))
        with local.services(settings) as s:
            assert s.database_url is not None
            result = asyncio.run(
                seed(
                    s.database_url,
                    args.players,
                    args.balance,
                    args.currency,
                    master_key=master,
                    shown=Progress.when(args.progress, "seed"),
                )
            )
            result["api_key"] = asyncio.run(create_api_key(s.database_url))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"seeded provider {result['provider']} with {args.players} players -> {args.out}")


if __name__ == "__main__":
    main()
