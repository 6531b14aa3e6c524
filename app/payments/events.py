"""Events to the operator's platform, as the API lists and replays them, with their delivery
state. What is delivered is each event's ``payload`` (:class:`~app.payments.outbox.
OperatorEventPayload`); :mod:`app.payments.outbox` delivers it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import asyncpg
from pydantic import ConfigDict, Field
from pydantic.config import JsonDict

from app.audit import Actor, audit
from app.db import Queries
from app.fields import Identifier, OneOf, Time
from app.payments import outbox
from app.payments.models import PAYMENT_ID
from app.payments.outbox import EVENT_ID, EVENT_TYPES, OperatorEventPayload
from app.web import pagination
from app.web.auth import PLAYER_ADMIN, READ
from app.web.errors import NotFound
from app.web.idempotency import IDEMPOTENT_ACTION
from app.web.messages import Answer, Page
from app.web.routing import Api, Call

EVENT_STATUSES = ("pending", "delivered", "dead")
OPERATOR_WEBHOOK = "operatorEvent"  # the delivery's name under the document's `webhooks`
DELIVERY_TIMEOUT = outbox.TIMEOUT
_HOURS = round(outbox.RETRY_WINDOW / 3600)
DELIVERY = f"""\
**Delivery.** With WALLET_OPERATOR_WEBHOOK_URL set (it needs WALLET_OPERATOR_WEBHOOK_SECRET), \
each event's `payload` is POSTed there as JSON (the `{OPERATOR_WEBHOOK}` webhook of this \
document), signed like PSP webhooks under WALLET_OPERATOR_WEBHOOK_SECRET: \
`X-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of the bytes "{{t}}." followed by the raw \
body>`, `t` being the time of each attempt. Without a URL, events stay `pending`.

**At least once.** A 2xx answer within {DELIVERY_TIMEOUT:g} s delivers the event; the same event \
may still come more than once, so deduplicate by its `id`. Anything else (another status, a \
timeout, a connection error: see `last_error`) is retried with exponential backoff and ±10 % \
jitter: {outbox.BASE_DELAY:g} s after the first attempt, doubling, capped at \
{outbox.MAX_DELAY / 3600:g} h, {outbox.MAX_ATTEMPTS} attempts in all, about {_HOURS} h. Then the \
event is `dead`, a dead letter, until replayed. An event being retried may arrive after a later \
event of the same payment.

**Replay.** `POST /v1/events/{{event_id}}/replay` sends an event again; every delivery of an \
event that was replayed carries `X-Wallet-Replay: true`."""

api = Api("events", path_params={"event_id": "the event's id (evt_...)"})


def _delivery_by_status(schema: JsonDict) -> None:
    null: JsonDict = {"type": "null"}
    when: JsonDict = {"type": "string"}
    schema["allOf"] = [
        {
            "if": {"properties": {"status": {"const": status}}},
            "then": {"properties": {"delivered_at": delivered, "dead_at": dead}},
        }
        for status, delivered, dead in (
            ("pending", null, null),
            ("delivered", when, null),
            ("dead", null, when),
        )
    ]


class OperatorEvent(Answer):
    """An event to the operator's platform, with its delivery state."""

    model_config = ConfigDict(json_schema_extra=_delivery_by_status)

    id: str = Field(pattern=EVENT_ID, description="evt_ and 32 hex digits")
    type: Annotated[str, OneOf.of(EVENT_TYPES)]
    payment_id: str = Field(pattern=PAYMENT_ID, description="the deposit or withdrawal")
    payload: OperatorEventPayload
    created_at: Time
    attempts: int = Field(
        ge=0, description="delivery attempts so far, replays included (never reset)"
    )
    next_attempt_at: Time = Field(
        description="while pending, when the next attempt is due (RFC 3339, UTC); "
        "meaningless once delivered or dead"
    )
    delivered_at: Time | None = Field(description="when a 2xx acknowledged it")
    dead_at: Time | None = Field(description="when its last attempt failed")
    last_error: str | None = Field(
        description="the last failed attempt's error, like `HTTP 503` or `ConnectTimeout: ...`"
    )
    replays: int = Field(ge=0, description="times replayed")
    status: Annotated[str, OneOf.of(EVENT_STATUSES)] = Field(
        description="pending: waiting for its first attempt, a retry or a replayed delivery; "
        "delivered: acknowledged; dead: a dead letter"
    )

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> OperatorEvent:
        """A row of ``events_page`` / ``event_by_id`` (every column but the status, derived)."""
        return cls(**row, status=status_of(row))


