"""Payments core against real Postgres: idempotent creation, state machines and their refusals,
withdrawal holds, failover on retryable PSP errors only, and webhooks that move money once."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from app.audit import Actor
from app.db import Queries
from app.payments import signing
from app.payments.psp import Initiated, PspError
from app.payments.service import PaymentRequest, Payments, apply_webhook_once
from app.web.errors import (
    IdempotencyConflict,
    InvalidRequest,
    MethodUnavailable,
    PlayerLimitExceeded,
    RouteDegraded,
)
from tests.fixtures.app import Operator
from tests.payments.psps import SECRET, K, ScriptedPsp, timeout, webhook


@pytest.fixture
async def psp_a() -> ScriptedPsp:
    return ScriptedPsp("psp-a")


@pytest.fixture
async def payments(pool: asyncpg.Pool, psp_a: ScriptedPsp) -> AsyncIterator[Payments]:
    yield Payments(
        pool,
        Queries.load(),
        [psp_a],
        webhook_base="https://wallet.test/v1/psp",
        review_threshold=50_000,
    )


def deposit(player_id: str, amount: int = 2_000, **extra: Any) -> PaymentRequest:
    return PaymentRequest(player_id, amount, "EUR", "card", reference="order-1", **extra)


async def transitions(pool: asyncpg.Pool, payment_id: str) -> list[tuple[Any, str, str]]:
    rows = await pool.fetch(
        "SELECT from_status, to_status, trigger FROM payment_transitions "
        "WHERE payment_id = $1 ORDER BY id",
        payment_id,
    )
    return [(r["from_status"], r["to_status"], r["trigger"]) for r in rows]


# --- deposits ------------------------------------------------------------------------------------


async def test_deposit_credits_only_on_the_verified_final_webhook(
    payments: Payments, operator: Operator, pool: asyncpg.Pool
) -> None:
    player = await operator.player()
    created = await payments.create_deposit(deposit(player), K + "key-1")
    assert created["status"] == "awaiting_method" and created["redirect_url"]
    assert await operator.balance(player) == 0
    body, sig = webhook(created, "succeeded")
    assert await apply_webhook_once(payments, "psp-a", body, sig) == "moved_to_succeeded"
    assert await operator.balance(player) == 2_000
    assert (await payments.get("deposit", created["id"]))["status"] == "succeeded"
    assert await transitions(pool, created["id"]) == [
        ("awaiting_method", "succeeded", "psp_webhook")
    ]


async def test_duplicate_and_out_of_order_webhooks_move_money_once(
    payments: Payments, operator: Operator
) -> None:
    player = await operator.player()
    created = await payments.create_deposit(deposit(player), K + "key-2")
    body, sig = webhook(created, "succeeded", event_id="evt-1")
    outcomes = await asyncio.gather(
        *(apply_webhook_once(payments, "psp-a", body, sig) for _ in range(5))
    )
    assert sorted(outcomes) == ["duplicate"] * 4 + ["moved_to_succeeded"]
    late_body, late_sig = webhook(created, "processing", event_id="evt-0")
    assert await apply_webhook_once(payments, "psp-a", late_body, late_sig) == "ignored"
    failed_body, failed_sig = webhook(created, "failed", event_id="evt-2")
    assert await apply_webhook_once(payments, "psp-a", failed_body, failed_sig) == "ignored"
    assert await operator.balance(player) == 2_000


@pytest.mark.parametrize(
    "change", [{"amount": 1}, {"currency": "USD"}, {"psp_payment_id": "someone-else"}]
)
async def test_mismatched_webhook_is_refused_and_flagged(
    payments: Payments, operator: Operator, pool: asyncpg.Pool, change: dict[str, Any]
) -> None:
    player = await operator.player()
    created = await payments.create_deposit(deposit(player), K + secrets.token_hex(4))
    body, sig = webhook(created, "succeeded", **change)
    outcome = await apply_webhook_once(payments, "psp-a", body, sig)
    assert outcome.startswith("refused_")
    assert await operator.balance(player) == 0
    flagged = await pool.fetchval("SELECT flagged FROM payments WHERE id = $1", created["id"])
    assert flagged == outcome.removeprefix("refused_")
    # Listed for an operator among the deposits, not among the withdrawals.
    listed = await payments.needing_attention("deposit", 100, None)
    (ours,) = [p for p in listed["data"] if p["id"] == created["id"]]
    assert ours["attention"] == flagged
    withdrawals = await payments.needing_attention("withdrawal", 100, None)
    assert created["id"] not in {p["id"] for p in withdrawals["data"]}


@pytest.mark.parametrize("signature", [None, "t=1,v1=00", "garbage"])
async def test_unverifiable_webhook_changes_nothing(
    payments: Payments, operator: Operator, signature: str | None
) -> None:
    player = await operator.player()
    created = await payments.create_deposit(deposit(player), K + secrets.token_hex(4))
    body, _ = webhook(created, "succeeded")
    with pytest.raises(signing.SignatureError):
        await apply_webhook_once(payments, "psp-a", body, signature)
    stale = signing.sign(SECRET, body, int(time.time()) - 301)
    with pytest.raises(signing.SignatureError):
        await apply_webhook_once(payments, "psp-a", body, stale)
    assert await operator.balance(player) == 0


async def test_deposit_idempotency_key(
    payments: Payments, operator: Operator, psp_a: ScriptedPsp
) -> None:
    player = await operator.player()
    first = await payments.create_deposit(deposit(player), K + "key-5")
    again = await payments.create_deposit(deposit(player), K + "key-5")
    assert again == first and len(psp_a.calls) == 1
    with pytest.raises(IdempotencyConflict):
        await payments.create_deposit(deposit(player, 2_001), K + "key-5")


async def test_all_routes_degraded_is_503_and_the_payment_ends_failed(
    payments: Payments, operator: Operator, psp_a: ScriptedPsp, pool: asyncpg.Pool
) -> None:
    player = await operator.player()
    psp_a.script = [PspError("timeout", retryable=True)]
    with pytest.raises(RouteDegraded):
        await payments.create_deposit(deposit(player), K + "deg-1")
    row = await pool.fetchrow("SELECT * FROM payments WHERE idempotency_key = $1", K + "deg-1")
    assert (row["status"], row["failure_code"]) == ("failed", "route_degraded")
    # The same key gives the same answer again (the 503, without calling the PSP); a new key
    # may try again.
    with pytest.raises(RouteDegraded):
        await payments.create_deposit(deposit(player), K + "deg-1")
    assert len(psp_a.calls) == 1
    assert (await payments.create_deposit(deposit(player), K + "deg-2"))["redirect_url"]


async def test_crash_between_psp_call_and_database_write_recovers(
    payments: Payments, operator: Operator, psp_a: ScriptedPsp, pool: asyncpg.Pool
) -> None:
    """A creation died after inserting its payment and before storing the PSP's answer. A retry
    with the same key is told it is in progress while a start holds the payment's lease, and
    takes it over once none does (the dead worker's session took its lease with it): same
    payment, and the PSP is asked again under the same payment id (its idempotency key), so
    nothing doubles. No timer decides that a start is over."""
    player = await operator.player()
    req = deposit(player, 3_000)
    await pool.execute(
        "INSERT INTO payments (id, kind, player_id, amount, currency, method, reference, "
        "metadata, status, idempotency_key, request_hash, expires_at) "
        "VALUES ('dep_crashed', 'deposit', $1, 3000, 'EUR', 'card', 'order-1', '{}', "
        "'awaiting_method', $3, $2, now() + interval '1 hour')",
        player,
        req.digest(),
        K + "crash-1",
    )
    async with pool.acquire() as holder:
        assert await holder.fetchval(*Queries.load().try_start_lease(payment_id="dep_crashed"))
        with pytest.raises(IdempotencyConflict, match="in progress"):
            await payments.create_deposit(req, K + "crash-1")
    resumed = await payments.create_deposit(req, K + "crash-1")
    assert resumed["id"] == "dep_crashed" and resumed["redirect_url"]
    assert psp_a.calls[-1]["payment"] == "dep_crashed"
    body, sig = webhook(resumed, "succeeded")
    assert await apply_webhook_once(payments, "psp-a", body, sig) == "moved_to_succeeded"
    assert await apply_webhook_once(payments, "psp-a", body, sig) == "duplicate"
    assert await operator.balance(player) == 3_000


async def test_deposit_limits_count_deposits_under_way(
    payments: Payments, operator: Operator
) -> None:
    player = await operator.player()
    await operator.call(
        "PUT", f"/v1/players/{player}/limits", {"deposit": {"daily": 5_000}}, expect=200
    )
    await payments.create_deposit(deposit(player, 3_000), K + "lim-1")
    with pytest.raises(PlayerLimitExceeded):
        await payments.create_deposit(deposit(player, 2_001), K + "lim-2")
    await payments.create_deposit(deposit(player, 2_000), K + "lim-3")


async def test_deposit_refusals(payments: Payments, operator: Operator) -> None:
    player = await operator.player()
    with pytest.raises(MethodUnavailable):
        await payments.create_deposit(PaymentRequest(player, 100, "EUR", "crypto"), K + "r-1")
    with pytest.raises(InvalidRequest):
        await payments.create_deposit(PaymentRequest(player, 100, "USD", "card"), K + "r-2")


async def test_failover_on_retryable_errors_only(pool: asyncpg.Pool, operator: Operator) -> None:
    a = ScriptedPsp("psp-a", [PspError("http_503", retryable=True)])
    b = ScriptedPsp("psp-b")
    payments = Payments(pool, Queries.load(), [a, b], webhook_base="https://w/v1/psp")
    player = await operator.player()
    created = await payments.create_deposit(deposit(player), K + "fo-1")
    assert len(a.calls) == len(b.calls) == 1
    assert await pool.fetchval("SELECT psp FROM payments WHERE id = $1", created["id"]) == "psp-b"
    declined = ScriptedPsp("psp-a", [PspError("declined", retryable=False)])
    b.calls.clear()
    payments = Payments(pool, Queries.load(), [declined, b], webhook_base="https://w/v1/psp")
    refused = await payments.create_deposit(deposit(player), K + "fo-2")
    assert refused["status"] == "failed" and refused["failure_code"] == "declined"
    assert b.calls == []  # a decline is an answer, not a reason to try elsewhere


# --- withdrawals ---------------------------------------------------------------------------------


async def test_withdrawal_holds_then_settles_when_paid(
    payments: Payments, operator: Operator, psp_a: ScriptedPsp, pool: asyncpg.Pool
) -> None:
    player = await operator.player(10_000)
    psp_a.script = [Initiated("psp-a-x", "pending")]
    created = await payments.create_withdrawal(
        PaymentRequest(player, 4_000, "EUR", "card"), K + "w-1"
    )
    assert created["status"] == "processing"
    assert await operator.balance(player) == 6_000  # reserved at request
    body, sig = webhook(created, "succeeded", psp_payment_id="psp-a-x")
    assert await apply_webhook_once(payments, "psp-a", body, sig) == "moved_to_paid"
    assert await operator.balance(player) == 6_000
    assert [t[1] for t in await transitions(pool, created["id"])] == [
        "requested",
        "approved",
        "processing",
        "paid",
    ]
    check = await operator.call("GET", "/v1/ledger/check", expect=200)
    assert check == {"ok": True}


async def test_failed_withdrawal_releases_the_hold(
    payments: Payments, operator: Operator, psp_a: ScriptedPsp
) -> None:
    player = await operator.player(10_000)
    psp_a.script = [Initiated("psp-a-y", "pending")]
    created = await payments.create_withdrawal(
        PaymentRequest(player, 4_000, "EUR", "card"), K + "w-2"
    )
    body, sig = webhook(created, "failed", psp_payment_id="psp-a-y")
    assert await apply_webhook_once(payments, "psp-a", body, sig) == "moved_to_failed"
    assert await operator.balance(player) == 10_000
    paid_body, paid_sig = webhook(created, "succeeded", psp_payment_id="psp-a-y")
    # A final failure is final: a later "succeeded" moves no money, and since the PSP would
    # then have paid out funds already given back, it is flagged for an operator.
    outcome = await apply_webhook_once(payments, "psp-a", paid_body, paid_sig)
    assert outcome == "refused_paid_after_release"
    assert await operator.balance(player) == 10_000


async def test_large_withdrawal_is_held_for_review(
    payments: Payments, operator: Operator, psp_a: ScriptedPsp
) -> None:
    player = await operator.player(100_000)
    held = await payments.create_withdrawal(
        PaymentRequest(player, 60_000, "EUR", "card"), K + "w-3"
    )
    assert held["status"] == "held" and psp_a.calls == []
    assert await operator.balance(player) == 40_000
    rejected = await payments.decide(held["id"], False, Actor("apikey:test"))
    assert rejected["status"] == "rejected"
    assert await operator.balance(player) == 100_000
    with pytest.raises(InvalidRequest):
        await payments.decide(held["id"], True, Actor("apikey:test"))  # rejected is final


async def test_approved_held_withdrawal_is_paid_out(
    payments: Payments, operator: Operator, psp_a: ScriptedPsp
) -> None:
    player = await operator.player(100_000)
    held = await payments.create_withdrawal(
        PaymentRequest(player, 60_000, "EUR", "card"), K + "w-4"
    )
    psp_a.script = [Initiated("psp-a-z", "pending")]
    approved = await payments.decide(held["id"], True, Actor("apikey:test"))
    assert approved["status"] == "processing"
    assert await operator.balance(player) == 40_000


async def test_withdrawal_refusals_and_idempotency(
    payments: Payments, operator: Operator, psp_a: ScriptedPsp
) -> None:
    player = await operator.player(1_000)
    with pytest.raises(InvalidRequest):
        await payments.create_withdrawal(PaymentRequest(player, 1_001, "EUR", "card"), K + "w-5")
    first = await payments.create_withdrawal(PaymentRequest(player, 600, "EUR", "card"), K + "w-6")
    again = await payments.create_withdrawal(PaymentRequest(player, 600, "EUR", "card"), K + "w-6")
    assert again == first and await operator.balance(player) == 400
    with pytest.raises(IdempotencyConflict):
        await payments.create_withdrawal(PaymentRequest(player, 601, "EUR", "card"), K + "w-6")


async def test_concurrent_withdrawals_never_overdraw(
    payments: Payments, operator: Operator
) -> None:
    player = await operator.player(1_000)
    results = await asyncio.gather(
        *(
            payments.create_withdrawal(PaymentRequest(player, 300, "EUR", "card"), K + f"cw-{i}")
            for i in range(6)
        ),
        return_exceptions=True,
    )
    ok = [r for r in results if isinstance(r, dict)]
    assert len(ok) == 3 and await operator.balance(player) == 100


async def test_illegal_transitions_are_refused(
    payments: Payments, operator: Operator, pool: asyncpg.Pool
) -> None:
    player = await operator.player()
    created = await payments.create_deposit(deposit(player), K + "il-1")
    for target in ("paid", "held", "requested", "awaiting_method"):
        assert (
            await pool.fetchval(
                "SELECT payment_transition($1, $2, 'operator')", created["id"], target
            )
            is None
        )
    assert (
        await pool.fetchval("SELECT payment_transition($1, 'expired', 'expiry')", created["id"])
        == "expired"
    )
    assert (
        await pool.fetchval(
            "SELECT payment_transition($1, 'succeeded', 'psp_webhook')", created["id"]
        )
        is None
    )
    assert await operator.balance(player) == 0
    with pytest.raises(asyncpg.RestrictViolationError):
        await pool.execute("DELETE FROM payment_transitions WHERE false")


async def test_blocked_players_cannot_deposit_but_can_withdraw(
    payments: Payments, operator: Operator, psp_a: ScriptedPsp
) -> None:
    player = await operator.player(5_000)
    for status in ("blocked", "self_excluded"):
        await operator.call("PUT", f"/v1/players/{player}/status", {"status": status}, expect=200)
        with pytest.raises(PlayerLimitExceeded, match=status):
            await payments.create_deposit(deposit(player), K + secrets.token_hex(4))
    psp_a.script = [Initiated("psp-a-blocked", "pending")]
    out = await payments.create_withdrawal(
        PaymentRequest(player, 5_000, "EUR", "card"), K + secrets.token_hex(4)
    )
    assert out["status"] == "processing" and await operator.balance(player) == 0


async def test_approval_needs_a_route_first(
    pool: asyncpg.Pool, operator: Operator, psp_a: ScriptedPsp
) -> None:
    """With no route for the method any more, approving is refused and the withdrawal stays
    held, instead of approved with its funds held and nowhere to go."""
    payments = Payments(
        pool, Queries.load(), [psp_a], webhook_base="https://w/v1/psp", review_threshold=100
    )
    player = await operator.player(1_000)
    held = await payments.create_withdrawal(
        PaymentRequest(player, 500, "EUR", "card"), K + secrets.token_hex(4)
    )
    payments.psps = []
    with pytest.raises(MethodUnavailable):
        await payments.decide(held["id"], True, Actor("apikey:test"))
    assert (await payments.get("withdrawal", held["id"]))["status"] == "held"
    rejected = await payments.decide(held["id"], False, Actor("apikey:test"))
    assert rejected["status"] == "rejected" and await operator.balance(player) == 1_000


async def test_a_payout_whose_outcome_is_unknown_never_fails_over(
    pool: asyncpg.Pool, operator: Operator
) -> None:
    """Two timeouts at route a: it may have paid. The withdrawal is not sent to route b (that
    could pay twice) and not failed (that would release funds the PSP may have paid out): it
    stays approved, held and flagged, and the PSP's late webhook still settles it."""
    a = ScriptedPsp("psp-a", [timeout(), timeout()])
    b = ScriptedPsp("psp-b")
    payments = Payments(pool, Queries.load(), [a, b], webhook_base="https://w/v1/psp")
    player = await operator.player(5_000)
    with pytest.raises(RouteDegraded, match="stays approved"):
        await payments.create_withdrawal(
            PaymentRequest(player, 2_000, "EUR", "card"), K + secrets.token_hex(4)
        )
    row = await pool.fetchrow("SELECT * FROM payments WHERE player_id = $1", player)
    assert (row["status"], row["psp"], row["flagged"]) == (
        "approved",
        "psp-a",
        "payout_outcome_unknown",
    )
    assert len(a.calls) == 2 and b.calls == []
    assert await operator.balance(player) == 3_000
    body, sig = webhook(
        {"id": row["id"], "amount": 2_000, "currency": "EUR"},
        "succeeded",
        psp_payment_id="psp-a-late",
    )
    assert await apply_webhook_once(payments, "psp-a", body, sig) == "moved_to_paid"
    assert await operator.balance(player) == 3_000


async def test_a_timeout_answered_on_the_second_ask_is_one_payment(
    pool: asyncpg.Pool, operator: Operator
) -> None:
    a = ScriptedPsp("psp-a", [timeout()])
    b = ScriptedPsp("psp-b")
    payments = Payments(pool, Queries.load(), [a, b], webhook_base="https://w/v1/psp")
    player = await operator.player()
    created = await payments.create_deposit(deposit(player), K + secrets.token_hex(4))
    assert created["redirect_url"] and len(a.calls) == 2 and b.calls == []


async def test_a_deposit_fails_over_after_repeated_timeouts(
    pool: asyncpg.Pool, operator: Operator
) -> None:
    """An orphaned deposit at route a needs the player's action and moves nothing: failing over
    is safe for deposits."""
    a = ScriptedPsp("psp-a", [timeout(), timeout()])
    b = ScriptedPsp("psp-b")
    payments = Payments(pool, Queries.load(), [a, b], webhook_base="https://w/v1/psp")
    player = await operator.player()
    created = await payments.create_deposit(deposit(player), K + secrets.token_hex(4))
    assert await pool.fetchval("SELECT psp FROM payments WHERE id = $1", created["id"]) == "psp-b"


async def test_a_repeated_key_gets_its_first_answer_even_when_checks_changed(
    payments: Payments, operator: Operator
) -> None:
    """A retry is not a new request: the deposit limit filled since, and the player was
    blocked, but the same key and body still get the first answer."""
    player = await operator.player()
    await operator.call(
        "PUT", f"/v1/players/{player}/limits", {"deposit": {"daily": 2_000}}, expect=200
    )
    first = await payments.create_deposit(deposit(player, 2_000), K + "rep-1")
    await operator.call("PUT", f"/v1/players/{player}/status", {"status": "blocked"}, expect=200)
    assert await payments.create_deposit(deposit(player, 2_000), K + "rep-1") == first
    with pytest.raises(PlayerLimitExceeded):
        await payments.create_deposit(deposit(player, 2_000), K + "rep-2")


async def test_every_edge_of_both_state_machines_moves_the_right_money(
    pool: asyncpg.Pool, operator: Operator
) -> None:
    """Each allowed edge, applied from its from-status: the transition is recorded, and the
    player's balance moves only where the edge moves money. Every other pair is refused."""
    edges = await pool.fetch("SELECT kind, from_status, to_status FROM payment_state_edges")
    statuses = {
        "deposit": ["awaiting_method", "processing", "succeeded", "failed", "expired"],
        "withdrawal": ["requested", "held", "approved", "processing", "paid", "failed", "rejected"],
    }
    allowed = {(e["kind"], e["from_status"], e["to_status"]) for e in edges}
    money = {
        ("deposit", "succeeded"): 1_000,
        ("withdrawal", "failed"): 1_000,
        ("withdrawal", "rejected"): 1_000,
    }
    for kind, states in statuses.items():
        for source in states:
            for target in states:
                player = await operator.player(5_000)
                payment_id = await _payment_in(pool, kind, player, source)
                before = await operator.balance(player)
                moved = await pool.fetchval(
                    "SELECT payment_transition($1, $2, 'operator')", payment_id, target
                )
                if (kind, source, target) not in allowed:
                    assert moved is None, (kind, source, target)
                    assert await operator.balance(player) == before
                    continue
                assert moved == target, (kind, source, target)
                expected = before + money.get((kind, target), 0)
                assert await operator.balance(player) == expected, (kind, source, target)
    assert await operator.call("GET", "/v1/ledger/check", expect=200) == {"ok": True}


async def _payment_in(pool: asyncpg.Pool, kind: str, player: str, status: str) -> str:
    """A payment of 1,000 in ``status``; a withdrawal with its funds held, as creation does."""
    key = K + secrets.token_hex(6)
    if kind == "withdrawal":
        row = await pool.fetchrow(
            "SELECT * FROM payment_create_withdrawal($1, $2, 1000, 'EUR', 'card', NULL, '{}', "
            "$3, '\\x00', now() + interval '1 hour')",
            "wdr_" + secrets.token_hex(8),
            player,
            key,
        )
        payment_id: str = row["payment_id"]
    else:
        payment_id = "dep_" + secrets.token_hex(8)
        await pool.execute(
            "INSERT INTO payments (id, kind, player_id, amount, currency, method, status, "
            "idempotency_key, request_hash, expires_at) VALUES ($1, 'deposit', $2, 1000, 'EUR', "
            "'card', 'awaiting_method', $3, '\\x00', now() + interval '1 hour')",
            payment_id,
            player,
            key,
        )
    # Setting up the from-status directly: the state machine is what is under test.
    await pool.execute("UPDATE payments SET status = $2 WHERE id = $1", payment_id, status)
    return payment_id
