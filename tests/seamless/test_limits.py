"""Responsible-gaming limits of issue 12: their cost does not grow with a player's history, they
count exactly what a scan of the ledger would, setting them at once never fails, and a win past
the largest balance the wallet can hold is refused explicitly.

The oracle here is the definition of docs/operator.md ("Limits"), read straight off the ledger:
wagered is the bets placed in the window and not refunded, loss is wagered less what results and
corrections paid in the window; windows are UTC calendar days, weeks from Monday, and months.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from app import db
from app.operator.players import LIMIT_PERIODS
from app.seamless.batch import Posting
from app.seamless.outcome import Reason
from app.secrets import token_hash
from tests.fixtures.app import Table, TableFactory

LARGEST = 2**63 - 1
PLAY_KINDS = ("wager", "loss")
SIX = {kind: dict.fromkeys(LIMIT_PERIODS, 10**9) for kind in PLAY_KINDS}
SEED = db.Queries.load(Path(__file__).resolve().parents[2] / "loadtests" / "sql")

# What each limit has used, by a scan of the ledger: the definition the running totals must meet.
USED_BY_SCAN = """
SELECT l.kind, l.period, wallet_limit_in_force(l.amount, l.next_amount, l.next_from) AS amount,
       (SELECT coalesce(sum(b.amount), 0) FROM ledger_transactions b
         WHERE b.player_id = $1 AND b.kind = 'bet'
           AND b.created_at >= wallet_window_start(l.period)
           AND NOT EXISTS (SELECT 1 FROM ledger_transactions c
                            WHERE c.source = b.source AND c.kind = 'cancel'
                              AND c.ref_external_id = b.external_id)) AS wagered,
       (SELECT coalesce(sum(t.delta), 0) FROM ledger_transactions t
         WHERE t.player_id = $1 AND t.kind IN ('result', 'result_change')
           AND t.created_at >= wallet_window_start(l.period)) AS won
  FROM player_limits l
 WHERE l.player_id = $1 AND l.kind IN ('wager', 'loss')
"""

# A past posting as the wallet would have written it: the row, its two entries (none for a zero
# delta) and the balance moved, so the ledger check still holds. $7: how long ago.
POST_IN_THE_PAST = """
WITH acc AS (
    SELECT a.id, a.balance FROM players p JOIN accounts a ON a.id = p.account_id
     WHERE p.player_id = $2 FOR UPDATE OF a
), tx AS (
    INSERT INTO ledger_transactions (source, external_id, kind, player_id, currency, amount,
                                     delta, balance_after, round_id, ref_external_id, created_at)
    SELECT $1, $3, $4, $2, 'EUR', $5, $6, acc.balance + $6, $8, $9, now() - $7::interval
      FROM acc
    RETURNING id, delta
), moved AS (
    UPDATE accounts a SET balance = a.balance + $6 FROM acc WHERE a.id = acc.id
)
INSERT INTO entries (transaction_id, account_id, amount)
SELECT tx.id, e.account_id, e.amount
  FROM tx CROSS JOIN acc
 CROSS JOIN LATERAL (VALUES (acc.id, tx.delta),
                            (wallet_clearing_account('provider', $1, 'EUR'), -tx.delta))
       AS e (account_id, amount)
 WHERE tx.delta <> 0
