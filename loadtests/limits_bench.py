"""The limits benchmark: a bet of a player with a long history and six limits against a fresh one.

    python -m loadtests.limits_bench [--history 1000000] [--bets 2000]

Issue 12: a limit check used to scan the window's postings once per limit, so a player with six
limits and a million bets this month needed about a second per bet. What one run does, and
prints as one JSON line at the end (progress goes to stderr):

1. Creates a fresh database ``wallet_limits_bench`` on the server of ``WALLET_DATABASE_URL``
   (dropped first if there), and applies the migrations.
2. Seeds a provider and two funded players with sessions. One gets ``--history`` past rounds
   this month (set-based SQL, ``loadtests/sql/limits_bench.sql``: bets, a cancel of every tenth,
   results of the others, balanced like the wallet writes them), the other none. Both get six
   limits: wager and loss, daily, weekly and monthly, set through the operator service as the API
   does (the first one counts the history once: ``set_limits_ms``).
3. Times ``--bets`` bets of each player, alternately, one at a time: each is the posting call
   the service makes (``GroupCommit.post``, a ``seamless_batch`` of one event in its own
   transaction), timed from call to answer. Prints p50 / p95 / p99 in milliseconds of both and
   their ratios (history / fresh).
4. Drops the database again unless ``--keep``.

This measures Postgres and the posting function, not HTTP: the limit check is all that differs
between the two players. docs/performance.md ("Limits") has the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from app import db
from app.audit import Actor
from app.operator.adjustments import adjust
from app.operator.players import LIMIT_PERIODS, create_player, issue_session, set_limits
from app.operator.providers import create_provider
from app.seamless.batch import GroupCommit, Posting
from app.seamless.outcome import Reason
from app.secrets import token_hash
from loadtests.bench import fresh_database

DATABASE = "wallet_limits_bench"
CURRENCY = "EUR"
BET = 100
FUNDING = 10**12
# High enough never to refuse a bet of the run: what is measured is the check, not a refusal.
SIX: dict[str, dict[str, int | None]] = {
    kind: dict.fromkeys(LIMIT_PERIODS, 10**15) for kind in ("wager", "loss")
}
ACTOR = Actor("loadtests.limits_bench")


def progress(message: str) -> None:
    print(f"[limits-bench] {message}", file=sys.stderr, flush=True)


async def new_player(conn: asyncpg.Connection, q: db.Queries, provider: str) -> tuple[str, str]:
    """A funded player with a session at ``provider``; (player id, session token)."""
    player_id = "lb-" + secrets.token_hex(5)
    await create_player(conn, q, player_id, CURRENCY, ACTOR)
    await adjust(conn, q, player_id, FUNDING, "benchmark funding", player_id, ACTOR)
    session = await issue_session(conn, q, player_id, provider, "lb-slot", 86_400)
    return player_id, session.session_token


async def seed(dsn: str, history: int) -> tuple[str, dict[str, tuple[str, str]], float]:
    """The provider, the two players ({"history": ..., "fresh": ...}) and how long setting the
    limits of the one with a history took, in ms."""
    conn = await db.connect(dsn)
    q = db.Queries.load()
    seeding = db.Queries.load(Path(__file__).parent / "sql")
    try:
        await db.migrate(conn)
        provider = "lb-" + secrets.token_hex(3)
        await create_provider(
            conn, q, provider, "Limits benchmark", ACTOR, master_key=secrets.token_bytes(32)
        )
        players = {name: await new_player(conn, q, provider) for name in ("history", "fresh")}
        started = time.monotonic()
        await conn.execute(
            *seeding.limits_history(
                player_id=players["history"][0],
                provider=provider,
                currency=CURRENCY,
                rounds=history,
            )
        )
        progress(f"{history:,} past rounds seeded in {time.monotonic() - started:.0f} s")
        await conn.execute("VACUUM ANALYZE")
        set_ms = 0.0
        for name, (player_id, _token) in players.items():
            started = time.monotonic()
            await set_limits(conn, q, player_id, SIX, 86_400, ACTOR)
            if name == "history":
                set_ms = (time.monotonic() - started) * 1000
        progress(f"six limits set (with the history: {set_ms:.0f} ms)")
        return provider, players, set_ms
    finally:
        await conn.close()


def percentiles(samples: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50": round(cuts[49], 3), "p95": round(cuts[94], 3), "p99": round(cuts[98], 3)}


async def time_bets(
    dsn: str, provider: str, players: dict[str, tuple[str, str]], bets: int
) -> dict[str, list[float]]:
    """Milliseconds per bet of each player, the two players' bets interleaved."""
    pool = await db.create_pool(dsn, min_size=1, max_size=2)
    poster = GroupCommit(pool, db.Queries.load().seamless_batch)
    took: dict[str, list[float]] = {name: [] for name in players}
    try:
        for i in range(bets):
            # Alternately first, so that neither player's bets always follow the other's.
            names = list(players) if i % 2 == 0 else list(reversed(players))
            for name in names:
                player_id, token = players[name]
                ref = f"lb-timed-{name}-{i}"
                posting = Posting(
                    "bet", provider, player_id, ref, None, ref, "lb-slot", BET, CURRENCY,
                    token_hash(token), None, ref, ref.encode(),
                )  # fmt: skip
                started = time.perf_counter()
                row = await poster.post(posting)
                took[name].append((time.perf_counter() - started) * 1000)
                if row["reason"] != Reason.OK:
                    raise SystemExit(f"bet {i} of {name} answered {dict(row)}")
            if (i + 1) % max(1, bets // 10) == 0:
                progress(f"{i + 1:,}/{bets:,} bets of each")
    finally:
        await poster.close()
        await pool.close()
    return took


async def run(args: argparse.Namespace) -> dict[str, Any]:
    server = os.environ.get("WALLET_DATABASE_URL")
    if not server:
        raise SystemExit("WALLET_DATABASE_URL must name the Postgres server to benchmark on")
    dsn = await fresh_database(server, args.database)
    try:
        provider, players, set_ms = await seed(dsn, args.history)
        took = await time_bets(dsn, provider, players, args.bets)
    finally:
        if not args.keep:
            conn = await asyncpg.connect(server)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
            finally:
                await conn.close()
    history, fresh = percentiles(took["history"]), percentiles(took["fresh"])
    return {
        "history_rounds": args.history,
        "limits": sum(len(periods) for periods in SIX.values()),
        "bets_each": args.bets,
        "set_limits_ms": round(set_ms, 1),
        "history_ms": history,
        "fresh_ms": fresh,
        "ratio": {k: round(history[k] / fresh[k], 3) for k in history},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--history", type=int, default=1_000_000, help="past rounds this month")
    parser.add_argument("--bets", type=int, default=2_000, help="timed bets of each player")
    parser.add_argument("--database", default=DATABASE)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    print(orjson.dumps(asyncio.run(run(args))).decode(), flush=True)


if __name__ == "__main__":
    main()
