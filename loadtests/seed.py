"""Create a provider and N funded players with live sessions; write what the profiles need.

    python -m loadtests.seed --players 1000 --balance 10000000 --out loadtests/seed.json

Uses ``WALLET_DATABASE_URL`` when set, else the local servers of ``make run``.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from app import db, local
from app.config import Settings
from app.operator import service as operator

SEED_ACTOR = operator.Actor("loadtests.seed")


async def seed(dsn: str, players: int, balance: int, currency: str) -> dict[str, Any]:
    conn = await db.connect(dsn)
    q = db.Queries.load()
    try:
        code = "load-" + secrets.token_hex(3)
        key = (await operator.create_provider(conn, q, code, "Load test provider", SEED_ACTOR))[
            "keys"
        ][0]
        seeded = []
        started = time.monotonic()
        for i in range(players):
            player_id = f"{code}-p{i}"
            await operator.create_player(conn, q, player_id, currency, SEED_ACTOR)
            await operator.adjust(
                conn, q, player_id, balance, "load test funding", f"{player_id}-funding", SEED_ACTOR
            )
            session = await operator.issue_session(conn, q, player_id, code, "load-slot", 24 * 3600)
            seeded.append({"player_id": player_id, "session_token": session["session_token"]})
            if (i + 1) % 500 == 0 or i + 1 == players:
                rate = (i + 1) / (time.monotonic() - started)
                print(f"  {i + 1}/{players} players ({rate:.0f}/s)", file=sys.stderr)
        return {
            "provider": code,
            "key": key["key"],
            "key_id": key["key_id"],
            "currency": currency,
            "players": seeded,
        }
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--players", type=int, default=1000)
    parser.add_argument("--balance", type=int, default=10_000_000, help="minor units each")
    parser.add_argument("--currency", default="EUR")
    parser.add_argument("--out", type=Path, default=Path("loadtests/seed.json"))
    args = parser.parse_args()
    with local.services(Settings.from_env()) as s:
        assert s.database_url is not None
        result = asyncio.run(seed(s.database_url, args.players, args.balance, args.currency))
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"seeded provider {result['provider']} with {args.players} players -> {args.out}")


if __name__ == "__main__":
    main()