"""


async def put_limits(
    table: Table, limits: Mapping[str, Mapping[str, int | None]]
) -> dict[str, Any]:
    return await table.operator.call(  # type: ignore[no-any-return]
        "PUT", f"/v1/players/{table.player_id}/limits", limits, expect=200
    )


async def room_by_scan(pool: asyncpg.Pool, player_id: str) -> int:
    """The largest bet the ledger scan allows (every posting of the test is in the past)."""
    rooms = [
        r["amount"] - max(r["wagered"] - (r["won"] if r["kind"] == "loss" else 0), 0)
        for r in await pool.fetch(USED_BY_SCAN, player_id)
        if r["amount"] is not None
    ]
    assert rooms, "the player has no wager or loss limit in force"
    return int(min(rooms))


async def assert_room_is(table: Table, pool: asyncpg.Pool, expected: int | None = None) -> int:
    """A bet one above the scan's room is refused and a bet of exactly the room is taken (then
    refunded, so the room stays as it was); the room."""
    room = await room_by_scan(pool, table.player_id)
    if expected is not None:
        assert room == expected
    over = await table.bet(room + 1, round_id="probe-over")
    assert (over["code"], over["reason"]) == ("R1", "limit_exceeded"), (room, over)
    if room > 0:
        txn = "probe-" + secrets.token_hex(4)
        assert (await table.bet(room, round_id="probe-" + txn, txn=txn))["code"] == "R0", room
        assert (await table.cancel(txn, round_id="probe-" + txn))["code"] == "R0"
    return room


async def post_in_the_past(
    pool: asyncpg.Pool,
    table: Table,
    kind: str,
    amount: int,
    delta: int,
    ago: timedelta,
    *,
    round_id: str,
    ref: str | None = None,
) -> str:
    txn = f"past-{kind}-" + secrets.token_hex(4)
    await pool.execute(
        POST_IN_THE_PAST,
        table.provider,
        table.player_id,
        txn,
        kind,
        amount,
        delta,
        ago,
        round_id,
        ref,
    )
    return txn


async def a_history_across_windows(pool: asyncpg.Pool, table: Table) -> dict[str, str]:
    """Bets, results, corrections and a cancel from 40 days ago up to a second ago, so that
    some fall in every window and some in none, whatever the day the test runs; the bets."""
    bets = {}
    for name, amount, ago in (
        ("d40", 300, timedelta(days=40)),
        ("d8", 200, timedelta(days=8)),
        ("d3", 150, timedelta(days=3)),
        ("d1", 120, timedelta(days=1)),
        ("now", 100, timedelta(seconds=1)),
    ):
        bets[name] = await post_in_the_past(
            pool, table, "bet", amount, -amount, ago + timedelta(seconds=2), round_id=name
        )
    # Wins in rounds of their own, so that the bets above can still be refunded.
    await post_in_the_past(pool, table, "result", 500, 500, timedelta(days=8), round_id="w8")
    await post_in_the_past(pool, table, "result", 50, 50, timedelta(days=1), round_id="w1")
    # The win of three days ago was corrected down, a day later.
    first = await post_in_the_past(pool, table, "result", 90, 90, timedelta(days=3), round_id="w3")
    await post_in_the_past(
        pool, table, "result_change", 60, -30, timedelta(days=2), round_id="w3", ref=first
    )
    # The bet of 40 days ago was refunded 4 days ago: no window counts it either way.
    await post_in_the_past(
        pool, table, "cancel", 300, 300, timedelta(days=4), round_id="d40", ref=bets["d40"]
    )
    return bets


# --- defect 4: the cost of a limit check -----------------------------------------------------


LEDGER_ROWS_READ = """
SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)
  FROM pg_stat_xact_user_tables WHERE relname = 'ledger_transactions'
