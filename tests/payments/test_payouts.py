"""Payouts that went out to a PSP stay with that PSP (contract 3 [1.1]), starts of one payment
never overlap, and a payout whose outcome is unknown is resolved by that PSP or by an operator.

Issue 12, defect 1: route A accepted a payout and answered after the wallet's timeout, then 503;
a retry with the same Idempotency-Key half a minute later was sent to route B and paid there, and
route A's own webhook was then refused: two payouts for one debit, and funds that no action could
release."""

from __future__ import annotations

import asyncio
import secrets

import asyncpg
import pytest

from app.audit import Actor
from app.db import Queries
from app.payments.psp import Initiated, PspError
from app.payments.service import PaymentRequest, Payments, apply_webhook_once
from app.web.errors import IdempotencyConflict, InvalidRequest, RouteDegraded
from tests.fixtures.app import Operator
from tests.payments.fake_psps import FakePsp
from tests.payments.psps import K, ScriptedPsp, SlowPsp, timeout, webhook

ACTOR = Actor("apikey:test")


def payout(player_id: str, amount: int = 2_000) -> PaymentRequest:
    return PaymentRequest(player_id, amount, "EUR", "card")


def two_routes(pool: asyncpg.Pool, a: ScriptedPsp, b: ScriptedPsp) -> Payments:
    return Payments(pool, Queries.load(), [a, b], webhook_base="https://w/v1/psp")


async def test_a_retry_after_an_unknown_outcome_never_goes_to_another_route(
    pool: asyncpg.Pool, operator: Operator
) -> None:
    a = ScriptedPsp("psp-a", [timeout(), PspError("http_503", retryable=True)])
    b = ScriptedPsp("psp-b")
    payments = two_routes(pool, a, b)
    player = await operator.player(5_000)
    key = K + secrets.token_hex(4)
    with pytest.raises(RouteDegraded):
        await payments.create_withdrawal(payout(player), key)
    assert b.calls == []
    # However long after: the same key gets the same answer, and no PSP is asked again.
    await pool.execute(
        "UPDATE payments SET updated_at = now() - interval '1 hour' WHERE player_id = $1", player
    )
    with pytest.raises(RouteDegraded):
        await payments.create_withdrawal(payout(player), key)
    assert len(a.calls) == 2 and b.calls == []
    row = await pool.fetchrow("SELECT * FROM payments WHERE player_id = $1", player)
    assert (row["status"], row["psp"], row["flagged"]) == (
        "approved",
        "psp-a",
        "payout_outcome_unknown",
    )
    shown = await payments.get("withdrawal", row["id"])
    assert (shown["needs_attention"], shown["attention"]) == (True, "payout_outcome_unknown")
    # Route A's own signed event settles it.
    body, sig = webhook(
        {"id": row["id"], "amount": 2_000, "currency": "EUR"}, "succeeded", psp_payment_id="a-1"
    )
    assert await apply_webhook_once(payments, "psp-a", body, sig) == "moved_to_paid"
    assert await operator.balance(player) == 3_000
    assert (await payments.get("withdrawal", row["id"]))["needs_attention"] is False


async def test_a_payout_fails_over_only_when_the_psp_provably_did_not_act(
    pool: asyncpg.Pool, operator: Operator
) -> None:
    """Connection refused and 429 say the PSP did not take the payout: the next route may. A 5xx
    does not say so."""
    for refusal in (
        PspError("unreachable", retryable=True, not_sent=True),
        PspError("rate_limited", retryable=True, not_sent=True),
    ):
        a, b = ScriptedPsp("psp-a", [refusal]), ScriptedPsp("psp-b")
        player = await operator.player(5_000)
        done = await two_routes(pool, a, b).create_withdrawal(
            payout(player), K + secrets.token_hex(4)
        )
        assert len(b.calls) == 1 and done["status"] != "failed"
        assert await pool.fetchval("SELECT psp FROM payments WHERE id = $1", done["id"]) == "psp-b"
    a = ScriptedPsp("psp-a", [PspError("http_500", retryable=True)] * 2)
    b = ScriptedPsp("psp-b")
    player = await operator.player(5_000)
    with pytest.raises(RouteDegraded):
        await two_routes(pool, a, b).create_withdrawal(payout(player), K + secrets.token_hex(4))
    assert b.calls == [] and await operator.balance(player) == 3_000


