"""Events to the operator's platform: written with each status change, delivered signed, retried
with backoff, dead-lettered after about a day, listed and replayed."""

from __future__ import annotations

import secrets
import time
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.db import Queries
from app.payments import outbox, signing
from app.payments.psp import Initiated
from app.payments.service import PaymentRequest, Payments, apply_webhook_once
from tests.fixtures.app import Operator
from tests.payments.psps import ScriptedPsp, webhook
from tests.support.events import deposit_with_event

OPERATOR_SECRET = b"operator-events-secret"


class Receiver:
    """The operator's platform: answers with ``status`` and keeps what it received."""

    def __init__(self) -> None:
        self.status = 200
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.app = Starlette(routes=[Route("/events", self.receive, methods=["POST"])])

    async def receive(self, request: Request) -> Response:
        self.received.append((dict(request.headers), await request.body()))
        return Response(status_code=self.status)

    def events_of(self, payment_id: str) -> list[dict[str, Any]]:
        events = [orjson.loads(body) for _, body in self.received]
        return [e for e in events if e["data"]["id"] == payment_id]


@pytest.fixture
async def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
async def box(pool: asyncpg.Pool, receiver: Receiver) -> Any:
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=receiver.app), base_url="http://operator.test"
    )
    box = outbox.Outbox(pool, Queries.load(), http, "http://operator.test/events", OPERATOR_SECRET)
    # Every test shares the database: deliver what earlier tests left due (more than one batch,
    # after the back office's), so that each test's first batch holds its own events.
    for _ in range(100):
        if not sum((await box.deliver_due()).values()):
            break
    receiver.received.clear()
    yield box
    await http.aclose()


async def types_of(pool: asyncpg.Pool, payment_id: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT type FROM operator_events WHERE payment_id = $1 ORDER BY created_at, id", payment_id
    )
    return [r["type"] for r in rows]


async def test_each_status_change_writes_its_event(pool: asyncpg.Pool, operator: Operator) -> None:
    psp = ScriptedPsp("psp-a")
    payments = Payments(pool, Queries.load(), [psp], webhook_base="https://w/v1/psp")
    player = await operator.player(5_000)
    deposit = await payments.create_deposit(
        PaymentRequest(player, 1_000, "EUR", "card"), "ev-" + secrets.token_hex(4)
    )
    body, sig = webhook(deposit, "succeeded")
    await apply_webhook_once(payments, "psp-a", body, sig)
    assert await types_of(pool, deposit["id"]) == ["deposit.awaiting_method", "deposit.succeeded"]
    psp.script = [Initiated("psp-a-w", "pending")]
    withdrawal = await payments.create_withdrawal(
        PaymentRequest(player, 2_000, "EUR", "card"), "ev-" + secrets.token_hex(4)
    )
    body, sig = webhook(withdrawal, "succeeded", psp_payment_id="psp-a-w")
    await apply_webhook_once(payments, "psp-a", body, sig)
    assert await types_of(pool, withdrawal["id"]) == [
        "withdrawal.requested",
        "withdrawal.approved",
        "withdrawal.processing",
        "withdrawal.paid",
    ]


async def test_events_are_delivered_signed(
    pool: asyncpg.Pool, operator: Operator, box: outbox.Outbox, receiver: Receiver
) -> None:
    payments = Payments(
        pool, Queries.load(), [ScriptedPsp("psp-a")], webhook_base="https://w/v1/psp"
    )
    player = await operator.player()
    created = await payments.create_deposit(
        PaymentRequest(player, 1_000, "EUR", "card"), "ev-" + secrets.token_hex(4)
    )
    counts = await box.deliver_due()
    assert counts["delivered"] >= 1
    (event,) = receiver.events_of(created["id"])
    assert event["type"] == "deposit.awaiting_method" and event["id"].startswith("evt_")
    assert event["data"]["amount"] == 1_000 and event["data"]["player_id"] == player
    headers, body = next(
        (h, b) for h, b in receiver.received if orjson.loads(b)["id"] == event["id"]
    )
    signing.verify(OPERATOR_SECRET, body, headers["x-signature"], now=time.time())
    assert "x-wallet-replay" not in headers
    await box.deliver_due()
    assert len(receiver.events_of(created["id"])) == 1  # delivered events are not sent again


