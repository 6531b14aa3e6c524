"""Group commit of seamless postings (app/seamless/batch.py, sql/007): concurrent events share a
transaction, and no event's trouble becomes another's."""

from __future__ import annotations

import asyncio
import secrets

import asyncpg
import pytest

from app import db
from app.seamless.batch import GroupCommit, Posting, _caused_by_events
from app.seamless.outcome import Reason
from app.secrets import token_hash
from tests.fixtures.app import Operator, Table, TableFactory
from tests.fixtures.servers import Services

QUERIES = db.Queries.load()


def bet(table: Table, amount: int = 100, *, txn: str | None = None) -> Posting:
    return Posting(
        "bet",
        table.provider,
        table.player_id,
        txn or "gc-" + secrets.token_hex(6),
        None,
        "r-" + secrets.token_hex(4),
        "slot-1",
        amount,
        "EUR",
        token_hash(table.token),
        None,
        "q-" + secrets.token_hex(6),
        secrets.token_bytes(16),
    )


def balance(table: Table) -> Posting:
    return Posting(
        "balance", table.provider, table.player_id, *([None] * 8), "q-" + secrets.token_hex(6),
        secrets.token_bytes(16),
    )  # fmt: skip


async def hold_rows(conn: asyncpg.Connection, *players: str) -> asyncpg.transaction.Transaction:
    """Lock the players' account rows in an open transaction, as a long operator change would."""
    tx = conn.transaction()
    await tx.start()
    await conn.execute(
        "SELECT 1 FROM accounts a JOIN players p ON p.account_id = a.id"
        " WHERE p.player_id = ANY($1) FOR UPDATE OF a",
        list(players),
    )
    return tx


async def test_events_arriving_together_share_one_batch(
    pool: asyncpg.Pool, table_factory: TableFactory
) -> None:
    tables = [await table_factory(balance=1_000) for _ in range(5)]
    sizes: list[int] = []
    group = GroupCommit(pool, QUERIES.seamless_batch, max_batch=8, observe=sizes.append)
    postings = [bet(tables[i % 5], 10 + i) for i in range(20)]
    rows = await asyncio.gather(*(group.post(p) for p in postings))
    assert sizes == [8, 8, 4]  # everything queued before the first sender ran, cut at max_batch
    # Each event got its own answer, in its own order, whatever the sort by player did.
    for posting, row in zip(postings, rows, strict=True):
        assert (Reason.named(row["reason"]).code, row["reason"]) == ("R0", "ok")
        mine = [p for p in postings if p.player_id == posting.player_id]
        spent = sum(p.amount or 0 for p in mine[: mine.index(posting) + 1])
        assert row["balance"] == 1_000 - spent
    for table in tables:
        assert await table.balance() == 1_000 - sum(
            p.amount or 0 for p in postings if p.player_id == table.player_id
        )


async def test_a_lone_event_is_not_held_back(
    pool: asyncpg.Pool, table_factory: TableFactory
) -> None:
    table = await table_factory()
    sizes: list[int] = []
    group = GroupCommit(pool, QUERIES.seamless_batch, observe=sizes.append)
    for _ in range(3):
        row = await group.post(balance(table))
        assert row["balance"] == 10_000
    assert sizes == [1, 1, 1]


async def test_a_row_held_elsewhere_holds_up_only_its_own_player(
    pool: asyncpg.Pool, table_factory: TableFactory, services: object
) -> None:
    """The batch gives up on the held row after its lock timeout and posts event by event: the
    other players are answered at once, the held one when its row is free."""
    held, free = await table_factory(), await table_factory()
    sizes: list[int] = []
    group = GroupCommit(pool, QUERIES.seamless_batch, observe=sizes.append)
    async with pool.acquire() as holder:
        tx = await hold_rows(holder, held.player_id)
        try:
            waiting = asyncio.create_task(group.post(bet(held, 300)))
            answered = await asyncio.wait_for(group.post(bet(free, 200)), 30)
            assert (Reason.named(answered["reason"]).code, answered["balance"]) == ("R0", 9_800)
            assert not waiting.done()
        finally:
            await tx.rollback()
    row = await asyncio.wait_for(waiting, 30)
    assert (Reason.named(row["reason"]).code, row["balance"]) == ("R0", 9_700)
    assert sizes == [2]  # one batch was tried; its events were then posted alone


async def test_a_unique_violation_in_a_batch_is_settled_event_by_event(
    pool: asyncpg.Pool, table_factory: TableFactory, operator: Operator
) -> None:
    """Another player's uncommitted bet holds transaction id X: the batch holding a bet X of
    this player cannot commit as a whole. The event of a third player goes through; the bet X
    gets the answer that a lone posting gets, idempotency_conflict once X is committed."""
    a = await table_factory()
    b = await table_factory()
    c = await table_factory()
    b.provider = c.provider = a.provider
    b.token = await operator.session(b.player_id, a.provider)
    c.token = await operator.session(c.player_id, a.provider)
    x = "x-" + secrets.token_hex(6)
    # The provider's clearing account exists before the open transaction below (a first posting
    # creates it, and would hold every other player's first posting until it commits).
    assert (await a.bet(1, round_id="warm-up"))["code"] == "R0"
    group = GroupCommit(pool, QUERIES.seamless_batch)
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        first = await conn.fetchrow(
            "SELECT * FROM seamless_batch($1, 0, 600)", [bet(a, 500, txn=x)]
        )
        assert Reason.named(first["reason"]).code == "R0"
        contested = asyncio.create_task(group.post(bet(b, 500, txn=x)))
        other = await asyncio.wait_for(group.post(bet(c, 100)), 30)
        assert (Reason.named(other["reason"]).code, other["balance"]) == ("R0", 9_900)
        await tx.commit()
    row = await asyncio.wait_for(contested, 30)
    assert (Reason.named(row["reason"]).code, row["reason"]) == ("R3", "idempotency_conflict")
    assert await b.balance() == 10_000
    assert await a.balance() == 10_000 - 1 - 500


