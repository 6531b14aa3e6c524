"""Delivering ``deposit.*`` and ``withdrawal.*`` events to the operator's platform.

Events are written by the database in the same transaction as the status change they report
(``operator_events``). This worker leases due events, POSTs each to the operator's URL signed
like PSP webhooks (``X-Signature: t=...,v1=<HMAC-SHA256 of "{t}.{body}">``), and on failure tries
again with exponential backoff and jitter: 30 s, 1 min, 2 min, ... capped at 4 h, 15 attempts,
about 24 h in all. An event still undelivered then is a dead letter: listed by the API and
replayable, and a replay carries ``X-Wallet-Replay: true``.

Delivery is at least once: the operator's platform deduplicates by the event's ``id``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Annotated

import asyncpg
import httpx
import orjson
from pydantic import ConfigDict, Field, ValidationError
from pydantic.config import JsonDict

from app import logs, tracing
from app.db import CONNECTION_ERRORS, Queries
from app.fields import Currency, Identifier, OneOf, PositiveAmount, Timestamp
from app.payments import signing
from app.payments.models import ID_PREFIX, KINDS, PAYMENT_ID, STATUSES
from app.web.messages import Answer

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 15
BASE_DELAY = 30.0
MAX_DELAY = 4 * 3600.0
LEASE_SECONDS = 120.0
TIMEOUT = 10.0  # seconds an operator's platform has to acknowledge a delivery
# The delay after each failed attempt but the last, without jitter: the whole retry window.
RETRY_WINDOW = sum(min(BASE_DELAY * 2 ** (n - 1), MAX_DELAY) for n in range(1, MAX_ATTEMPTS))
# One event when a payment is created and one per status change, typed <kind>.<status>, so every
# status of each state machine is a type.
EVENT_TYPES = tuple(f"{kind}.{status}" for kind, statuses in KINDS.items() for status in statuses)
EVENT_ID = r"^evt_[0-9a-f]{32}$"


def _statuses_by_kind(schema: JsonDict) -> None:
    schema["allOf"] = [
        {
            "if": {"properties": {"kind": {"const": kind}}},
            "then": {
                "properties": {
                    "id": {"pattern": f"^{ID_PREFIX[kind]}_"},
                    "status": {"enum": list(statuses)},
                }
            },
        }
        for kind, statuses in KINDS.items()
    ]


class OperatorEventData(Answer):
    """The payment as it was when the event was recorded (like Payment)."""

    # In the order a delivery's body has them: Postgres jsonb's (shorter keys first), in which
    # operator_event() (sql/functions/payments.sql) stores the payload.
    model_config = ConfigDict(json_schema_extra=_statuses_by_kind)

    id: str = Field(pattern=PAYMENT_ID, description="the payment: dep_... or wdr_...")
    kind: Annotated[str, OneOf.of(KINDS)]
    amount: PositiveAmount
    method: Identifier
    status: Annotated[str, OneOf.of(STATUSES)] = Field(description="the status it moved to")
    currency: Currency
    player_id: Identifier
    reference: str | None = Field(description="yours, as sent when the payment was created")
    failure_code: str | None = Field(description="why it failed, once known")


class OperatorEventPayload(Answer):
    """The body of every delivery to the operator's platform: a deposit or a withdrawal was
    created or changed status. Keys come in the order the wallet stores them; check the
    signature over the raw body."""

    id: str = Field(
        pattern=EVENT_ID,
        description="evt_ and 32 hex digits; the same on every delivery and replay of the "
        "event: deduplicate by it",
    )
    data: OperatorEventData
    type: Annotated[str, OneOf.of(EVENT_TYPES)] = Field(description="`<data.kind>.<data.status>`")
    created: Timestamp = Field(
        description="unix seconds when the event was recorded (not when it was sent)"
    )


def backoff(attempts: int) -> float:
    """Seconds before attempt ``attempts + 1``, with ±10 % jitter so retries do not stampede."""
    delay: float = min(BASE_DELAY * 2 ** (attempts - 1), MAX_DELAY)
    return delay * random.uniform(0.9, 1.1)


class Outbox:
    """Delivers due operator events; run :meth:`deliver_due` or :meth:`run_forever`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        queries: Queries,
        http: httpx.AsyncClient,
        url: str,
        secret: bytes,
        *,
        timeout: float = TIMEOUT,
    ) -> None:
        self.pool = pool
        self.q = queries
        self.http = http
        self.url = url
        self.secret = secret
        self.timeout = timeout

    async def deliver_due(self, batch: int = 50) -> dict[str, int]:
        counts = {"delivered": 0, "retrying": 0, "dead": 0}
        async with self.pool.acquire() as conn:
            due = await conn.fetch(
                *self.q.claim_due_events(limit=batch, lease_seconds=LEASE_SECONDS)
            )
        for event in due:
            # The outcome's record and its log line under the delivery's span: the warning
            # carries the trace_id of the delivery it reports.
            with tracing.span("outbox.deliver", {"wallet.event_id": event["id"]}):
                error = await self._post(event)
                tracing.annotate({"wallet.delivered": error is None})
                counts[await self._record(event, error)] += 1
        return counts

    async def _record(self, event: asyncpg.Record, error: str | None) -> str:
        """Record one delivery's outcome: ``delivered``, ``retrying`` or ``dead``."""
        async with self.pool.acquire() as conn:
            if error is None:
                await conn.execute(*self.q.event_delivered(id=event["id"]))
                return "delivered"
            attempts = event["attempts"] + 1
            delay = backoff(attempts) if attempts < MAX_ATTEMPTS else None
            await conn.execute(
                *self.q.event_failed(id=event["id"], error=error, retry_seconds=delay)
            )
        log.warning(
            "operator event %s not delivered (attempt %d): %s", event["id"], attempts, error
        )
        return "dead" if delay is None else "retrying"

    async def _post(self, event: asyncpg.Record) -> str | None:
        """None when the operator acknowledged the event (2xx), else what went wrong."""
        try:
            # Strictly: a string where an amount should be is a bug to see, not to convert.
            payload = OperatorEventPayload.model_validate(event["payload"], strict=True)
        except ValidationError as exc:
            # A bug, not the operator's: kept as the event's last error, never sent.
            log.error("operator event %s has an invalid payload: %s", event["id"], exc)
            return f"invalid payload: {exc.error_count()} field(s) not as documented"
        body = orjson.dumps(payload.model_dump(mode="json"))
        headers = {
            "content-type": "application/json",
            "x-signature": signing.sign(self.secret, body, int(time.time())),
            # Deliveries are background work: the event's id, unless a request caused this one.
            "x-request-id": logs.current_request_id() or event["id"],
        }
        tracing.inject(headers)
        if event["replays"]:
            headers["x-wallet-replay"] = "true"
        try:
            response = await self.http.post(
                self.url, content=body, headers=headers, timeout=self.timeout
            )
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:500]
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"

    async def run_forever(self, interval: float) -> None:
        while True:
            try:
                await self.deliver_due()
            except CONNECTION_ERRORS as exc:
                log.warning("operator event delivery failed this round: %s", exc)
            await asyncio.sleep(interval)


async def replay(conn: asyncpg.Connection, queries: Queries, event_id: str) -> bool:
    """Make an event due now, whatever its state; False when there is no such event. Attempts
    are not reset: a replayed dead letter gets one try before it is dead again."""
    return await conn.fetchval(*queries.replay_event(id=event_id)) is not None
