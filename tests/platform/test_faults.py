"""Faults under load: Postgres backends terminated, Postgres restarted, Redis killed, Redis slow.

Each test runs its own Postgres and Redis (``loadtests.faults.FaultStack``) and its own app on
them, so it can break them without disturbing the session's servers. Thirty players play rounds
at once while the fault happens; the simulated provider retries every retryable R1 until a final
answer. In every case:

- every answer is R0 or a retryable R1 (``internal_error``, ``request_in_progress``);
- the retries converge: each player's balance is what the provider's model says, each
  transaction is posted exactly once under the posting id the provider was told, and the ledger
  check passes;
- the wallet recovers without a restart: ``/readyz`` is 200 again, a new round for every player
  goes through without a single ``internal_error``, and the call history buffered during the
  fault is written in full.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from app import db
from app.client import ProviderClient, new_id, seal_event
from app.config import Settings
from loadtests.faults import (
    FaultStack,
    Seeded,
    Simulator,
    failures_in_a_new_round,
    seed_players,
    verify,
    wait_ready,
)
from tests.fixtures.app import Operator, start_app

pytestmark = pytest.mark.slow

PLAYERS = 30
BALANCE = 1_000_000
RETRYABLE_ANSWERS = {"R1 internal_error", "R1 request_in_progress"}


@dataclass
class Rig:
    stack: FaultStack
    http: httpx.AsyncClient
    seeded: Seeded
    sim: Simulator


@asynccontextmanager
async def rig(
    folder: Path, settings: Settings, *, proxy: bool = False, **overrides: Any
) -> AsyncIterator[Rig]:
    """Dedicated servers, seeded players, and the app running on them in this process."""
    stack = FaultStack(folder, proxy=proxy)
    try:
        await stack.start()
        seeded = await seed_players(stack.dsn, PLAYERS, BALANCE)
        own = replace(settings, database_url=stack.dsn, redis_url=stack.redis_url, **overrides)
        async with AsyncExitStack() as exits:
            app = await start_app(own, exits)
            http = await exits.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://wallet.test"
                )
            )
            client = ProviderClient("", seeded.provider, seeded.key, http=http)
            sim = Simulator(
                client, seeded, rng=random.Random(6), deadline=20, new_request_after=1.0
            )
            yield Rig(stack, http, seeded, sim)
    finally:
        await stack.close()


async def under_load(r: Rig, fault: Callable[[], Awaitable[None]]) -> None:
    """Rounds for every player at once, the fault once they are going, and load for a while
    after it; the load is stopped however this ends."""
    stop = asyncio.Event()
    load = asyncio.create_task(r.sim.run(stop, concurrency=PLAYERS))
    try:
        await progress(r, "before the fault")
        await fault()
        await asyncio.sleep(0.5)
        await progress(r, "after the fault")
        stop.set()
        await asyncio.wait_for(load, 30)
    finally:
        stop.set()
        load.cancel()
        await asyncio.gather(load, return_exceptions=True)


async def progress(r: Rig, when: str, timeout: float = 15) -> None:
    """Wait until another PLAYERS events got a final answer: the load is really going."""
    target = r.sim.stats.events + PLAYERS
    deadline = time.monotonic() + timeout
    while r.sim.stats.events < target:
        assert time.monotonic() < deadline, f"no load {when}: {r.sim.stats.summary()}"
        await asyncio.sleep(0.05)


async def assert_survived(r: Rig) -> None:
    """The checks every fault must pass; see the module docstring."""
    stats = r.sim.stats
    assert stats.answers["R1 internal_error"] > 0, f"the fault was never felt: {stats.answers}"
    assert set(stats.answers) <= {"R0", *RETRYABLE_ANSWERS}, stats.answers
    assert stats.problems == [], stats.problems
    assert stats.unresolved == 0

    await wait_ready(r.http, timeout=10)
    assert await failures_in_a_new_round(r.sim, r.seeded.players) == 0, "not recovered"
    assert stats.problems == [], stats.problems

    verdict = await verify(r.stack.dsn, r.seeded.provider, r.seeded.players)
    assert verdict.ok, verdict.summary()
    assert sum(len(p.posted) for p in r.seeded.players) > 0
    await assert_call_history_complete(r)


async def assert_call_history_complete(r: Rig) -> None:
    """Every answer given is in seamless_calls: rows kept while Postgres was away got written.

    At least once, not exactly once: a COPY that committed just before its connection was
    terminated looks failed to the writer, which writes that batch again.
    """
    answered = sum(r.sim.stats.answers.values())
    deadline = time.monotonic() + 5
    conn = await db.connect(r.stack.dsn)
    try:
        while True:
            written = await conn.fetchval(
                "SELECT count(*) FROM seamless_calls WHERE provider = $1", r.seeded.provider
            )
            if written >= answered or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    assert written >= answered


async def test_backends_terminated_mid_transaction(folder: Path, settings: Settings) -> None:
    """With no key cache, every request also reads the provider's keys, so terminated
    connections hit that read too: the cached keys must keep answers sealed."""
    async with rig(folder, settings, key_cache_seconds=0) as r:

        async def terminate() -> None:
            assert await r.stack.terminate_backends_for(1.0) > 0

        await under_load(r, terminate)
        await assert_survived(r)


async def test_postgres_restarted_under_load(folder: Path, settings: Settings) -> None:
    async with rig(folder, settings) as r:
        await under_load(r, lambda: r.stack.restart_postgres(down=1.0))
        await assert_survived(r)


async def test_redis_killed_and_restarted_under_load(folder: Path, settings: Settings) -> None:
    async with rig(folder, settings) as r:
        await under_load(r, lambda: r.stack.restart_redis(down=1.0))
        await assert_survived(r)


async def test_slow_redis_under_load(folder: Path, settings: Settings) -> None:
    """Replies late first within the client's timeout (slow answers, no errors needed), then
    beyond it: commands take effect but the wallet stops waiting, the worst case for claims.

    A lock taken by a command whose reply came too late is nobody's until its TTL ends, and the
    player's events each wait WALLET_LOCK_WAIT_MS for it meanwhile; a 1 s TTL keeps that short.
    """
    async with rig(folder, settings, proxy=True, redis_timeout_ms=300, lock_ttl_ms=1000) as r:

        async def slow_then_slower() -> None:
            await r.stack.slow_redis_for(0.15, seconds=0.75)
            await r.stack.slow_redis_for(0.5, seconds=0.75)

        await under_load(r, slow_then_slower)
        await assert_survived(r)


async def test_replays_after_redis_restarted_empty_are_not_processed_again(
    folder: Path, settings: Settings
) -> None:
    """Issue 12, defect 2: a bet refused R4, the player funded, Redis restarted empty (it keeps
    nothing on disk), then the captured bytes replayed within the window: the replay was
    processed again, answered R0, and moved money. Every replay must get the first outcome
    (contract 1 [1.1]), the same event sealed again with a fresh timestamp too, and another
    event under a used request_id is a conflict."""
    async with rig(folder, settings) as r:
        operator = Operator(r.http)
        player = r.seeded.players[0]
        client = r.sim.client

        def bet(amount: int) -> dict[str, Any]:
            return client.event(
                "bet",
                player_id=player.player_id,
                session_token=player.token,
                transaction_id=new_id("b"),
                round_id=new_id("r"),
                game_id="slot-1",
                amount=amount,
                currency=r.seeded.currency,
            )

        refused = bet(BALANCE + 1)
        refused_body = seal_event(client.key, client.provider, refused)
        first = await client.post(refused_body)
        assert (first["code"], first["reason"]) == ("R4", "insufficient_funds")
        taken = bet(100)
        taken_body = seal_event(client.key, client.provider, taken)
        posted = await client.post(taken_body)
        assert posted["code"] == "R0"
        await operator.fund(player.player_id, BALANCE)
        funded = BALANCE - 100 + BALANCE

        await r.stack.restart_redis(down=0.2)
        await wait_ready(r.http, timeout=10)

        again = await client.post(refused_body)
        assert (again["code"], again["reason"]) == ("R4", "insufficient_funds"), again
        # The first delivery's answer, its balance included (not the balance of now): Redis
        # would have answered the same.
        assert again == first
        replayed_first = await client.post(taken_body)
        assert replayed_first == posted
        resealed = await client.send_event({**refused, "timestamp": int(time.time())})
        assert (resealed["code"], resealed["reason"]) == ("R4", "insufficient_funds")
        replayed = await client.post(taken_body)
        assert (replayed["code"], replayed["transaction_id"]) == ("R0", posted["transaction_id"])
        conflict = await client.send_event({**bet(100), "request_id": refused["request_id"]})
        assert (conflict["code"], conflict["reason"]) == ("R3", "idempotency_conflict")
        assert await operator.balance(player.player_id) == funded
        # Answered from the durable record, each replay is stored in Redis no more: Redis is
        # left as the restart left it, and the next replay is answered the same way.
        assert (await client.post(refused_body))["code"] == "R4"
