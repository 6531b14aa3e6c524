"""Races and faults: money is exact whatever arrives at once or breaks half-way."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import replace

import asyncpg
import httpx
import redis.asyncio as redis_asyncio

from app.client import ProviderClient, seal_event
from app.config import Settings
from tests.fixtures.app import Table, TableFactory, start_app
from tests.fixtures.servers import Services


async def postings(pool: asyncpg.Pool, provider: str, external_id: str) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM ledger_transactions WHERE source = $1 AND external_id = $2",
        provider,
        external_id,
    )
    return count


async def test_50_concurrent_bets_beyond_funds(table_factory: TableFactory) -> None:
    table = await table_factory(balance=1_000)
    answers = await asyncio.gather(*(table.bet(30, round_id=f"r{i}") for i in range(50)))
    codes = Counter(a["code"] for a in answers)
    assert codes == {"R0": 33, "R4": 17}
    assert all(a["balance"] >= 0 for a in answers)
    assert await table.balance() == 10
    # Each success reports the balance right after its own posting: all distinct, none below 10.
    balances = sorted(a["balance"] for a in answers if a["code"] == "R0")
    assert balances == list(range(10, 1_000, 30))


async def test_30_identical_deliveries_post_once(table: Table, pool: asyncpg.Pool) -> None:
    event = table.client.event(
        "bet",
        player_id=table.player_id,
        session_token=table.token,
        transaction_id="same-1",
        round_id="r",
        game_id="g",
        amount=100,
        currency="EUR",
    )
    body = seal_event(table.client.key, table.provider, event)
    answers = await asyncio.gather(*(table.client.post(body) for _ in range(30)))
    for answer in answers:
        assert answer["code"] == "R0" or answer["reason"] == "request_in_progress", answer
    ids = {a["transaction_id"] for a in answers if a["code"] == "R0"}
    assert len(ids) == 1
    assert await postings(pool, table.provider, "same-1") == 1
    assert await table.balance() == 9_900


async def test_30_deliveries_of_one_transaction_with_new_request_ids(
    table: Table, pool: asyncpg.Pool
) -> None:
    answers = await asyncio.gather(*(table.bet(100, txn="same-2") for _ in range(30)))
    assert all(a["code"] == "R0" for a in answers)
    assert sum(1 for a in answers if not a.get("duplicate")) == 1
    assert len({a["transaction_id"] for a in answers}) == 1
    assert await postings(pool, table.provider, "same-2") == 1
    assert await table.balance() == 9_900


async def test_cancel_racing_its_bet(table: Table) -> None:
    async def race(i: int) -> tuple[dict[str, object], dict[str, object]]:
        txn = f"race-{i}"
        bet, cancel = await asyncio.gather(
            table.bet(100, txn=txn, round_id=f"r{i}"), table.cancel(txn, round_id=f"r{i}")
        )
        return bet, cancel

    outcomes = await asyncio.gather(*(race(i) for i in range(20)))
    for bet, cancel in outcomes:
        assert cancel["code"] == "R0"
        # Either the bet came first and was refunded, or the cancel came first and the bet was
        # refused; never a bet that stays debited.
        assert bet["code"] == "R0" or bet["reason"] == "transaction_cancelled", bet
    assert await table.balance() == 10_000


async def test_database_error_mid_posting_leaves_nothing(table: Table, pool: asyncpg.Pool) -> None:
    # A trigger that fails after the balance update and the posting row were written.
    await pool.execute("""
        CREATE FUNCTION test_boom() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM ledger_transactions
                        WHERE id = NEW.transaction_id AND external_id LIKE 'boom-%') THEN
                RAISE EXCEPTION 'injected failure';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER test_boom AFTER INSERT ON entries
            FOR EACH ROW EXECUTE FUNCTION test_boom();
    """)
    event = table.client.event(
        "bet",
        player_id=table.player_id,
        session_token=table.token,
        transaction_id="boom-1",
        round_id="r",
        game_id="g",
        amount=700,
        currency="EUR",
    )
    try:
        answer = await table.client.send_event(event)
    finally:
        await pool.execute("DROP TRIGGER test_boom ON entries; DROP FUNCTION test_boom();")
    assert (answer["code"], answer["reason"]) == ("R1", "internal_error")
    assert await postings(pool, table.provider, "boom-1") == 0
    rounds = await pool.fetchval(
        "SELECT count(*) FROM rounds WHERE player_id = $1", table.player_id
    )
    assert rounds == 0
    assert await table.balance() == 10_000
    # R1 internal_error is retryable: the same delivery is processed again, once.
    retried = await table.client.send_event(event)
    assert retried["code"] == "R0" and retried["balance"] == 9_300
    assert await postings(pool, table.provider, "boom-1") == 1


async def test_money_stays_exact_without_the_redis_lock(
    settings: Settings, table_factory: TableFactory
) -> None:
    """Lock wait 0: concurrent bets go on without the lock, the row lock keeps them exact."""
    table = await table_factory(balance=1_000)
    async with AsyncExitStack() as stack:
        app = await start_app(replace(settings, lock_wait_ms=0), stack)
        http = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://w")
        )
        table.client = ProviderClient("", table.provider, table.client.key, http=http)
        answers = await asyncio.gather(*(table.bet(30, round_id=f"r{i}") for i in range(50)))
    assert Counter(a["code"] for a in answers) == {"R0": 33, "R4": 17}
    assert await table.balance() == 10


async def test_redis_unreachable_fails_closed(
    settings: Settings, table: Table, pool: asyncpg.Pool
) -> None:
    down = replace(settings, redis_url="redis://127.0.0.1:1/0", redis_timeout_ms=200)
    async with AsyncExitStack() as stack:
        app = await start_app_without_redis(down, stack)
        http = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://w")
        )
        client = ProviderClient("", table.provider, table.client.key, http=http)
        answer = await client.send(
            "bet",
            player_id=table.player_id,
            session_token=table.token,
            transaction_id="no-redis",
            round_id="r",
            game_id="g",
            amount=100,
            currency="EUR",
        )
        ready = await http.get("/readyz")
    assert (answer["code"], answer["reason"]) == ("R1", "internal_error")
    assert await postings(pool, table.provider, "no-redis") == 0
    assert ready.status_code == 503 and ready.json()["checks"]["redis"].startswith("unavailable")
    # Once Redis is back (the session's app), the provider's retry goes through.
    assert (await table.bet(100, txn="no-redis", round_id="r", game_id="g"))["code"] == "R0"


async def start_app_without_redis(settings: Settings, stack: AsyncExitStack) -> object:
    """The app loads its Lua script at start-up; let that fail soft for this test only."""
    from app.locks import PlayerLocks

    original = PlayerLocks.load_scripts

    async def skip(self: PlayerLocks) -> None:
        self._release_sha = "0" * 40

    PlayerLocks.load_scripts = skip  # type: ignore[method-assign]
    try:
        return await start_app(settings, stack)
    finally:
        PlayerLocks.load_scripts = original  # type: ignore[method-assign]


async def test_different_players_same_transaction_id_at_once(
    table_factory: TableFactory, pool: asyncpg.Pool
) -> None:
    a = await table_factory()
    b = await table_factory()
    b.client = ProviderClient("", a.provider, a.client.key, http=a.client.http)
    b.token = await a.operator.session(b.player_id, a.provider)
    txn = "shared-" + secrets.token_hex(4)
    answers = await asyncio.gather(a.bet(100, txn=txn), b.bet(100, txn=txn))
    codes = sorted((x["code"], x["reason"]) for x in answers)
    assert codes == [("R0", "ok"), ("R3", "idempotency_conflict")]
    assert await postings(pool, a.provider, txn) == 1
    assert await a.balance() + await b.balance() == 19_900


async def test_scripts_forgotten_by_redis_are_loaded_again(
    table: Table, services: Services
) -> None:
    """A Redis restart forgets loaded scripts; admission and release load them again, and the
    event is processed once, with no R1 and no lock left behind."""
    direct = redis_asyncio.Redis.from_url(services.redis_url)
    try:
        await direct.script_flush()
        first = await table.bet(100, txn="after-flush")
        assert first["code"] == "R0" and first["balance"] == 9_900
        await direct.script_flush()
        again = await table.bet(100, txn="after-flush")
        assert again["code"] == "R0" and again.get("duplicate") is True
        assert await direct.exists(f"wallet:{{p:{table.player_id}}}:lock") == 0
    finally:
        await direct.aclose()
    assert await table.balance() == 9_900