async def test_an_unknown_payout_is_resolved_by_an_operator_once(
    pool: asyncpg.Pool, operator: Operator
) -> None:
    for outcome, balance in (("failed", 5_000), ("paid", 3_000)):
        a = ScriptedPsp("psp-a", [timeout(), timeout()])
        payments = two_routes(pool, a, ScriptedPsp("psp-b"))
        player = await operator.player(5_000)
        with pytest.raises(RouteDegraded):
            await payments.create_withdrawal(payout(player), K + secrets.token_hex(4))
        payment_id = await pool.fetchval("SELECT id FROM payments WHERE player_id = $1", player)
        attention = await payments.needing_attention("withdrawal", 100, None)
        assert payment_id in [p["id"] for p in attention["data"]]
        done = await payments.resolve(payment_id, outcome, "checked at psp-a", ACTOR)
        assert (done["status"], done["needs_attention"]) == (outcome, False)
        assert await operator.balance(player) == balance
        with pytest.raises(InvalidRequest, match="cannot be resolved"):
            await payments.resolve(payment_id, "paid", "again", ACTOR)
        assert await operator.balance(player) == balance
        audit = await pool.fetchval(
            "SELECT after FROM audit_log WHERE target = $1 AND action = 'withdrawal.resolve'",
            f"withdrawal:{payment_id}",
        )
        assert audit["status"] == outcome and audit["reason"] == "checked at psp-a"
        assert payment_id not in [
            p["id"] for p in (await payments.needing_attention("withdrawal", 100, None))["data"]
        ]


async def test_two_starts_of_one_payment_never_run_at_once(
    pool: asyncpg.Pool, operator: Operator
) -> None:
    """However long the first start talks to its PSP, a retry with the key is told it is in
    progress (no timer decides that a start must be over)."""
    a = SlowPsp("psp-a")
    payments = two_routes(pool, a, ScriptedPsp("psp-b"))
    player = await operator.player(5_000)
    key = K + secrets.token_hex(4)
    first = asyncio.create_task(payments.create_withdrawal(payout(player), key))
    while not a.calls:
        await asyncio.sleep(0.01)
    await pool.execute(
        "UPDATE payments SET updated_at = now() - interval '1 hour' WHERE player_id = $1", player
    )
    with pytest.raises(IdempotencyConflict, match="in progress"):
        await payments.create_withdrawal(payout(player), key)
    a.release.set()
    answer = await first
    assert answer["status"] == "processing" and len(a.calls) == 1
    assert await payments.create_withdrawal(payout(player), key) == answer


async def test_one_key_for_two_players_at_once_is_one_withdrawal(
    pool: asyncpg.Pool, operator: Operator
) -> None:
    """Issue 12, defect 5: the same Idempotency-Key at once for two players' withdrawals gave a
    500 (a unique violation) in 3 of 5 tries. One effect, and a 409 for the other."""
    payments = two_routes(pool, ScriptedPsp("psp-a"), ScriptedPsp("psp-b"))
    for _ in range(5):
        players = [await operator.player(5_000) for _ in range(4)]
        key = K + secrets.token_hex(4)
        results = await asyncio.gather(
            *(payments.create_withdrawal(payout(p), key) for p in players),
            return_exceptions=True,
        )
        made = [r for r in results if isinstance(r, dict)]
        others = [r for r in results if not isinstance(r, dict)]
        assert len(made) == 1, results
        assert all(isinstance(r, IdempotencyConflict) for r in others), results
        balances = sorted([await operator.balance(p) for p in players])
        assert balances == [3_000, 5_000, 5_000, 5_000]


