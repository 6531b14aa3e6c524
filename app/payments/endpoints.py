"""HTTP for payments: deposits and withdrawals (operator API keys, by role) and PSP webhooks
(authenticated by their signature instead)."""

from __future__ import annotations

import logging
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.audit import audit
from app.operator.endpoints import Call, route
from app.payments import outbox, signing
from app.payments.psp import MalformedPspData, PspError
from app.payments.reconciliation import reconcile, route_named
from app.payments.service import PaymentRequest, apply_webhook_once
from app.seamless.events import MAX_AMOUNT
from app.state import wallet
from app.web import http, pagination
from app.web.auth import MONEY, PAYMENTS, PLAYER_ADMIN, READ
from app.web.errors import AuthenticationFailed, InvalidRequest, NotFound, RouteDegraded
from app.web.idempotency import required_key

log = logging.getLogger(__name__)
MAX_REFERENCE = 128
COUNTRY = re.compile(r"[A-Z]{2}")


async def _payment_request(request: Request) -> PaymentRequest:
    data = await http.read_json(request)
    reference = data.get("reference")
    if reference is not None and (
        not isinstance(reference, str) or not 1 <= len(reference) <= MAX_REFERENCE
    ):
        raise InvalidRequest(
            f"reference must be 1 to {MAX_REFERENCE} characters", field="reference"
        )
    metadata: Any = data.get("metadata", {})
    if not isinstance(metadata, dict):
        raise InvalidRequest("metadata must be an object", field="metadata")
    country = metadata.get("country")
    if country is not None and (not isinstance(country, str) or not COUNTRY.fullmatch(country)):
        raise InvalidRequest(
            "metadata.country must be an ISO 3166 alpha-2 code like IN", field="metadata.country"
        )
    return PaymentRequest(
        player_id=http.identifier(data, "player_id"),
        amount=http.integer(data, "amount", minimum=1, maximum=MAX_AMOUNT),
        currency=http.currency(data),
        method=http.identifier(data, "method"),
        reference=reference,
        metadata=metadata,
    )


def _payment_id(request: Request) -> str:
    return http.identifier(dict(request.path_params), "payment_id")


@route("POST", "/v1/deposits", PAYMENTS, "create deposits")
async def create_deposit(request: Request, c: Call) -> Response:
    key = required_key(request)
    req = await _payment_request(request)
    return http.json_response(await c.w.payments.create_deposit(req, key), 201)


@route("GET", "/v1/deposits/{payment_id}", READ, "read deposits")
async def get_deposit(request: Request, c: Call) -> Response:
    return http.json_response(await c.w.payments.get("deposit", _payment_id(request)))


@route("POST", "/v1/withdrawals", PAYMENTS, "create withdrawals")
async def create_withdrawal(request: Request, c: Call) -> Response:
    key = required_key(request)
    req = await _payment_request(request)
    return http.json_response(await c.w.payments.create_withdrawal(req, key), 201)


@route("GET", "/v1/withdrawals/{payment_id}", READ, "read withdrawals")
async def get_withdrawal(request: Request, c: Call) -> Response:
    return http.json_response(await c.w.payments.get("withdrawal", _payment_id(request)))


@route("GET", "/v1/withdrawals", READ, "read withdrawals")
async def list_withdrawals(request: Request, c: Call) -> Response:
    """``?attention=true``: withdrawals flagged for an operator (a payout whose outcome the PSP
    has not told, an event that did not match), newest first."""
    if request.query_params.get("attention") != "true":
        raise InvalidRequest(
            "attention=true is required: the withdrawals needing an operator", field="attention"
        )
    size, after = pagination.limit(request), pagination.cursor(request, 2)
    return http.json_response(await c.w.payments.needing_attention(size, after))


@route(
    "POST",
    "/v1/withdrawals/{payment_id}/approve",
    MONEY,
    "decide held withdrawals",
    idempotency="optional",
)
async def approve_withdrawal(request: Request, c: Call) -> Response:
    return http.json_response(await c.w.payments.decide(_payment_id(request), True, c.actor.name))


@route(
    "POST",
    "/v1/withdrawals/{payment_id}/reject",
    MONEY,
    "decide held withdrawals",
    idempotency="optional",
)
async def reject_withdrawal(request: Request, c: Call) -> Response:
    return http.json_response(await c.w.payments.decide(_payment_id(request), False, c.actor.name))


@route(
    "POST",
    "/v1/withdrawals/{payment_id}/resolve",
    MONEY,
    "decide held withdrawals",
    idempotency="required",
)
async def resolve_withdrawal(request: Request, c: Call) -> Response:
    """``{"outcome": "paid" | "failed", "reason"}``: settle a sent withdrawal whose PSP has not
    reported, after checking with that PSP; audited (contract 3 [1.1])."""
    data = await http.read_json(request)
    outcome = data.get("outcome")
    if outcome not in ("paid", "failed"):
        raise InvalidRequest("outcome must be paid or failed", field="outcome")
    reason = http.text(data, "reason", max_length=500)
    return http.json_response(
        await c.w.payments.resolve(_payment_id(request), outcome, reason, c.actor)
    )