"""


async def rows_read_by_one_bet(pool: asyncpg.Pool, table: Table) -> int:
    """Ledger rows a bet of this player reads, in a transaction rolled back after. The counters
    also hold what earlier transactions of the connection have not yet reported, so the bet's
    share is the difference across it, within one transaction."""
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            before: int = await conn.fetchval(LEDGER_ROWS_READ)
            answer = await conn.fetchrow(
                "SELECT * FROM seamless_bet($1, $2, $3, 'cost', 'slot-1', 10, 'EUR', $4, 'rq')",
                table.provider,
                table.player_id,
                "cost-" + secrets.token_hex(4),
                token_hash(table.token),
            )
            assert Reason.named(answer["reason"]).code == "R0", dict(answer)
            after: int = await conn.fetchval(LEDGER_ROWS_READ)
        finally:
            await tx.rollback()
    return after - before


async def test_a_bet_reads_no_more_rows_after_a_long_history(
    table_factory: TableFactory, pool: asyncpg.Pool
) -> None:
    fresh, played = await table_factory(), await table_factory(balance=1_000_000)
    await pool.execute(
        *SEED.limits_history(
            player_id=played.player_id, provider=played.provider, currency="EUR", rounds=5_000
        )
    )
    for table in (fresh, played):
        await put_limits(table, SIX)
    fresh_rows = await rows_read_by_one_bet(pool, fresh)
    played_rows = await rows_read_by_one_bet(pool, played)
    # Before issue 12 each of the six limits scanned the month's 5,000 bets (36,761 rows read,
    # against 11 for the fresh player); now a few rows whatever the history.
    assert played_rows <= fresh_rows + 5 and played_rows < 20, (fresh_rows, played_rows)


# --- the totals count what the scan counts -------------------------------------------------


@pytest.mark.parametrize("period", LIMIT_PERIODS)
@pytest.mark.parametrize("kind", PLAY_KINDS)
async def test_a_limit_set_mid_window_counts_the_history(
    table_factory: TableFactory, pool: asyncpg.Pool, kind: str, period: str
) -> None:
    table = await table_factory(balance=100_000)
    bets = await a_history_across_windows(pool, table)
    await put_limits(table, {kind: {period: 10**6}})
    used = await pool.fetchrow(USED_BY_SCAN, table.player_id)  # the one limit of the player
    limit = 1_000 + int(max(used["wagered"] - (used["won"] if kind == "loss" else 0), 0))
    await put_limits(table, {kind: {period: limit}})  # a lowering: at once
    await assert_room_is(table, pool, 1_000)
    # Play on: a bet, its loss, a win, a correction, and refunds of bets of earlier windows.
    await table.bet(400, round_id="live", txn="live-bet")
    await table.result(0, round_id="live")
    won = await table.result(250, round_id="win", txn="live-win")
    assert won["code"] == "R0"
    change = await table.client.send(
        "result_change",
        player_id=table.player_id,
        transaction_id="live-change",
        ref_transaction_id="live-win",
        round_id="win",
        amount=120,
        currency="EUR",
    )
    assert change["code"] == "R0", change
    await assert_room_is(table, pool)
    for name in ("d3", "d1", "d8"):
        assert (await table.cancel(bets[name], round_id=name))["code"] == "R0"
        await assert_room_is(table, pool)


async def test_six_limits_at_once_with_a_history(table: Table, pool: asyncpg.Pool) -> None:
    await a_history_across_windows(pool, table)
    await put_limits(table, SIX)
    lowered = {
        kind: {period: 2_000 + 100 * i for i, period in enumerate(periods)}
        for kind, periods in SIX.items()
    }
    await put_limits(table, lowered)
    await assert_room_is(table, pool)
    await table.bet(700, round_id="x")
    await table.result(1_000, round_id="x")
    await assert_room_is(table, pool)


async def totals_rows(pool: asyncpg.Pool, player_id: str) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM player_limit_totals WHERE player_id = $1", player_id
    )
    return count


async def test_totals_are_kept_only_while_the_player_has_play_limits(
    table: Table, pool: asyncpg.Pool
) -> None:
    await table.bet(100, round_id="a")
    await put_limits(table, {"deposit": {"daily": 5_000}})
    await table.bet(100, round_id="b")
    assert await totals_rows(pool, table.player_id) == 0  # no wager or loss limit: nothing kept
    await put_limits(table, {"wager": {"daily": 1_000}})
    assert await totals_rows(pool, table.player_id) == 1  # today's, from the ledger
    await assert_room_is(table, pool, 800)
    # Removed: it waits for the cooling-off, then lifts; asking again drops the row.
    await put_limits(table, {"wager": {"daily": None}})
    await pool.execute(
        "UPDATE player_limits SET next_from = now() - interval '1 second'"
        " WHERE player_id = $1 AND kind = 'wager'",
        table.player_id,
    )
    await put_limits(table, {"wager": {"daily": None}})
    assert await totals_rows(pool, table.player_id) == 0
    # Bets while no limit is kept, then a limit again: counted from the ledger once more.
    await table.bet(300, round_id="c")
    await put_limits(table, {"loss": {"monthly": 900}})
    await assert_room_is(table, pool, 400)


TOTALS_BY_LIMIT = """
SELECT l.kind, l.period, coalesce(sum(t.wagered), 0) AS wagered, coalesce(sum(t.won), 0) AS won
  FROM player_limits l
  LEFT JOIN player_limit_totals t
         ON t.player_id = l.player_id AND t.day >= wallet_utc_day(wallet_window_start(l.period))
 WHERE l.player_id = $1 AND l.kind IN ('wager', 'loss')
 GROUP BY l.kind, l.period
