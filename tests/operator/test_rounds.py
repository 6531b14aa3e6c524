"""Rounds for operators (contract 1.1, stale rounds; section 2, /v1/rounds): the listing by each
filter and page, stale detection, a round's timeline, the settlement of a stale round (refund or
close) and its refusals, idempotency and races, the audit entry, and the stale-rounds gauge.

A round is made stale by ageing its row (`created_at` two days back), as the configured age
(WALLET_ROUND_STALE_SECONDS, 24 h) would."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from app.config import ConfigError, Settings
from app.db import Queries
from app.operator import rounds
from app.web.auth import ROLES
from tests.fixtures.app import Operator, Table
from tests.operator.test_api import api_key, as_role
from tests.support.rounds import age_round


def key() -> dict[str, str]:
    return {"idempotency-key": "settle-" + secrets.token_hex(8)}


async def age(pool: asyncpg.Pool, table: Table, round_id: str, days: int = 2) -> None:
    """Make the round as old as a provider's forgotten one."""
    await age_round(pool, table.provider, table.player_id, round_id, days)


def path(table: Table, round_id: str) -> str:
    return f"/v1/rounds/{table.provider}/{table.player_id}/{round_id}"


async def stale_round(table: Table, pool: asyncpg.Pool, round_id: str, *amounts: int) -> list[str]:
    """A round with a bet of each amount, aged past the stale age; the bets' transaction ids."""
    ids = []
    for amount in amounts:
        txn = "bet-" + secrets.token_hex(6)
        assert (await table.bet(amount, round_id=round_id, txn=txn))["code"] == "R0"
        ids.append(txn)
    await age(pool, table, round_id)
    return ids


async def settle(
    table: Table,
    round_id: str,
    action: str = "refund",
    expect: int = 200,
    headers: dict[str, str] | None = None,
    reason: str = "provider never sent the result",
) -> Any:
    return await table.operator.call(
        "POST",
        path(table, round_id) + "/settle",
        {"action": action, "reason": reason},
        headers=headers or key(),
        expect=expect,
    )


# --- the listing ---------------------------------------------------------------------------------


async def test_rounds_are_listed_by_each_filter_newest_first_and_paged(
    table: Table, pool: asyncpg.Pool
) -> None:
    op = table.operator
    await table.bet(100, round_id="open")
    await table.bet(100, round_id="closed")
    await table.result(300, round_id="closed")
    cancelled = "bet-" + secrets.token_hex(6)
    await table.bet(100, round_id="cancelled", txn=cancelled)
    await table.cancel(cancelled, round_id="cancelled")
    await stale_round(table, pool, "stale", 100)
    settled = await stale_round(table, pool, "settled", 100)
    assert settled and (await settle(table, "settled", "close"))["state"] == "settled"
    await stale_round(table, pool, "stale-too", 100)
    await age(pool, table, "stale-too", 1)  # older still than "stale"

    base = f"/v1/rounds?player_id={table.player_id}"
    every = (await op.call("GET", base, expect=200))["data"]
    # Newest first by each round's first posting (aging a round does not move it).
    assert [r["round_id"] for r in every] == [
        "stale-too",
        "settled",
        "stale",
        "cancelled",
        "closed",
        "open",
    ]
    by_id = {r["round_id"]: r for r in every}
    assert {k: r["state"] for k, r in by_id.items()} == {
        "open": "open",
        "closed": "closed",
        "cancelled": "cancelled",
        "stale": "open",
        "stale-too": "open",
        "settled": "settled",
    }
    assert [k for k, r in by_id.items() if r["stale"]] == ["stale-too", "stale"]
    assert by_id["closed"] == {
        "provider": table.provider,
        "player_id": table.player_id,
        "round_id": "closed",
        "game_id": "slot-1",
        "state": "closed",
        "stale": False,
        "bets": 1,
        "cancelled_bets": 0,
        "results": 1,
        "created_at": by_id["closed"]["created_at"],
        "closed_at": by_id["closed"]["closed_at"],
        "closed_by": "result",
        "settled_action": None,
    }
    assert by_id["closed"]["closed_at"] is not None
    assert by_id["cancelled"]["cancelled_bets"] == 1
    assert (by_id["settled"]["closed_by"], by_id["settled"]["settled_action"]) == (
        "operator",
        "close",
    )

    for state, expected in [
        ("open", {"open", "stale", "stale-too"}),
        ("closed", {"closed"}),
        ("cancelled", {"cancelled"}),
        ("settled", {"settled"}),
        ("stale", {"stale", "stale-too"}),
    ]:
        listed = await op.call("GET", f"{base}&state={state}", expect=200)
        assert {r["round_id"] for r in listed["data"]} == expected, state
    # Every player's stale rounds, narrowed to this test's provider: newest first by the
    # round's age, "stale-too" the older.
    listed = await op.call("GET", f"/v1/rounds?provider={table.provider}&state=stale", expect=200)
    assert [r["round_id"] for r in listed["data"]] == ["stale", "stale-too"]
    # Another provider's filter hides them.
    other = await op.call("GET", f"{base}&provider=prov-{secrets.token_hex(4)}", expect=200)
    assert other == {"data": [], "next_cursor": None}

    # Pages of 2 walk the same list, each round once.
    seen: list[str] = []
    cursor = ""
    while True:
        page = await op.call("GET", f"{base}&limit=2&cursor={cursor}", expect=200)
        seen += [r["round_id"] for r in page["data"]]
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    assert seen == [r["round_id"] for r in every]
    stale = f"/v1/rounds?provider={table.provider}&state=stale&limit=1"
    page = await op.call("GET", stale, expect=200)
    rest = await op.call("GET", f"{stale}&cursor={page['next_cursor']}", expect=200)
    assert [page["data"][0]["round_id"], rest["data"][0]["round_id"]] == ["stale", "stale-too"]
    assert rest["next_cursor"] is None