async def test_a_payout_sent_before_a_crash_is_never_released_on_a_guess(
    pool: asyncpg.Pool, operator: Operator
) -> None:
    """A start dies while its request is at the PSP (psp and sent_at recorded, no answer). The
    retry that takes it over finds that PSP refusing connections: its earlier request may still
    have been paid, so the funds stay held and flagged, and no other route is asked."""
    slow = SlowPsp("psp-a")
    payments = two_routes(pool, slow, ScriptedPsp("psp-b"))
    player = await operator.player(5_000)
    key = K + secrets.token_hex(4)
    dying = asyncio.create_task(payments.create_withdrawal(payout(player), key))
    while not slow.calls:
        await asyncio.sleep(0.01)
    dying.cancel()
    with pytest.raises(asyncio.CancelledError):
        await dying
    refused = ScriptedPsp("psp-a", [PspError("unreachable", retryable=True, not_sent=True)])
    b = ScriptedPsp("psp-b")
    payments.psps = [refused, b]
    with pytest.raises(RouteDegraded):
        await payments.create_withdrawal(payout(player), key)
    row = await pool.fetchrow("SELECT * FROM payments WHERE player_id = $1", player)
    assert (row["status"], row["psp"], row["flagged"]) == (
        "approved",
        "psp-a",
        "payout_outcome_unknown",
    )
    assert len(refused.calls) == 1 and b.calls == []
    assert await operator.balance(player) == 3_000


async def test_a_refusal_on_the_second_ask_does_not_prove_the_first_was_not_taken(
    pool: asyncpg.Pool, operator: Operator
) -> None:
    """Found by tests/payments/test_model.py: a timeout, then a 429 (or a refused connection)
    when asked again. The 429 says the second request was not taken, not the first: the payout
    stays with route a."""
    for refusal in (
        PspError("rate_limited", retryable=True, not_sent=True),
        PspError("unreachable", retryable=True, not_sent=True),
    ):
        a, b = ScriptedPsp("psp-a", [timeout(), refusal]), ScriptedPsp("psp-b")
        player = await operator.player(5_000)
        with pytest.raises(RouteDegraded):
            await two_routes(pool, a, b).create_withdrawal(payout(player), K + secrets.token_hex(4))
        assert len(a.calls) == 2 and b.calls == []
        assert await operator.balance(player) == 3_000


async def test_a_refusal_after_an_ask_that_may_have_been_taken_keeps_the_funds_held(
    pool: asyncpg.Pool, operator: Operator
) -> None:
    """Found in review: a timeout, then a 4xx when asked again (a PSP's "key in use" while the
    first request still runs) failed the payout and released its hold, which the PSP may pay."""
    a = ScriptedPsp("psp-a", [timeout(), PspError("idempotency_key_in_use", retryable=False)])
    b = ScriptedPsp("psp-b")
    player = await operator.player(5_000)
    with pytest.raises(RouteDegraded):
        await two_routes(pool, a, b).create_withdrawal(payout(player), K + secrets.token_hex(4))
    row = await pool.fetchrow("SELECT * FROM payments WHERE player_id = $1", player)
    assert (row["status"], row["flagged"]) == ("approved", "payout_outcome_unknown")
    assert b.calls == [] and await operator.balance(player) == 3_000


async def events_and_postings(pool: asyncpg.Pool, payment_id: str) -> tuple[list[str], list[str]]:
    """The operator events recorded for a payment, and its postings, in order."""
    events = await pool.fetch(
        "SELECT type FROM operator_events WHERE payment_id = $1 ORDER BY created_at, id", payment_id
    )
    postings = await pool.fetch(
        "SELECT kind FROM ledger_transactions WHERE source = '#payment' AND external_id LIKE $1 "
        "ORDER BY id",
        payment_id + ":%",
    )
    return [r["type"] for r in events], [r["kind"] for r in postings]