"""


async def assert_totals_match_the_scan(pool: asyncpg.Pool, player_id: str) -> None:
    kept = {
        (r["kind"], r["period"]): (r["wagered"], r["won"])
        for r in await pool.fetch(TOTALS_BY_LIMIT, player_id)
    }
    scanned = {
        (r["kind"], r["period"]): (r["wagered"], r["won"])
        for r in await pool.fetch(USED_BY_SCAN, player_id)
    }
    assert kept == scanned and kept


async def test_bets_racing_the_first_limit_are_all_counted(
    table_factory: TableFactory, pool: asyncpg.Pool
) -> None:
    for _round in range(3):
        table = await table_factory(balance=100_000)
        await a_history_across_windows(pool, table)
        bets = [table.bet(10 + i, round_id=f"race-{i}") for i in range(12)]
        results = [table.result(5 * i, round_id=f"won-{i}") for i in range(4)]
        answers = await asyncio.gather(put_limits(table, SIX), *bets, *results)
        assert all(a["code"] == "R0" for a in answers[1:]), answers
        await assert_totals_match_the_scan(pool, table.player_id)


async def test_the_first_posting_of_a_day_drops_days_no_window_reaches(
    table: Table, pool: asyncpg.Pool
) -> None:
    await put_limits(table, {"wager": {"monthly": 5_000}})
    assert await totals_rows(pool, table.player_id) == 0  # nothing played this month yet
    # Left from a window long past (the last posting of a day two months ago, say).
    await pool.execute(
        "INSERT INTO player_limit_totals (player_id, day, wagered, won)"
        " VALUES ($1, wallet_utc_day(now()) - 70, 4000, 0)",
        table.player_id,
    )
    await table.bet(100, round_id="first-today")
    days = await pool.fetch(
        "SELECT day = wallet_utc_day(now()) AS today, wagered FROM player_limit_totals"
        " WHERE player_id = $1",
        table.player_id,
    )
    assert [(d["today"], d["wagered"]) for d in days] == [(True, 100)]
    await assert_room_is(table, pool, 4_900)


# --- defect 5b: first limits sent at once ------------------------------------------------------


async def test_first_limits_sent_at_once_all_succeed_in_one_order(
    table_factory: TableFactory, pool: asyncpg.Pool
) -> None:
    for _round in range(5):
        table = await table_factory()
        path = f"/v1/players/{table.player_id}/limits"
        bodies = [
            {"wager": {"daily": 100 + i, "weekly": 1_000 - i}, "loss": {"monthly": 500 + 7 * i}}
            for i in range(4)
        ]
        responses = await asyncio.gather(
            *(
                table.operator.http.request("PUT", path, json=body, headers=table.operator.headers)
                for body in bodies
            )
        )
        assert [r.status_code for r in responses] == [200] * 4, [r.text for r in responses]
        # One order explains everything: each audit entry starts where the one before ended,
        # and the player ends as the last one left it.
        entries = await pool.fetch(
            "SELECT before, after FROM audit_log WHERE target = $1 AND action = 'player.limits'"
            " ORDER BY id",
            f"player:{table.player_id}",
        )
        assert len(entries) == 4
        empty = {"limits": {"deposit": {}, "wager": {}, "loss": {}}, "pending_limits": []}
        assert entries[0]["before"] == empty
        for earlier, later in zip(entries, entries[1:], strict=False):
            assert later["before"] == earlier["after"]
        player = await table.operator.call("GET", path.removesuffix("/limits"), expect=200)
        final = {k: player[k] for k in ("limits", "pending_limits")}
        assert final == entries[-1]["after"]
        assert final in [{k: r.json()[k] for k in final} for r in responses]


# --- defect 7b: the largest balance --------------------------------------------------------


async def near_the_largest_balance(pool: asyncpg.Pool, table: Table, room: int) -> int:
    """Sets the player's balance ``room`` below the largest bigint, by SQL; the old balance."""
    old = await table.balance()
    await set_balance(pool, table, LARGEST - room)
    return old