async def test_a_failing_connection_fails_every_event_of_the_batch(
    services: object, table_factory: TableFactory
) -> None:
    table = await table_factory()
    broken = await db.create_pool("postgresql://postgres@127.0.0.1:1/none", min_size=0, max_size=1)
    group = GroupCommit(broken, QUERIES.seamless_batch, acquire_timeout=5)
    results = await asyncio.gather(
        *(group.post(balance(table)) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, OSError) for r in results), results
    await broken.close()


async def test_cancelled_requests_are_not_posted(
    pool: asyncpg.Pool, table_factory: TableFactory
) -> None:
    table = await table_factory()
    sizes: list[int] = []
    group = GroupCommit(pool, QUERIES.seamless_batch, max_inflight=1, observe=sizes.append)
    first = asyncio.create_task(group.post(bet(table, 100)))
    gone = asyncio.create_task(group.post(bet(table, 1_000)))
    await asyncio.sleep(0)  # both are queued
    gone.cancel()
    assert (await first)["balance"] == 9_900
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert sizes == [1]
    assert await table.balance() == 9_900


def test_settings_refuse_more_batches_than_connections() -> None:
    from app.config import ConfigError, Settings

    env = {"WALLET_DB_POOL_MAX": "2", "WALLET_DB_BATCHES_IN_FLIGHT": "3"}
    with pytest.raises(ConfigError, match="BATCHES_IN_FLIGHT"):
        Settings.from_env(env)
    with pytest.raises(ValueError):
        GroupCommit(None, "", max_batch=0)  # type: ignore[arg-type]


async def test_a_held_players_next_events_skip_batches_for_a_while(
    pool: asyncpg.Pool, table_factory: TableFactory
) -> None:
    """Once a player's row was found held, their events go alone for HELD_SECONDS, so each one
    does not cost a whole batch its lock timeout again."""
    held, free = await table_factory(), await table_factory()
    sizes: list[int] = []
    group = GroupCommit(pool, QUERIES.seamless_batch, observe=sizes.append)
    async with pool.acquire() as holder:
        tx = await hold_rows(holder, held.player_id)
        try:
            first = asyncio.create_task(group.post(bet(held, 100)))
            assert Reason.named((await group.post(bet(free, 100)))["reason"]).code == "R0"
            await asyncio.sleep(0.3)  # the held bet is waiting alone by now, marked held
            second = asyncio.create_task(group.post(bet(held, 100)))
            answered = await asyncio.wait_for(group.post(bet(free, 100)), 5)
            assert Reason.named(answered["reason"]).code == "R0"
            assert not first.done() and not second.done()
        finally:
            await tx.rollback()
    assert sorted(r["balance"] for r in await asyncio.gather(first, second)) == [9_800, 9_900]
    # The first batch held both players; the second went out with the free player alone.
    assert sizes == [2, 1]


async def test_events_that_waited_too_long_for_a_batch_are_refused(
    pool: asyncpg.Pool, table_factory: TableFactory
) -> None:
    held, late = await table_factory(), await table_factory()
    group = GroupCommit(pool, QUERIES.seamless_batch, acquire_timeout=0.03)
    async with pool.acquire() as holder:
        tx = await hold_rows(holder, held.player_id)
        try:
            first = asyncio.create_task(group.post(bet(held, 100)))
            await asyncio.sleep(0.01)  # the sender is in the batch, waiting on the held row
            with pytest.raises(TimeoutError):
                await group.post(bet(late, 100))
        finally:
            await tx.rollback()
    assert Reason.named((await first)["reason"]).code == "R0"
    assert await late.balance() == 10_000


async def test_a_batch_over_the_statement_timeout_is_posted_event_by_event(
    services: Services, table_factory: TableFactory, pool: asyncpg.Pool
) -> None:
    """The statement timeout is one event's allowance: a batch that reaches it is posted again
    event by event, and only the event that really takes that long fails."""
    held, free = await table_factory(), await table_factory()
    strict = await db.create_pool(services.database_url, max_size=4, statement_timeout_ms=50)
    group = GroupCommit(strict, QUERIES.seamless_batch)
    try:
        async with pool.acquire() as holder:
            tx = await hold_rows(holder, held.player_id)
            try:
                results = await asyncio.gather(
                    group.post(bet(held, 100)), group.post(bet(free, 100)), return_exceptions=True
                )
            finally:
                await tx.rollback()
    finally:
        await strict.close()
    assert isinstance(results[0], asyncpg.QueryCanceledError)
    assert (
        isinstance(results[1], asyncpg.Record) and Reason.named(results[1]["reason"]).code == "R0"
    )


def test_which_failures_are_settled_event_by_event() -> None:
    def error(sqlstate: str) -> asyncpg.PostgresError:
        exc = asyncpg.PostgresError("x")
        exc.sqlstate = sqlstate  # type: ignore[attr-defined]
        return exc

    for sqlstate in ("23505", "40P01", "55P03", "P0001", "22003"):
        assert _caused_by_events(error(sqlstate), 1)
    assert _caused_by_events(error("57014"), 2) and not _caused_by_events(error("57014"), 1)
    for sqlstate in ("08006", "57P01", "53300", "XX000"):
        assert not _caused_by_events(error(sqlstate), 2)
    assert not _caused_by_events(OSError("connection refused"), 2)