async def test_a_listing_no_index_serves_and_bad_filters_are_refused(operator: Operator) -> None:
    for query in ("", "?state=open", "?state=cancelled", "?state=closed", "?provider=p-1"):
        refused = await operator.call("GET", f"/v1/rounds{query}", expect=400)
        assert refused["error"]["field"] == "player_id", query
    refused = await operator.call("GET", "/v1/rounds?state=lost&player_id=p-1", expect=400)
    assert refused["error"]["field"] == "state"
    assert "open, cancelled, closed, settled, stale" in refused["error"]["message"]
    refused = await operator.call("GET", "/v1/rounds?state=stale&cursor=nope", expect=400)
    assert refused["error"]["field"] == "cursor"
    refused = await operator.call("GET", "/v1/rounds?player_id=a%20b", expect=400)
    assert refused["error"]["field"] == "player_id"


async def test_each_listing_reads_its_index(pool: asyncpg.Pool) -> None:
    """No listing scans every round, and none needs an index of its own on rounds (sequential
    scans off, so that the few test rows do not make a scan the cheaper plan): a player's rounds
    are read off ledger_by_player, every player's stale ones off stale_rounds and the BRIN range
    of rounds_by_time; first pages and later ones."""
    q = Queries.load()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        for at in (None, datetime.now(UTC)):
            for state, stale in [(None, False), ("open", True), ("closed", False)]:
                for provider in (None, "p"):
                    sql, *args = q.player_rounds(
                        player_id="pl",
                        provider=provider,
                        state=state,
                        stale_only=stale,
                        age_seconds=86400,
                        limit=51,
                        cursor_at=at,
                        cursor_id=None if at is None else 7,
                    )
                    plan = str(await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args))
                    assert "Seq Scan" not in plan, (state, provider, plan)
                    assert "ledger_by_player" in plan, (state, plan)
            for provider in (None, "p"):
                sql, *args = q.stale_rounds(
                    provider=provider,
                    age_seconds=86400,
                    limit=51,
                    cursor_at=at,
                    cursor_provider=None if at is None else "p",
                    cursor_player=None if at is None else "pl",
                    cursor_round=None if at is None else "r",
                )
                raw = await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args)
                # wallet_stale_rounds' rows are joined to rounds by key.
                assert ("Seq Scan", "rounds") not in set(scans(raw[0]["Plan"])), raw
        sql, *args = q.stale_rounds_by_provider(age_seconds=86400)
        raw = await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args)
        assert ("Seq Scan", "rounds") not in set(scans(raw[0]["Plan"])), raw
        # The slice the last sweep has not read, as wallet_stale_rounds and wallet_sweep_stale
        # read it (EXECUTE, so its lower bound is known when it is planned): a range of the
        # BRIN index, both of its bounds in the index condition.
        raw = await conn.fetchval(
            "EXPLAIN (FORMAT JSON) SELECT n.round_id FROM rounds n"
            " WHERE n.created_at >= $1 AND n.created_at < now() - interval '1 day'",
            datetime.now(UTC) - timedelta(days=1, minutes=1),
        )
        plan = str(raw)
        assert "rounds_by_time" in plan and "'Index Cond': \"((created_at >= '" in plan, plan
        assert ("Seq Scan", "rounds") not in set(scans(raw[0]["Plan"])), plan