async def test_a_decline_when_asked_again_after_a_timeout_keeps_the_payout_unknown(
    pool: asyncpg.Pool, operator: Operator
) -> None:
    """Found by tests/payments/test_model.py: route a's first ask timed out before the PSP did
    anything, and asked again under the same key it declined. The wallet cannot tell that
    timeout from one after the PSP acted, and a decline of the second ask "says nothing about
    the first request: the outcome stays unknown" (docs/payments.md, section 4): the payout
    stays with route a, approved, its funds held, until a PSP report or an operator. The model
    expected a failed payout here; the model was wrong."""
    a = FakePsp("psp-a", faults=["timeout_before", "decline"])
    b = FakePsp("psp-b")
    payments = Payments(pool, Queries.load(), [a, b], webhook_base="https://w/v1/psp")
    try:
        player = await operator.player(5_000)
        key = K + secrets.token_hex(4)
        with pytest.raises(RouteDegraded, match="did not answer whether it accepted"):
            await payments.create_withdrawal(payout(player), key)
        payment_id = await pool.fetchval("SELECT id FROM payments WHERE player_id = $1", player)
        assert [(c.psp, c.fault, c.acted) for c in a.calls] == [
            ("psp-a", "timeout_before", False),
            ("psp-a", "decline", False),
        ]
        assert b.calls == [] and a.payments == {} and b.payments == {}
        row = await pool.fetchrow("SELECT * FROM payments WHERE id = $1", payment_id)
        assert (row["status"], row["psp"], row["flagged"], row["failure_code"]) == (
            "approved",
            "psp-a",
            "payout_outcome_unknown",
            None,
        )
        assert await operator.balance(player) == 3_000
        assert await events_and_postings(pool, payment_id) == (
            ["withdrawal.requested", "withdrawal.approved"],
            ["withdrawal_hold"],
        )
        listed = await payments.needing_attention("withdrawal", 100, None)
        assert payment_id in [p["id"] for p in listed["data"]]
        # The 503 is the key's answer: a repeat gets it again and asks no PSP.
        with pytest.raises(RouteDegraded):
            await payments.create_withdrawal(payout(player), key)
        assert len(a.calls) == 2 and b.calls == []
        # An operator who checked with psp-a (it has no payout) gives the funds back, once.
        done = await payments.resolve(payment_id, "failed", "psp-a has no such payout", ACTOR)
        assert (done["status"], done["failure_code"]) == ("failed", "resolved_failed")
        assert await operator.balance(player) == 5_000
        assert await events_and_postings(pool, payment_id) == (
            ["withdrawal.requested", "withdrawal.approved", "withdrawal.failed"],
            ["withdrawal_hold", "withdrawal_release"],
        )
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_decline_after_a_refused_connection_fails_the_payout(
    pool: asyncpg.Pool, operator: Operator
) -> None:
    """The contrast: a refused connection proves route a never saw the payout, so route b may
    have it, and b's decline (its answer to a first ask) is the payout's outcome: failed, the
    hold released, answered with the payment."""
    a = FakePsp("psp-a", faults=["refused"])
    b = FakePsp("psp-b", faults=["decline"])
    payments = Payments(pool, Queries.load(), [a, b], webhook_base="https://w/v1/psp")
    try:
        player = await operator.player(5_000)
        done = await payments.create_withdrawal(payout(player), K + secrets.token_hex(4))
        assert (done["status"], done["failure_code"]) == ("failed", "declined")
        assert [c.fault for c in a.calls] == ["refused"]
        assert [c.fault for c in b.calls] == ["decline"]
        assert await pool.fetchval("SELECT psp FROM payments WHERE id = $1", done["id"]) == "psp-b"
        assert await operator.balance(player) == 5_000
        assert await events_and_postings(pool, done["id"]) == (
            ["withdrawal.requested", "withdrawal.approved", "withdrawal.failed"],
            ["withdrawal_hold", "withdrawal_release"],
        )
    finally:
        await a.aclose()
        await b.aclose()


async def approved_never_sent(pool: asyncpg.Pool, payments: Payments, player: str) -> str:
    """A withdrawal approved by a request that died before its start."""
    payments.review_threshold = 100
    try:
        held = await payments.create_withdrawal(payout(player), K + secrets.token_hex(4))
    finally:
        payments.review_threshold = None
    await pool.execute("SELECT payment_transition($1, 'approved', 'operator')", held["id"])
    payment_id: str = held["id"]
    return payment_id