async def psp_webhook(request: Request) -> Response:
    """A PSP's event: 200 once applied (or already applied, or ignored as out of order); 401 and
    no change when the signature does not verify; 400 and no change when a field is not of the
    documented type (naming it); 404 for a payment we do not know, so the PSP retries."""
    w = wallet(request)
    psp = http.identifier(dict(request.path_params), "psp")
    try:
        body = await http.read_body(request, http.MAX_JSON_BYTES)
    except http.BodyTooLarge as exc:
        raise InvalidRequest(str(exc)) from None
    try:
        outcome = await apply_webhook_once(
            w.payments, psp, body, request.headers.get("x-signature")
        )
    except signing.SignatureError as exc:
        log.warning("psp %s webhook refused: signature %s", psp, exc.reason)
        raise AuthenticationFailed(f"X-Signature does not verify ({exc.reason})") from None
    except MalformedPspData as exc:
        # Parsed before anything is read or written: a refused event leaves no trace but the log.
        log.warning("psp %s webhook refused: %s", psp, exc)
        raise InvalidRequest(
            f"the event is not one this PSP sends: {exc}", field=exc.field
        ) from None
    return http.json_response({"outcome": outcome})


routes = [Route("/v1/psp/{psp}/webhook", psp_webhook, methods=["POST"])]


EVENT_STATUSES = ("pending", "delivered", "dead")


@route("GET", "/v1/events", READ, "read operator events")
async def list_events(request: Request, c: Call) -> Response:
    """Events to the operator's platform, newest first; ``?status=pending|delivered|dead``."""
    status = request.query_params.get("status")
    if status is not None and status not in EVENT_STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(EVENT_STATUSES)}", field="status")
    payment_id = request.query_params.get("payment_id")
    if payment_id is not None:
        payment_id = http.identifier({"payment_id": payment_id}, "payment_id")
    size, after = pagination.limit(request), pagination.cursor(request, 2)
    at, last_id = (pagination.cursor_time(after[0]), str(after[1])) if after else (None, None)
    rows = await c.conn.fetch(c.w.queries.events_page, status, payment_id, at, last_id, size + 1)
    return http.json_response(
        pagination.page(
            rows, size, lambda r: [r["created_at"].isoformat(), r["id"]], outbox.event_view
        )
    )


@route(
    "POST",
    "/v1/events/{event_id}/replay",
    PLAYER_ADMIN,
    "replay operator events",
    idempotency="optional",
)
async def replay_event(request: Request, c: Call) -> Response:
    """Send an event again now, whatever its state; it carries ``X-Wallet-Replay: true``.
    A replayed dead letter gets one attempt, and is a dead letter again if that fails."""
    event_id = http.identifier(dict(request.path_params), "event_id")
    async with c.conn.transaction():
        before = await c.conn.fetchrow(c.w.queries.event_by_id, event_id)
        if before is None or not await outbox.replay(c.conn, c.w.queries, event_id):
            raise NotFound(f"event {event_id!r} not found")
        after = outbox.event_view(await c.conn.fetchrow(c.w.queries.event_by_id, event_id))
        await audit(
            c.conn,
            c.w.queries,
            c.actor,
            "event.replay",
            f"event:{event_id}",
            {"status": outbox.event_view(before)["status"]},
            {"status": after["status"]},
        )
    return http.json_response(after)


@route("GET", "/v1/reconciliation", READ, "read reconciliation reports")
async def reconciliation(request: Request, c: Call) -> Response:
    """``?psp=NAME&date=YYYY-MM-DD`` (default yesterday, UTC): the PSP's settlement report
    matched against the ledger (see docs/payments.md)."""
    psp_name = request.query_params.get("psp")
    if psp_name is None:
        raise InvalidRequest("psp is required: a route name from WALLET_PSPS", field="psp")
    psp = route_named(c.w.payments.psps, http.identifier({"psp": psp_name}, "psp"))
    raw = request.query_params.get("date")
    try:
        day = date.fromisoformat(raw) if raw else datetime.now(UTC).date() - timedelta(days=1)
    except ValueError:
        raise InvalidRequest("date must be YYYY-MM-DD", field="date") from None
    try:
        report = await reconcile(c.conn, c.w.queries, psp, day)
    except PspError as exc:
        raise RouteDegraded(f"the PSP's settlement report is unavailable: {exc.code}") from None
    return http.json_response(report)
