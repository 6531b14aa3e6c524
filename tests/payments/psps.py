"""PSP routes whose answers a test scripts, and the signed webhooks they would send.

The payments tests use them, and so do the operator's and the OpenAPI tests of what payments
answer; a route of the wallet's payments (the ``Psp`` protocol of app/payments/psp.py) without
HTTP.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.payments import signing
from app.payments.psp import Initiated, PspError, PspEvent

SECRET = b"test-webhook-secret"
# Idempotency keys are global per kind, and the test database lives for the whole session.
K = secrets.token_hex(4) + ":"


@dataclass
class ScriptedPsp:
    """A PSP whose answers the test scripts: a list of results or errors, one per call."""

    name: str
    script: list[Initiated | PspError] = field(default_factory=list)
    currencies: frozenset[str] = frozenset({"EUR"})
    methods: frozenset[str] = frozenset({"card"})
    countries: frozenset[str] = frozenset()
    min_amount: int | None = None
    max_amount: int | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def initiate(self, payment: dict[str, Any], webhook_url: str) -> Initiated:
        self.calls.append({"payment": payment["id"], "webhook_url": webhook_url})
        step = (
            self.script.pop(0)
            if self.script
            else Initiated(
                f"{self.name}-{payment['id']}", "requires_action", "https://psp.test/pay"
            )
        )
        if isinstance(step, PspError):
            raise step
        return step

    async def status(self, psp_payment_id: str) -> str:
        return "pending"

    def parse_webhook(self, body: bytes, signature: str | None, now: float) -> PspEvent:
        signing.verify(SECRET, body, signature, now=now)
        data = orjson.loads(body)
        return PspEvent(**data)


def webhook(
    payment: dict[str, Any], status: str, *, event_id: str | None = None, **overrides: Any
) -> tuple[bytes, str]:
    event = {
        "event_id": event_id or "evt_" + secrets.token_hex(6),
        "type": f"payment.{status}",
        "psp_payment_id": f"psp-a-{payment['id']}",
        "reference": payment["id"],
        "amount": payment["amount"],
        "currency": payment["currency"],
        "status": status,
    }
    event.update(overrides)
    body = orjson.dumps(event)
    return body, signing.sign(SECRET, body, int(time.time()))


class SlowPsp(ScriptedPsp):
    """Holds every initiate until released, to make two starts meet."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.release = asyncio.Event()

    async def initiate(self, payment: dict[str, Any], webhook_url: str) -> Initiated:
        self.calls.append({"payment": payment["id"], "webhook_url": webhook_url})
        await self.release.wait()
        return Initiated(f"{self.name}-{payment['id']}", "pending")


def timeout() -> PspError:
    return PspError("timeout", retryable=True, ambiguous=True)