async def set_balance(pool: asyncpg.Pool, table: Table, balance: int) -> None:
    await pool.execute(
        "UPDATE accounts a SET balance = $2 FROM players p"
        " WHERE p.player_id = $1 AND a.id = p.account_id",
        table.player_id,
        balance,
    )


def assert_refused_as_too_large(answer: dict[str, Any], balance: int) -> None:
    assert (answer["code"], answer["reason"]) == ("R1", "internal_error"), answer
    assert "largest amount the wallet can hold" in answer["message"], answer
    assert answer["balance"] == balance


async def ledger_rows(pool: asyncpg.Pool, table: Table, txn: str) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM ledger_transactions WHERE source = $1 AND external_id = $2",
        table.provider,
        txn,
    )
    return count


async def test_credits_past_the_largest_balance_are_refused(
    table: Table, pool: asyncpg.Pool
) -> None:
    await table.bet(500, round_id="c", txn="big-bet")
    assert (await table.result(100, round_id="w", txn="big-win"))["code"] == "R0"
    old = await near_the_largest_balance(pool, table, 99)
    try:
        result = await table.result(100, round_id="x", txn="too-big")
        assert_refused_as_too_large(result, LARGEST - 99)
        cancel = await table.cancel("big-bet", round_id="c", txn="too-big-refund")
        assert_refused_as_too_large(cancel, LARGEST - 99)
        change = await table.client.send(
            "result_change",
            player_id=table.player_id,
            transaction_id="too-big-change",
            ref_transaction_id="big-win",
            round_id="w",
            amount=200,
            currency="EUR",
        )
        assert_refused_as_too_large(change, LARGEST - 99)
        for txn in ("too-big", "too-big-refund", "too-big-change"):
            assert await ledger_rows(pool, table, txn) == 0
        # Up to the largest balance exactly is fine.
        assert (await table.result(99, round_id="y"))["balance"] == LARGEST
    finally:
        await set_balance(pool, table, old + 99)
    # The refused events were not remembered: sent again at a normal balance they post.
    assert (await table.cancel("big-bet", round_id="c", txn="too-big-refund"))["code"] == "R0"


async def test_a_credit_past_the_largest_balance_does_not_fail_its_batch(
    table_factory: TableFactory, pool: asyncpg.Pool
) -> None:
    rich, other = await table_factory(), await table_factory()
    old = await near_the_largest_balance(pool, rich, 10)
    try:
        rows = await pool.fetch(
            "SELECT * FROM seamless_batch($1, 0, 600)",
            [
                Posting(
                    "result", rich.provider, rich.player_id, "batch-too-big", None, "r",
                    "slot-1", 11, "EUR", None, True, "rq-1", b"digest-1",
                ),
                Posting(
                    "bet", other.provider, other.player_id, "batch-bet", None, "r", "slot-1",
                    100, "EUR", token_hash(other.token), None, "rq-2", b"digest-2",
                ),
            ],
        )  # fmt: skip
    finally:
        await set_balance(pool, rich, old)
    assert [(Reason.named(r["reason"]).code, r["reason"]) for r in rows] == [
        ("R1", "internal_error"),
        ("R0", "ok"),
    ]
    assert await ledger_rows(pool, rich, "batch-too-big") == 0
    assert await other.balance() == 9_900