def status_of(row: Mapping[str, Any]) -> str:
    return "delivered" if row["delivered_at"] else "dead" if row["dead_at"] else "pending"


class OperatorEventPage(Page[OperatorEvent]):
    """A page of OperatorEvent objects, keyset-paged."""


class EventQuery(pagination.PageQuery):
    status: Annotated[str, OneOf.of(EVENT_STATUSES)] | None = Field(
        None, description="only the events in this delivery state (400 on `status` otherwise)"
    )
    payment_id: Identifier | None = Field(
        None,
        description="only the events of this deposit or withdrawal (400 on `payment_id` when "
        "malformed; an unknown payment gives an empty page)",
    )


@api.get(
    "/v1/events",
    summary="Events to the operator's platform, with their delivery state, newest first",
    roles=READ,
    query=EventQuery,
    answers=[(200, OperatorEventPage, "A page of events")],
    errors=(400,),
    description="A deposit or a withdrawal records one event when it is created and one at "
    "each status change, of type `<kind>.<status>` (like `deposit.awaiting_method`, "
    "`deposit.succeeded`, `withdrawal.requested`, `withdrawal.paid`), in the same "
    "transaction as the change: none is lost, none is invented. `payload` is the body as "
    "delivered. Newest first, by `created_at` then `id`.\n\n"
    f"{DELIVERY}\n\n"
    "400 on `status`, `payment_id`, `limit` or `cursor`.",
    operation_id="listOperatorEvents",
)
async def list_events(c: Call, query: EventQuery) -> OperatorEventPage:
    after = pagination.decode(query.cursor, 2)
    at, last_id = (pagination.cursor_time(after[0]), str(after[1])) if after else (None, None)
    rows = await c.conn.fetch(
        *c.w.queries.events_page(
            status=query.status,
            payment_id=query.payment_id,
            cursor_at=at,
            cursor_id=last_id,
            limit=query.limit + 1,
        )
    )
    shown, next_cursor = pagination.window(
        rows, query.limit, lambda r: [r["created_at"].isoformat(), r["id"]]
    )
    return OperatorEventPage(data=[OperatorEvent.of(r) for r in shown], next_cursor=next_cursor)


@api.post(
    "/v1/events/{event_id}/replay",
    summary="Send an event to the operator's platform again",
    roles=PLAYER_ADMIN,
    answers=[(200, OperatorEvent, "The event, `pending` again, `replays` counted")],
    errors=(400, 404, 409),
    idempotency="optional",
    description="Queues the event for delivery at once, whatever its state (usually `dead` "
    "or `delivered`; a `pending` one is just due now): it is `pending`, `replays` goes up by "
    "one, and this and every later delivery of it carries `X-Wallet-Replay: true`. "
    "`attempts` is not reset, so a replayed dead letter gets one attempt (it is `dead` again "
    "if that fails), and a replayed delivered event the rest of its "
    f"{outbox.MAX_ATTEMPTS} attempts.\n\n"
    f"{DELIVERY}\n\n"
    "404 for an unknown event; 400 on `event_id` when malformed." + IDEMPOTENT_ACTION,
    operation_id="replayOperatorEvent",
)
async def replay_event(c: Call, event_id: str) -> OperatorEvent:
    """Send an event again now, whatever its state; it carries ``X-Wallet-Replay: true``.
    A replayed dead letter gets one attempt, and is a dead letter again if that fails."""
    return await replay(c.conn, c.w.queries, event_id, c.actor)


async def replay(
    conn: asyncpg.Connection, q: Queries, event_id: str, actor: Actor
) -> OperatorEvent:
    """:func:`replay_event`'s rule, audited as ``actor`` (``wallet events replay`` calls it)."""
    async with conn.transaction():
        before = await conn.fetchrow(*q.event_by_id(id=event_id))
        if before is None or not await outbox.replay(conn, q, event_id):
            raise NotFound(f"event {event_id!r} not found")
        after = OperatorEvent.of(await conn.fetchrow(*q.event_by_id(id=event_id)))
        await audit(
            conn,
            q,
            actor,
            "event.replay",
            f"event:{event_id}",
            {"status": status_of(before)},
            {"status": after.status},
        )
    return after


routes = api.routes