def scans(node: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(node type, relation) of every node of an EXPLAIN plan that reads a relation."""
    if "Relation Name" in node:
        yield node["Node Type"], node["Relation Name"]
    for child in node.get("Plans", []):
        yield from scans(child)


# --- the timeline --------------------------------------------------------------------------------


async def test_the_timeline_shows_every_posting_with_its_ids_and_amounts(
    table: Table, operator: Operator
) -> None:
    start = await table.balance()
    first = await table.bet(100, round_id="t", txn="b-1", request_id="req-b-1")
    await table.bet(250, round_id="t", txn="b-2")
    await table.cancel("b-2", round_id="t", txn="c-2", request_id="req-c-2")
    await table.result(500, round_id="t", txn="w-1", round_closed=False)
    detail = await operator.call("GET", path(table, "t"), expect=200)
    assert (detail["state"], detail["stale"], detail["bets"], detail["cancelled_bets"]) == (
        "open",
        False,
        2,
        1,
    )
    timeline = detail["timeline"]
    assert [(e["event"], e["transaction_id"]) for e in timeline] == [
        ("bet", "b-1"),
        ("bet", "b-2"),
        ("cancel", "c-2"),
        ("result", "w-1"),
    ]
    assert [(e["amount"], e["delta"]) for e in timeline] == [
        (100, -100),
        (250, -250),
        (None, 250),
        (500, 500),
    ]
    assert [e["balance_after"] for e in timeline] == [
        start - 100,
        start - 350,
        start - 100,
        start + 400,
    ]
    assert timeline[0]["wallet_transaction_id"] == first["transaction_id"]
    assert timeline[0]["request_id"] == "req-b-1" and timeline[2]["request_id"] == "req-c-2"
    assert timeline[2]["ref_transaction_id"] == "b-2"
    assert all(e["actor"] is None and e["reason"] is None for e in timeline)
    times = [e["created_at"] for e in timeline]
    assert times == sorted(times)


async def test_the_timeline_is_the_rounds_postings_from_the_players_ledger(
    table: Table, operator: Operator, pool: asyncpg.Pool
) -> None:
    """The timeline reads the round's postings off the player's ledger from the round's start:
    its bets, cancels, results and corrections and a settlement's refunds, in order; the
    player's other postings (another round, a promotion naming the round) stay out."""
    start = await table.balance()
    bets = await stale_round(table, pool, "mine", 100, 200)
    await table.bet(50, round_id="elsewhere")
    promo = await table.client.send(
        "promo_win",
        player_id=table.player_id,
        transaction_id="pw-in-round",
        promo_id="cup",
        amount=5,
        currency="EUR",
        round_id="mine",
    )
    assert promo["code"] == "R0"
    detail = await operator.call("GET", path(table, "mine"), expect=200)
    assert [e["transaction_id"] for e in detail["timeline"]] == bets
    settled = await settle(table, "mine")
    assert [e["transaction_id"] for e in settled["timeline"] if e["transaction_id"]] == [
        *bets,
        *(f"#settle:{b}" for b in bets),
    ]
    assert await table.balance() == start - 50 + 5
    first = await pool.fetchval(
        "SELECT first_transaction = (SELECT id FROM ledger_transactions"
        "  WHERE source = $1 AND external_id = $3)"
        "  FROM rounds WHERE provider = $1 AND player_id = $2 AND round_id = 'mine'",
        table.provider,
        table.player_id,
        bets[0],
    )
    assert first is True


async def test_an_end_round_is_in_the_timeline_and_the_round_is_closed(
    table: Table, operator: Operator, pool: asyncpg.Pool
) -> None:
    await table.bet(100, round_id="ended")
    ended = await table.client.send(
        "end_round", player_id=table.player_id, round_id="ended", request_id="req-end"
    )
    assert ended["code"] == "R0", ended
    detail = await operator.call("GET", path(table, "ended"), expect=200)
    assert (detail["state"], detail["closed_by"]) == ("closed", "end_round")
    assert [(e["event"], e["request_id"]) for e in detail["timeline"]][-1] == (
        "end_round",
        "req-end",
    )
    await age(pool, table, "ended")
    refused = await settle(table, "ended", expect=400)
    assert "closed (by end_round)" in refused["error"]["message"]


async def test_an_unknown_round_is_404(table: Table, operator: Operator) -> None:
    await table.bet(100, round_id="known")
    for url in (
        path(table, "unknown"),
        f"/v1/rounds/{table.provider}/pl-unknown/known",
        f"/v1/rounds/prov-unknown/{table.player_id}/known",
    ):
        missing = await operator.call("GET", url, expect=404)
        assert missing["error"]["code"] == "resource_not_found"
        await operator.call(
            "POST",
            url + "/settle",
            {"action": "close", "reason": "x"},
            headers=key(),
            expect=404,
        )
    bad = await operator.call(
        "GET", f"/v1/rounds/{table.provider}/{table.player_id}/a%20b", expect=400
    )
    assert bad["error"]["field"] == "round_id"


# --- settling ------------------------------------------------------------------------------------


async def test_a_refund_gives_the_open_bets_back_and_the_provider_is_then_late(
    table: Table, operator: Operator, pool: asyncpg.Pool
) -> None:
    start = await table.balance()
    bets = await stale_round(table, pool, "lost", 100, 250, 400)
    cancelled = await table.cancel(bets[2], round_id="lost")
    assert cancelled["code"] == "R0"
    assert await table.balance() == start - 350
    request_id = "req-settle-" + secrets.token_hex(4)
    settled = await settle(table, "lost", headers={**key(), "x-request-id": request_id})
    assert await table.balance() == start
    assert (settled["state"], settled["closed_by"], settled["settled_action"]) == (
        "settled",
        "operator",
        "refund",
    )
    assert settled["stale"] is False and settled["closed_at"] is not None
    assert settled["cancelled_bets"] == settled["bets"] == 3
    refunds = [e for e in settled["timeline"] if (e["transaction_id"] or "").startswith("#settle:")]
    assert [
        (e["event"], e["transaction_id"], e["ref_transaction_id"], e["delta"]) for e in refunds
    ] == [
        ("cancel", f"#settle:{bets[0]}", bets[0], 100),
        ("cancel", f"#settle:{bets[1]}", bets[1], 250),
    ]
    assert refunds[-1]["balance_after"] == start
    assert all(e["request_id"] == request_id for e in refunds)
    last = settled["timeline"][-1]
    assert (last["event"], last["request_id"], last["actor"], last["reason"]) == (
        "settle_refund",
        request_id,
        "admin:bootstrap",
        "provider never sent the result",
    )
    # What the provider sends late: its result is refused, its cancel of a refunded bet is a
    # duplicate, the refund it repeats moves nothing.
    late = await table.result(900, round_id="lost")
    assert (late["code"], late["reason"]) == ("R1", "round_closed")
    late_cancel = await table.cancel(bets[0], round_id="lost")
    assert late_cancel["code"] == "R0" and late_cancel["duplicate"] is True
    assert await table.balance() == start
    assert await operator.call("GET", path(table, "lost"), expect=200) == settled

    audited = await operator.call(
        "GET",
        f"/v1/audit?action=round.settle&target=round:{table.provider}/{table.player_id}/lost",
        expect=200,
    )
    assert len(audited["data"]) == 1
    entry = audited["data"][0]
    assert entry["request_id"] == request_id and entry["actor"] == "admin:bootstrap"
    assert entry["after"] == {
        "state": "settled",
        "action": "refund",
        "reason": "provider never sent the result",
        "refunded_bets": 2,
        "refunded": 350,
    }
    assert await operator.call("GET", "/v1/ledger/check", expect=200) == {"ok": True}


async def test_a_refund_of_a_free_round_bet_gives_the_round_back(
    table: Table, operator: Operator, pool: asyncpg.Pool
) -> None:
    grant = await pool.fetchval(
        "INSERT INTO free_rounds (player_id, provider, game_id, rounds, bet_value, currency, "
        "expires_at) VALUES ($1, $2, 'slot-1', 2, 100, 'EUR', now() + interval '1 day') "
        "RETURNING id",
        table.player_id,
        table.provider,
    )
    start = await table.balance()
    free = await table.bet(0, round_id="free", free_round_id=str(grant))
    assert free["code"] == "R0", free
    assert await pool.fetchval("SELECT used FROM free_rounds WHERE id = $1", grant) == 1
    await age(pool, table, "free")
    settled = await settle(table, "free")
    refund = settled["timeline"][-2]
    assert (refund["event"], refund["amount"], refund["delta"]) == ("cancel", 0, 0)
    assert settled["timeline"][0]["free_round_id"] == str(grant)
    assert await pool.fetchval("SELECT used FROM free_rounds WHERE id = $1", grant) == 0
    assert await table.balance() == start


async def test_a_refund_keeps_the_limit_totals(
    table: Table, operator: Operator, pool: asyncpg.Pool
) -> None:
    await operator.call(
        "PUT", f"/v1/players/{table.player_id}/limits", {"wager": {"daily": 1000}}, expect=200
    )
    await table.bet(800, round_id="capped")
    assert (await table.bet(300, round_id="other"))["reason"] == "limit_exceeded"
    await age(pool, table, "capped")
    await settle(table, "capped")
    wagered = await pool.fetchval(
        "SELECT sum(wagered) FROM player_limit_totals WHERE player_id = $1", table.player_id
    )
    assert wagered == 0
    assert (await table.bet(300, round_id="other"))["code"] == "R0"


async def test_a_close_keeps_the_bets_as_lost(
    table: Table, operator: Operator, pool: asyncpg.Pool
) -> None:
    start = await table.balance()
    bets = await stale_round(table, pool, "gone", 100, 200)
    settled = await settle(table, "gone", "close", reason="provider confirmed: lost")
    assert await table.balance() == start - 300
    assert (settled["state"], settled["settled_action"], settled["cancelled_bets"]) == (
        "settled",
        "close",
        0,
    )
    assert [e["event"] for e in settled["timeline"]] == ["bet", "bet", "settle_close"]
    assert settled["timeline"][-1]["reason"] == "provider confirmed: lost"
    late = await table.result(900, round_id="gone")
    assert (late["code"], late["reason"]) == ("R1", "round_closed")
    # A bet of a round closed as lost is settled: the provider's late cancel refunds nothing.
    late_cancel = await table.cancel(bets[0], round_id="gone")
    assert (late_cancel["code"], late_cancel["reason"]) == ("R1", "bet_already_settled")
    assert await table.balance() == start - 300
    assert await operator.call("GET", "/v1/ledger/check", expect=200) == {"ok": True}


async def test_only_a_stale_round_may_be_settled(
    table: Table, operator: Operator, pool: asyncpg.Pool
) -> None:
    await table.bet(100, round_id="young")
    refused = await settle(table, "young", expect=400)
    assert refused["error"]["field"] == "state"
    assert "not stale yet" in refused["error"]["message"]
    assert "WALLET_ROUND_STALE_SECONDS" in refused["error"]["message"]

    await table.bet(100, round_id="closed")
    await table.result(0, round_id="closed")
    await age(pool, table, "closed")
    refused = await settle(table, "closed", expect=400)
    assert "the round is closed" in refused["error"]["message"]

    bet = "bet-" + secrets.token_hex(6)
    await table.bet(100, round_id="cancelled", txn=bet)
    await table.cancel(bet, round_id="cancelled")
    await age(pool, table, "cancelled")
    refused = await settle(table, "cancelled", expect=400)
    assert "every bet of the round is cancelled" in refused["error"]["message"]

    # A round a result left open has paid a win: closed, never refunded.
    await table.bet(100, round_id="paid", txn="paid-bet")
    assert (await table.result(300, round_id="paid", round_closed=False))["code"] == "R0"
    await age(pool, table, "paid")
    before = await table.balance()
    refused = await settle(table, "paid", "refund", expect=400)
    assert "close it instead" in refused["error"]["message"]
    assert await table.balance() == before
    assert (await settle(table, "paid", "close"))["settled_action"] == "close"

    # Refunds that would take the balance past the largest bigint: refused, nothing posted.
    await stale_round(table, pool, "huge", 100)
    real = await table.balance()
    await pool.execute(
        "UPDATE accounts SET balance = 9223372036854775807 - 50 WHERE kind = 'player'"
        " AND owner = $1",
        table.player_id,
    )
    refused = await settle(table, "huge", "refund", expect=400)
    assert "largest amount" in refused["error"]["message"]
    assert await table.balance() == 9223372036854775807 - 50
    await pool.execute(
        "UPDATE accounts SET balance = $2 WHERE kind = 'player' AND owner = $1",
        table.player_id,
        real,
    )

    await stale_round(table, pool, "twice", 100)
    await settle(table, "twice", "close")
    refused = await settle(table, "twice", "refund", expect=400)
    assert "settled already (close)" in refused["error"]["message"]
    assert await operator.call("GET", "/v1/ledger/check", expect=200) == {"ok": True}


async def test_a_settle_needs_an_action_a_reason_a_key_and_a_role(
    table: Table, operator: Operator, pool: asyncpg.Pool, http: httpx.AsyncClient
) -> None:
    await stale_round(table, pool, "asked", 100)
    url = path(table, "asked") + "/settle"
    for body, field in [
        ({"action": "void", "reason": "x"}, "action"),
        ({"reason": "x"}, "action"),
        ({"action": "refund"}, "reason"),
        ({"action": "refund", "reason": "   "}, "reason"),
        ({"action": "refund", "reason": "x" * 201}, "reason"),
    ]:
        refused = await operator.call("POST", url, body, headers=key(), expect=400)
        assert refused["error"]["field"] == field, body
    missing = await operator.call("POST", url, {"action": "refund", "reason": "x"}, expect=400)
    assert missing["error"]["field"] == "Idempotency-Key"
    keys = {role: await api_key(operator, role) for role in ROLES}
    denied = await as_role(http, keys["support"]).call(
        "POST", url, {"action": "refund", "reason": "x"}, headers=key(), expect=403
    )
    assert denied["error"]["code"] == "forbidden_for_tenant"
    # Support reads rounds; finance and operator may settle them.
    await as_role(http, keys["support"]).call("GET", path(table, "asked"), expect=200)
    assert rounds.SETTLE_ROLES == {"admin", "operator", "finance"}
    settled = await as_role(http, keys["finance"]).call(
        "POST", url, {"action": "refund", "reason": "x"}, headers=key(), expect=200
    )
    assert settled["state"] == "settled"
    assert settled["timeline"][-1]["actor"].startswith("apikey:ak_")


# --- idempotency and races -----------------------------------------------------------------------


async def settlements(pool: asyncpg.Pool, table: Table, round_id: str) -> int:
    return await pool.fetchval(  # type: ignore[no-any-return]
        "SELECT count(*) FROM round_events WHERE provider = $1 AND player_id = $2 "
        "AND round_id = $3 AND event LIKE 'settle_%'",
        table.provider,
        table.player_id,
        round_id,
    )


async def test_the_same_key_gets_the_first_answer_and_another_request_409(
    table: Table, operator: Operator, pool: asyncpg.Pool
) -> None:
    start = await table.balance()
    await stale_round(table, pool, "keyed", 100)
    headers = key()
    first = await settle(table, "keyed", headers=headers)
    assert await settle(table, "keyed", headers=headers) == first
    assert await table.balance() == start and await settlements(pool, table, "keyed") == 1
    conflict = await settle(table, "keyed", "close", headers=headers, expect=409)
    assert conflict["error"]["code"] == "idempotency_conflict"
    # A refusal is a first answer too, given again with its key.
    await table.bet(100, round_id="young")
    refusal = key()
    refused = await settle(table, "young", headers=refusal, expect=400)
    await age(pool, table, "young")
    assert await settle(table, "young", headers=refusal, expect=400) == refused


async def test_racing_settlements_settle_once(
    table: Table, operator: Operator, pool: asyncpg.Pool
) -> None:
    start = await table.balance()

    def url(round_id: str) -> str:
        return path(table, round_id) + "/settle"

    body = {"action": "refund", "reason": "race"}

    await stale_round(table, pool, "one-key", 100)
    headers = {**operator.headers, **key()}
    answers = await asyncio.gather(
        *(operator.http.post(url("one-key"), json=body, headers=headers) for _ in range(4))
    )
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    assert all(a.json() == answers[0].json() for a in answers)
    assert await settlements(pool, table, "one-key") == 1

    await stale_round(table, pool, "two-keys", 100)
    answers = await asyncio.gather(
        *(
            operator.http.post(url("two-keys"), json=body, headers={**operator.headers, **key()})
            for _ in range(2)
        )
    )
    assert sorted(a.status_code for a in answers) == [200, 400], [a.text for a in answers]
    refused = next(a for a in answers if a.status_code == 400).json()
    assert "settled already (refund)" in refused["error"]["message"]
    assert await settlements(pool, table, "two-keys") == 1
    assert await table.balance() == start


async def test_a_settlement_and_a_late_result_serialise(
    table: Table, operator: Operator, pool: asyncpg.Pool
) -> None:
    """Sent together, either the result closes the round first (the settlement is refused as
    closed) or the settlement does (the result is R1 round_closed): never both."""
    for i in range(3):
        start = await table.balance()
        round_id = f"race-{i}"
        await stale_round(table, pool, round_id, 100)
        settled, result = await asyncio.gather(
            operator.http.post(
                path(table, round_id) + "/settle",
                json={"action": "refund", "reason": "race"},
                headers={**operator.headers, **key()},
            ),
            table.result(500, round_id=round_id),
        )
        if settled.status_code == 200:
            assert (result["code"], result["reason"]) == ("R1", "round_closed")
            assert await table.balance() == start
        else:
            assert settled.status_code == 400, settled.text
            assert "the round is closed" in settled.json()["error"]["message"]
            assert result["code"] == "R0"
            assert await table.balance() == start - 100 + 500


# --- the gauge and the setting -------------------------------------------------------------------


async def test_the_stale_rounds_gauge_counts_per_provider(
    table: Table, pool: asyncpg.Pool, asgi: Any, http: httpx.AsyncClient
) -> None:
    w = asgi.state["wallet"]

    async def gauge() -> float | None:
        await rounds.count_stale(w.pool, w.queries, w.metrics, w.settings.round_stale_seconds)
        text = (await http.get("/metrics")).text
        found = re.search(
            rf'^wallet_rounds_stale{{provider="{table.provider}"}} (\S+)$', text, re.M
        )
        return None if found is None else float(found.group(1))

    await table.bet(100, round_id="young")
    assert await gauge() == 0.0  # every provider is written, 0 when it has none
    await stale_round(table, pool, "s1", 100)
    await stale_round(table, pool, "s2", 100, 100)
    assert await gauge() == 2.0
    await settle(table, "s1")
    assert await gauge() == 1.0
    await settle(table, "s2")
    assert await gauge() == 0.0
    text = (await http.get("/metrics")).text
    assert "# TYPE wallet_rounds_stale gauge" in text


def test_the_stale_age_is_a_setting() -> None:
    assert Settings.from_env({}).round_stale_seconds == 86400
    assert Settings.from_env({"WALLET_ROUND_STALE_SECONDS": "3600"}).round_stale_seconds == 3600
    for bad in ("0", "-5", "a day"):
        with pytest.raises(ConfigError, match="WALLET_ROUND_STALE_SECONDS"):
            Settings.from_env({"WALLET_ROUND_STALE_SECONDS": bad})
