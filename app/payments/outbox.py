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
from typing import Any

import asyncpg
import httpx
import orjson

from app.db import CONNECTION_ERRORS, Queries
from app.operator.views import record
from app.payments import signing

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 15
BASE_DELAY = 30.0
MAX_DELAY = 4 * 3600.0
LEASE_SECONDS = 120.0


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
        timeout: float = 10.0,
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
            due = await conn.fetch(self.q.claim_due_events, batch, LEASE_SECONDS)
        for event in due:
            error = await self._post(event)
            async with self.pool.acquire() as conn:
                if error is None:
                    await conn.execute(self.q.event_delivered, event["id"])
                    counts["delivered"] += 1
                    continue
                attempts = event["attempts"] + 1
                delay = backoff(attempts) if attempts < MAX_ATTEMPTS else None
                await conn.execute(self.q.event_failed, event["id"], error, delay)
                counts["dead" if delay is None else "retrying"] += 1
                log.warning(
                    "operator event %s not delivered (attempt %d): %s", event["id"], attempts, error
                )
        return counts

    async def _post(self, event: asyncpg.Record) -> str | None:
        """None when the operator acknowledged the event (2xx), else what went wrong."""
        body = orjson.dumps(event["payload"])
        headers = {
            "content-type": "application/json",
            "x-signature": signing.sign(self.secret, body, int(time.time())),
        }
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
    return await conn.fetchval(queries.replay_event, event_id) is not None


def event_view(row: asyncpg.Record) -> dict[str, Any]:
    """An event as the API lists it, with its delivery status."""
    out = record(row)
    out["status"] = "delivered" if row["delivered_at"] else "dead" if row["dead_at"] else "pending"
    return out
