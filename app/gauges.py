"""The gauges operators alert on that need a query or a probe, refreshed in the background.

Two tasks per process (started by the app's lifespan) write them at known moments, so a scrape
runs no query and, in multiprocess mode, every worker's files hold a recent value:

- :func:`refresh_forever`, every :data:`LIVE_SECONDS`: this process's own quantities (pool,
  call-history buffer, Redis multiplexer queue, breakers; :meth:`app.metrics.Metrics.refresh_live`);
  every :data:`COUNT_SECONDS`: ``wallet_dependency_up`` (the readiness checks of
  :mod:`app.health`), ``wallet_outbox_events``, ``wallet_payments_attention`` and the last ledger
  check's result (``wallet_ledger_check_*``, from ``ledger_check_last``);
- :func:`check_ledger_forever`, every ``WALLET_LEDGER_CHECK_SECONDS``: the ledger check itself, by
  one process of all (the one that wins a Postgres advisory lock and finds the last result older
  than the period). It has its own task because it may take minutes on a large ledger, and the
  refresher must go on meanwhile: a replica's ``wallet_dependency_up`` is not blind while it runs.

The stale rounds have their own task (:func:`app.operator.rounds.count_stale_forever`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import asyncpg
from redis.asyncio import Redis

from app import health
from app.db import Queries
from app.ledger import service as ledger
from app.metrics import Metrics
from app.payments.models import ATTENTION, KINDS
from app.redis_mux import RedisMux

log = logging.getLogger(__name__)

LIVE_SECONDS = 5.0
COUNT_SECONDS = 15.0


@dataclass(frozen=True, slots=True)
class Sources:
    """What the gauges are read from."""

    pool: asyncpg.Pool
    queries: Queries
    redis: Redis
    mux: RedisMux
    metrics: Metrics
    ledger_check_seconds: int  # 0: never run the check here


def problems_of(result: dict[str, Any]) -> int:
    """Offending rows in a ledger check's result (each invariant lists up to ledger.SAMPLE)."""
    return sum(len(rows) for rows in result.get("problems", {}).values())


async def store_ledger_check(
    conn: asyncpg.Connection, q: Queries, result: dict[str, Any]
) -> tuple[int, float]:
    """Keep a ledger check's result for every process's gauges: (problems, finished at)."""
    problems = problems_of(result)
    return problems, await conn.fetchval(*q.record_ledger_check(problems=problems))


async def record_ledger_check(
    conn: asyncpg.Connection, q: Queries, metrics: Metrics, result: dict[str, Any]
) -> None:
    """Keep a ledger check's result for every process's gauges, and show it in this one's."""
    metrics.ledger_checked(*await store_ledger_check(conn, q, result))


async def check_and_store(
    conn: asyncpg.Connection, q: Queries, on_step: ledger.OnStep | None = None
) -> dict[str, Any]:
    """``wallet ledger check``: the check's result, kept for the servers' gauges too."""
    result = await ledger.check(conn, q, on_step)
    await store_ledger_check(conn, q, result)
    return result


async def check_dependencies(s: Sources) -> bool:
    """Probe Postgres and Redis into ``wallet_dependency_up``; whether Postgres answered."""
    database, redis = await asyncio.gather(
        health.check_database(s.pool), health.check_redis(s.redis, s.mux)
    )
    s.metrics.dependency_checked("postgres", database == "ok")
    s.metrics.dependency_checked("redis", redis == "ok")
    return database == "ok"


async def count(s: Sources) -> None:
    """The outbox, the payments needing attention and the last ledger check, from Postgres."""
    q = s.queries
    async with s.pool.acquire() as conn:
        outbox = await conn.fetchrow(*q.outbox_counts())
        s.metrics.outbox_counted(outbox["pending"], outbox["dead"])
        rows = await conn.fetch(*q.attention_counts())
        # Every declared pair, 0 when none: a pair left out would keep its last value.
        counts = {(kind, reason): 0 for kind in KINDS for reason in ATTENTION}
        counts.update({(r["kind"], r["attention"]): r["payments"] for r in rows})
        s.metrics.attention_counted(counts)
        last = await conn.fetchrow(*q.ledger_check_last(period_seconds=s.ledger_check_seconds))
        if last is not None:
            s.metrics.ledger_checked(last["problems"], last["finished_at"])


async def check_ledger_if_due(
    conn: asyncpg.Connection, q: Queries, metrics: Metrics, period_seconds: int
) -> bool:
    """Run the ledger check if no process ran it within ``period_seconds`` and no other is
    running it now (the advisory lock): so N workers of M replicas run it once per period.
    Whether it ran here.

    Lock, due-check, check and record are one transaction, so they hold on one server
    connection even behind PgBouncer in transaction mode, and its end releases the lock."""
    try:
        # One snapshot, as ledger.check takes on its own, allowed up to a period to run.
        async with conn.transaction(isolation="repeatable_read"):
            if not await conn.fetchval(*q.ledger_check_lock()):
                return False
            # A process that finished before the lock was ours has recorded its result, and
            # this snapshot (taken by the lock's statement) sees it: but for one that
            # committed within that very statement, whose row the upsert below then refuses.
            last = await conn.fetchrow(*q.ledger_check_last(period_seconds=period_seconds))
            if last is not None and not last["due"]:
                return False
            await conn.fetchval(*q.ledger_check_statement_timeout(timeout_ms=period_seconds * 1000))
            result = await ledger.check(conn, q)
            await record_ledger_check(conn, q, metrics, result)
    except asyncpg.SerializationError:
        return False  # another process's result was recorded meanwhile: it stands
    return True


async def check_ledger_forever(s: Sources) -> None:
    """Run by the app's lifespan (when ``ledger_check_seconds`` > 0) until cancelled: try the
    check every tenth of a period (at least every :data:`COUNT_SECONDS`), so a process takes
    over soon after the one that ran it last goes away. A failed try is logged and the task
    lives."""
    pause = max(COUNT_SECONDS, s.ledger_check_seconds / 10)
    while True:
        try:
            async with s.pool.acquire() as conn:
                await check_ledger_if_due(conn, s.queries, s.metrics, s.ledger_check_seconds)
        except Exception as exc:  # noqa: BLE001 - the next try may succeed
            log.warning("the periodic ledger check failed this time: %s", type(exc).__name__)
        await asyncio.sleep(pause)


async def refresh(s: Sources) -> None:
    """One round of the counted gauges; Postgres's counts keep their last values while it is
    down (``wallet_dependency_up`` says so)."""
    if await check_dependencies(s):
        await count(s)


async def refresh_forever(
    s: Sources, live_seconds: float = LIVE_SECONDS, count_seconds: float = COUNT_SECONDS
) -> None:
    """Run by the app's lifespan until cancelled; a failed round is logged and the task lives."""
    loop = asyncio.get_running_loop()
    next_count = loop.time()
    while True:
        try:
            s.metrics.refresh_live()
        except Exception as exc:  # noqa: BLE001 - the live gauges keep their last values
            log.warning("refreshing the live gauges failed this time: %s", type(exc).__name__)
        if loop.time() >= next_count:
            next_count = loop.time() + count_seconds
            try:
                await refresh(s)
            except Exception as exc:  # noqa: BLE001 - the gauges keep their last values
                log.warning("refreshing the gauges failed this time: %s", type(exc).__name__)
        await asyncio.sleep(live_seconds)
