"""Kinds of credit in what the back office reads (issue 14): the daily report's wins by kind,
promotions and free-round bets apart; the player's transactions and statement showing them."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from app.operator.postings import RESULT_KINDS
from tests.fixtures.app import Table


async def post(
    pool: asyncpg.Pool,
    table: Table,
    kind: str,
    amount: int,
    delta: int,
    *,
    round_id: str | None = "k1",
    ref: str | None = None,
    result_kind: str | None = None,
    free_round: int | None = None,
    source: str | None = None,
) -> str:
    """A posting as the money functions write it (under the player's row lock, the balance
    moved, two balanced entries when it moves), with the columns of the kinds set; its
    transaction id."""
    txn = f"{kind}-{secrets.token_hex(6)}"
    async with pool.acquire() as conn, conn.transaction():
        acc = await conn.fetchrow("SELECT * FROM wallet_lock_player($1)", table.player_id)
        await conn.execute(
            "UPDATE accounts SET balance = balance + $2 WHERE id = $1", acc["account_id"], delta
        )
        tx = await conn.fetchval(
            "INSERT INTO ledger_transactions (source, external_id, kind, player_id, currency,"
            " amount, delta, balance_after, round_id, game_id, ref_external_id, result_kind,"
            " free_round_id, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, clock_timestamp())"
            " RETURNING id",
            source or table.provider,
            txn,
            kind,
            table.player_id,
            acc["currency"],
            amount,
            delta,
            acc["balance"] + delta,
            round_id,
            None if round_id is None else "slot-1",
            ref,
            result_kind,
            free_round,
        )
        if delta:
            counter = ("house", "psp-test") if source else ("provider", table.provider)
            await conn.execute(
                "INSERT INTO entries (transaction_id, account_id, amount) VALUES"
                " ($1, $2, $3), ($1, wallet_clearing_account($4, $5, $6), -$3)",
                tx,
                acc["account_id"],
                delta,
                *counter,
                acc["currency"],
            )
    return txn


async def promo(table: Table, amount: int, promo_id: str) -> str:
    txn = "pw-" + secrets.token_hex(6)
    answer = await table.client.send(
        "promo_win",
        player_id=table.player_id,
        transaction_id=txn,
        promo_id=promo_id,
        amount=amount,
        currency="EUR",
    )
    assert answer["code"] == "R0", answer
    return txn


async def free_round_bet(table: Table, round_id: str) -> str:
    """A grant of free rounds through the operator API, and a bet that uses one; the grant."""
    granted = await table.operator.call(
        "POST",
        f"/v1/players/{table.player_id}/free-rounds",
        {
            "provider": table.provider,
            "game_id": "slot-1",
            "rounds": 3,
            "bet_value": 20,
            "expires_at": (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        headers={"idempotency-key": "fr-" + secrets.token_hex(6)},
        expect=201,
    )
    grant: str = granted["free_round_id"]
    answer = await table.bet(0, round_id=round_id, free_round_id=grant)
    assert answer["code"] == "R0", answer
    return grant


async def ok(answer: Any) -> dict[str, Any]:
    """An answer of the webhook that must be R0."""
    found: dict[str, Any] = await answer
    assert found["code"] == "R0", found
    return found


async def report_row(table: Table) -> dict[str, Any]:
    today = datetime.now(UTC).date().isoformat()
    report = await table.operator.call("GET", f"/v1/reports/daily?date={today}", expect=200)
    assert not [r for r in report["rows"] if r["provider"].startswith("#")], "payments apart"
    (row,) = [r for r in report["rows"] if r["provider"] == table.provider]
    return row  # type: ignore[no-any-return]


async def test_result_kinds_are_those_the_ledger_allows(pool: asyncpg.Pool) -> None:
    check = await pool.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conname = 'ledger_transactions_result_kind'"
    )
    assert set(re.findall(r"'([a-z_]+)'", check)) == set(RESULT_KINDS)


async def test_daily_report_splits_wins_by_kind(table: Table, pool: asyncpg.Pool) -> None:
    await ok(table.bet(1_000, round_id="a"))
    await ok(table.result(300, round_id="a", round_closed=False))  # kind absent: a win
    await ok(table.result(5_000, round_id="a", kind="jackpot", round_closed=False))
    bonus = "res-" + secrets.token_hex(6)
    await ok(table.result(200, round_id="a", kind="bonus", txn=bonus))
    # A correction of the bonus, down by 50: it counts with its result's kind.
    await ok(table.result_change(bonus, 150, round_id="a"))
    await free_round_bet(table, "f")
    await ok(table.result(40, round_id="f"))  # a free round's win: kind free_round
    # Postings of before the kinds (result_kind NULL) are wins, a correction's too.
    old = await post(pool, table, "result", 10, 10, round_id="d")
    await post(pool, table, "result_change", 15, 5, round_id="d", ref=old)
    await promo(table, 900, "tournament-1")
    await promo(table, 100, "drop-2")
    # A deposit moves the player's balance but is no game's: not in the report.
    await post(pool, table, "deposit", 700, 700, round_id=None, source="#payment")
    row = await report_row(table)
    assert row == {
        "provider": table.provider,
        "currency": "EUR",
        "bet_count": 1,
        "bet_sum": 1_000,
        "free_round_bet_count": 1,
        "result_count": 5,
        "win_sum": 300 + 5_000 + 150 + 40 + 15,
        "wins": {
            "win": {"count": 2, "sum": 315},
            "jackpot": {"count": 1, "sum": 5_000},
            "bonus": {"count": 1, "sum": 150},
            "free_round": {"count": 1, "sum": 40},
        },
        "cancel_count": 0,
        "cancel_sum": 0,
        "promo_count": 2,
        "promo_sum": 1_000,
        "ggr": 1_000 - 5_505,
        "ggr_after_promos": 1_000 - 5_505 - 1_000,
    }
    assert sum(w["sum"] for w in row["wins"].values()) == row["win_sum"]
    assert sum(w["count"] for w in row["wins"].values()) == row["result_count"]


async def test_daily_report_without_kinds_has_every_kind_at_zero(table: Table) -> None:
    await table.bet(500, round_id="z")
    row = await report_row(table)
    assert row["wins"] == dict.fromkeys(RESULT_KINDS, {"count": 0, "sum": 0})
    assert (row["promo_count"], row["promo_sum"], row["free_round_bet_count"]) == (0, 0, 0)
    assert row["ggr"] == row["ggr_after_promos"] == 500


async def test_a_free_round_bet_cancelled_is_no_refund(table: Table) -> None:
    """A free-round bet staked nothing: its cancel moves nothing and is not counted a refund."""
    await free_round_bet(table, "fc")
    (bet,) = (
        await table.operator.call("GET", f"/v1/players/{table.player_id}/transactions?limit=1")
    )["data"]
    await ok(table.cancel(bet["transaction_id"], round_id="fc"))
    row = await report_row(table)
    assert (row["bet_count"], row["free_round_bet_count"]) == (0, 1)
    assert (row["cancel_count"], row["cancel_sum"], row["ggr"]) == (0, 0, 0)


async def test_transactions_show_the_kind_of_credit(table: Table, pool: asyncpg.Pool) -> None:
    await post(pool, table, "result", 20, 20, round_id="old")  # before the kinds: a win
    await ok(table.bet(100, round_id="j"))
    jackpot = "res-" + secrets.token_hex(6)
    await ok(table.result(800, round_id="j", kind="jackpot", txn=jackpot))
    await ok(table.result_change(jackpot, 700, round_id="j"))
    grant = await free_round_bet(table, "fr")
    await promo(table, 50, "cash-drop-3")
    page = await table.operator.call(
        "GET", f"/v1/players/{table.player_id}/transactions", expect=200
    )
    shown = [
        (t["kind"], t["result_kind"], t["free_round_id"], t["promo_id"], t["ref_transaction_id"])
        for t in page["data"]
    ]
    assert shown == [
        ("promo_win", None, None, "cash-drop-3", None),
        ("bet", None, grant, None, None),
        ("result_change", "jackpot", None, None, jackpot),
        ("result", "jackpot", None, None, None),
        ("bet", None, None, None, None),
        ("result", "win", None, None, None),
        ("adjustment", None, None, None, None),
    ]
    promo_row, free_bet = page["data"][0], page["data"][1]
    assert (promo_row["amount"], promo_row["delta"], promo_row["round_id"]) == (50, 50, None)
    assert (free_bet["amount"], free_bet["delta"]) == (0, 0)


async def test_statement_splits_results_by_kind(table: Table, pool: asyncpg.Pool) -> None:
    start = datetime.now(UTC) - timedelta(milliseconds=1)
    await ok(table.bet(300, round_id="s"))
    await ok(table.result(100, round_id="s", round_closed=False))
    await post(pool, table, "result", 5, 5, round_id="s")  # NULL kind: a win
    jackpot = "res-" + secrets.token_hex(6)
    await ok(table.result(2_000, round_id="s", kind="jackpot", txn=jackpot))
    await ok(table.result_change(jackpot, 1_500, round_id="s"))
    await free_round_bet(table, "u")
    await ok(table.result(60, round_id="u"))
    await promo(table, 250, "campaign-9")
    statement = await table.operator.call(
        "GET",
        f"/v1/players/{table.player_id}/statement?from={start.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}",
        expect=200,
    )
    assert statement["totals"] == {
        "bet": {"count": 2, "total": -300},
        "result": {"count": 4, "total": 2_165},
        "result_change": {"count": 1, "total": -500},
        "promo_win": {"count": 1, "total": 250},
    }
    assert statement["results_by_kind"] == {
        "win": {"count": 2, "total": 105},
        "jackpot": {"count": 2, "total": 1_500},
        "free_round": {"count": 1, "total": 60},
    }
    assert statement["free_round_bets"] == 1
    moved = sum(t["total"] for t in statement["totals"].values())
    assert statement["opening_balance"] + moved == statement["closing_balance"] == 10_000 + 1_615