async def test_an_approved_withdrawal_never_sent_is_sent_by_a_new_approval_or_the_poller(
    pool: asyncpg.Pool, operator: Operator
) -> None:
    """Found in review: approved, then nothing: a second approval was refused (approved cannot
    be approved), the poller asked no PSP, and the funds stayed held unseen."""
    a = ScriptedPsp("psp-a", [Initiated("psp-a-1", "pending"), Initiated("psp-a-2", "pending")])
    payments = two_routes(pool, a, ScriptedPsp("psp-b"))
    player = await operator.player(5_000)
    first = await approved_never_sent(pool, payments, player)
    assert (await payments.decide(first, True, Actor("apikey:test")))["status"] == "processing"
    second = await approved_never_sent(pool, payments, player)
    await pool.execute(
        "UPDATE payments SET updated_at = now() - interval '1 hour' WHERE id = $1", second
    )
    await payments.poll_once(quiet_seconds=60, batch=100_000)
    assert (await payments.get("withdrawal", second))["status"] == "processing"
    assert [c["payment"] for c in a.calls] == [first, second]


async def test_resolve_waits_for_a_start_that_is_talking_to_the_psp(
    pool: asyncpg.Pool, operator: Operator
) -> None:
    slow = SlowPsp("psp-a")
    payments = two_routes(pool, slow, ScriptedPsp("psp-b"))
    player = await operator.player(5_000)
    start = asyncio.create_task(payments.create_withdrawal(payout(player), K + "r" + K))
    while not slow.calls:
        await asyncio.sleep(0.01)
    payment_id = slow.calls[0]["payment"]
    with pytest.raises(IdempotencyConflict, match="right now"):
        await payments.resolve(payment_id, "failed", "too early", ACTOR)
    slow.release.set()
    assert (await start)["status"] == "processing"
    assert await operator.balance(player) == 3_000


async def test_a_failure_reported_after_a_payout_was_settled_is_flagged(
    pool: asyncpg.Pool, operator: Operator
) -> None:
    """Found trying the API from outside: resolved paid, then the PSP's signed payment.failed
    was ignored without a word, while the player stays charged."""
    a = ScriptedPsp("psp-a", [timeout(), timeout()])
    payments = two_routes(pool, a, ScriptedPsp("psp-b"))
    player = await operator.player(5_000)
    with pytest.raises(RouteDegraded):
        await payments.create_withdrawal(payout(player), K + secrets.token_hex(4))
    payment_id = await pool.fetchval("SELECT id FROM payments WHERE player_id = $1", player)
    await payments.resolve(payment_id, "paid", "psp-a said paid", ACTOR)
    body, sig = webhook(
        {"id": payment_id, "amount": 2_000, "currency": "EUR"}, "failed", psp_payment_id="a-9"
    )
    assert await apply_webhook_once(payments, "psp-a", body, sig) == "refused_failed_after_paid"
    shown = await payments.get("withdrawal", payment_id)
    assert (shown["status"], shown["attention"]) == ("paid", "failed_after_paid")
    assert await operator.balance(player) == 3_000
    listed = await payments.needing_attention("withdrawal", 100, None)
    assert payment_id in [p["id"] for p in listed["data"]]


async def test_held_withdrawals_are_listed_as_needing_an_operator(
    pool: asyncpg.Pool, operator: Operator
) -> None:
    payments = two_routes(pool, ScriptedPsp("psp-a"), ScriptedPsp("psp-b"))
    payments.review_threshold = 100
    player = await operator.player(5_000)
    held = await payments.create_withdrawal(payout(player), K + secrets.token_hex(4))
    assert (held["needs_attention"], held["attention"]) == (True, "held_for_review")
    assert held["id"] in [
        p["id"] for p in (await payments.needing_attention("withdrawal", 100, None))["data"]
    ]
    with pytest.raises(InvalidRequest) as refused:
        await payments.resolve(held["id"], "paid", "not sent yet", ACTOR)
    assert refused.value.field == "status"
    rejected = await payments.decide(held["id"], False, Actor("apikey:test"))
    assert (rejected["needs_attention"], rejected["attention"]) == (False, None)