async def test_failures_back_off_then_dead_letter_then_replay(
    pool: asyncpg.Pool, operator: Operator, box: outbox.Outbox, receiver: Receiver
) -> None:
    created, event_id = await deposit_with_event(pool, operator)
    receiver.status = 503
    await box.deliver_due()
    row = await pool.fetchrow("SELECT * FROM operator_events WHERE id = $1", event_id)
    assert row["attempts"] == 1 and row["last_error"] == "HTTP 503"
    wait = (row["next_attempt_at"] - row["created_at"]).total_seconds()
    assert 25 < wait < 40  # the first retry after about 30 s
    for _ in range(outbox.MAX_ATTEMPTS - 1):
        await pool.execute(
            "UPDATE operator_events SET next_attempt_at = now() WHERE id = $1", event_id
        )
        await box.deliver_due()
    row = await pool.fetchrow("SELECT * FROM operator_events WHERE id = $1", event_id)
    assert row["attempts"] == outbox.MAX_ATTEMPTS and row["dead_at"] is not None
    dead = await operator.call(
        "GET", f"/v1/events?status=dead&payment_id={created['id']}", expect=200
    )
    assert [e["id"] for e in dead["data"]] == [event_id]
    assert dead["data"][0]["status"] == "dead"
    replayed = await operator.call("POST", f"/v1/events/{event_id}/replay", expect=200)
    assert replayed["status"] == "pending" and replayed["replays"] == 1
    audited = await operator.call("GET", f"/v1/audit?target=event:{event_id}", expect=200)
    assert audited["data"][0]["action"] == "event.replay"
    assert (audited["data"][0]["before"], audited["data"][0]["after"]) == (
        {"status": "dead"},
        {"status": "pending"},
    )
    receiver.status = 204
    await box.deliver_due()
    headers = [h for h, b in receiver.received if orjson.loads(b)["id"] == event_id][-1]
    assert headers["x-wallet-replay"] == "true"
    done = await operator.call("GET", f"/v1/events?payment_id={created['id']}", expect=200)
    assert done["data"][0]["status"] == "delivered"
    await operator.call("POST", "/v1/events/evt_nope/replay", expect=404)
    bad = await operator.call("GET", "/v1/events?status=lost", expect=400)
    assert bad["error"]["field"] == "status"


async def test_a_payload_that_breaks_its_model_is_never_sent(
    pool: asyncpg.Pool, operator: Operator, box: outbox.Outbox, receiver: Receiver
) -> None:
    """The body of a delivery is encoded through OperatorEventPayload: a stored payload that
    does not fit it (a bug, here planted) is a failed attempt that says so, and is not sent."""
    created, event_id = await deposit_with_event(pool, operator)
    planted = "jsonb_set(payload, '{data,amount}', '\"1000\"')"
    await pool.execute(f"UPDATE operator_events SET payload = {planted} WHERE id = $1", event_id)
    try:
        await box.deliver_due()
        row = await pool.fetchrow("SELECT * FROM operator_events WHERE id = $1", event_id)
        assert row["attempts"] == 1 and row["delivered_at"] is None
        assert row["last_error"].startswith("invalid payload"), row["last_error"]
        assert receiver.events_of(created["id"]) == []
    finally:
        # Put the stored payload back, and let it go: it is sent as recorded.
        fixed = "jsonb_set(payload, '{data,amount}', '1000'), next_attempt_at = now()"
        await pool.execute(f"UPDATE operator_events SET payload = {fixed} WHERE id = $1", event_id)
    await box.deliver_due()
    (event,) = receiver.events_of(created["id"])
    assert event["id"] == event_id and event["data"]["amount"] == 1_000


def test_backoff_spreads_attempts_over_about_a_day() -> None:
    total = sum(outbox.backoff(n) for n in range(1, outbox.MAX_ATTEMPTS))
    assert 20 * 3600 < total < 28 * 3600
    assert outbox.backoff(1) < 40 and outbox.backoff(30) <= outbox.MAX_DELAY * 1.1
