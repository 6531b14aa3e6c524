"""The ledger's own guards: append-only rows, balances never negative, and a check that finds
what broke."""

from __future__ import annotations

import asyncpg
import pytest

from app import db
from app.ledger import service as ledger
from tests.fixtures.app import Table


async def test_postings_and_entries_are_append_only(table: Table, pool: asyncpg.Pool) -> None:
    await table.bet(100)
    for statement in (
        "UPDATE entries SET amount = amount WHERE false",
        "DELETE FROM ledger_transactions WHERE false",
        "TRUNCATE entries",
    ):
        with pytest.raises(asyncpg.RestrictViolationError):
            await pool.execute(statement)


async def test_player_balance_cannot_go_negative(table: Table, pool: asyncpg.Pool) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            "UPDATE accounts SET balance = -1 WHERE kind = 'player' AND owner = $1", table.player_id
        )


async def test_every_posting_is_balanced(table: Table, pool: asyncpg.Pool) -> None:
    await table.bet(100, round_id="b")
    await table.result(250, round_id="b")
    rows = await pool.fetch(
        """SELECT t.kind, sum(e.amount) AS total, count(*) AS entries
             FROM ledger_transactions t JOIN entries e ON e.transaction_id = t.id
            WHERE t.player_id = $1 GROUP BY t.id, t.kind""",
        table.player_id,
    )
    assert {r["kind"] for r in rows} == {"adjustment", "bet", "result"}
    assert all(r["total"] == 0 and r["entries"] == 2 for r in rows)


async def test_check_reports_a_tampered_balance(table: Table, pool: asyncpg.Pool) -> None:
    queries = db.Queries.load()
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute(
                "UPDATE accounts SET balance = balance + 1 WHERE kind = 'player' AND owner = $1",
                table.player_id,
            )
            report = await ledger.check(conn, queries)
        finally:
            await tx.rollback()
    assert report["ok"] is False
    (mismatch,) = [
        m
        for m in report["problems"]["player_balance_mismatches"]
        if m["player_id"] == table.player_id
    ]
    assert mismatch["balance"] == mismatch["entries_total"] + 1


async def test_house_accounts_keep_no_balance(table: Table, pool: asyncpg.Pool) -> None:
    await table.bet(100)
    rows = await pool.fetch(
        "SELECT kind, balance FROM accounts WHERE owner IN ($1, 'adjustments')", table.provider
    )
    assert rows and all(r["balance"] is None for r in rows)
