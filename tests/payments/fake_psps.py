"""Fake PSPs that misbehave on request, for the payments model test and the payments fault tests.

A :class:`FakePsp` is a route of the wallet (it implements the ``Psp`` protocol of
``app/payments/psp.py``), but its HTTP calls go through the wallet's real adapter,
:class:`~app.payments.psp.SandboxPsp`, to a PSP server simulated in this process behind
``httpx.MockTransport``. So the wallet's own code decides what a timeout, a 5xx, a 429 or a
refused connection means; the fake only decides what really happened at the PSP.

The simulated PSP behaves like a real one where it matters for money:

- it dedupes by ``Idempotency-Key``: asking again under the same key never makes a second payout,
  it gives back the first answer (the same key with another body is a 409, and is counted as a
  problem: the wallet never does that);
- every request that reached it is logged (:attr:`FakePsp.calls`), with whether it acted, so a
  test can tell "sent to two PSPs" from "asked one PSP twice";
- its records are the truth (:attr:`FakePsp.payments`, by our reference), and each change of a
  record emits a signed webhook event that the test delivers when and how it likes (late,
  duplicated, out of order, forged).

Faults are scripted per call (:attr:`FakePsp.faults`, consumed in order; empty means ``ok``).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import httpx
import orjson

from app.payments import signing
from app.payments.psp import Initiated, PspError, PspEvent, SandboxPsp, SettlementLine

API_KEY = "fake-psp-key"

# What a create call can meet. The wallet cannot tell the two timeouts apart, nor the two 5xx.
FAULTS = (
    "ok",  # created (or replayed under the same key) and answered
    "decline",  # a fresh payment refused: 422 declined, nothing created
    "refused",  # connection refused before anything was sent: nothing reached the PSP
    "429",  # rate limited: it reached the PSP, which did nothing
    "5xx_before",  # 503 and nothing created
    "5xx_after",  # created, then a 502 from a gateway that lost the answer
    "timeout_before",  # the request timed out on the way: nothing created
    "timeout_after",  # created, then the answer was lost
)
# The only answers that prove the PSP did not act: the wallet may fail over after these.
PROVABLY_NOT_ACTED = frozenset({"refused", "429"})
# Answers the wallet gets; every other fault leaves it not knowing.
ANSWERED = frozenset({"ok", "decline"})
CREATES = frozenset({"ok", "5xx_after", "timeout_after"})

# How the PSP answers a status question: the truth, the status before its last change (a
# replica behind its webhooks), or not at all.
POLL_MODES = ("truth", "stale", "down")

FINAL = frozenset({"succeeded", "failed"})


@dataclass
class Record:
    """A payment as the PSP knows it."""

    psp_payment_id: str
    reference: str
    kind: str  # deposit | payout
    amount: int
    currency: str
    key: str
    body: dict[str, Any]
    status: str  # requires_action | pending | succeeded | failed
    previous: str | None = None  # the status before the last change (what a stale poll says)
    answer: dict[str, Any] = field(default_factory=dict)  # the first answer, replayed under key


@dataclass(frozen=True)
class Call:
    """One create request as it met the PSP (or failed to reach it)."""

    psp: str
    reference: str
    key: str
    fault: str
    acted: bool  # a record exists because of this call (created now, or already)


@dataclass(frozen=True)
class Event:
    """A webhook event as the PSP sends it (sandbox format, docs/sandbox-psp.md)."""

    psp: str
    id: str
    reference: str
    status: str
    body: dict[str, Any]

    def bytes(self) -> bytes:
        return orjson.dumps(self.body)


@dataclass
class FakePsp:
    """One PSP route, simulated. See the module docstring."""

    name: str
    currencies: frozenset[str] = frozenset({"EUR"})
    methods: frozenset[str] = frozenset({"card"})
    countries: frozenset[str] = frozenset()
    min_amount: int | None = None
    max_amount: int | None = None
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    faults: list[str] = field(default_factory=list)
    poll_mode: str = "truth"
    # Answer every second ask under a key (tests/payments/mutants.py, for code that cannot yet
    # keep a payout whose outcome stays unknown).
    reask_answers: bool = False
    # Awaited inside a create call after the PSP acted and before it answers (fault tests).
    on_acted: Callable[[], Awaitable[None]] | None = None
    payments: dict[str, Record] = field(default_factory=dict)  # by our reference
    calls: list[Call] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.http = httpx.AsyncClient(transport=httpx.MockTransport(self._serve))
        self.adapter = SandboxPsp(
            self.name,
            f"http://{self.name}.psp.test",
            API_KEY,
            self.secret,
            self.http,
            currencies=self.currencies,
            methods=self.methods,
        )

    # --- the Psp protocol: the wallet's real adapter, except find() ----------------------------

    async def initiate(self, payment: dict[str, Any], webhook_url: str) -> Initiated:
        return await self.adapter.initiate(payment, webhook_url)

    async def status(self, psp_payment_id: str) -> str:
        return await self.adapter.status(psp_payment_id)

    async def find(self, reference: str) -> tuple[str, str] | None:
        """The PSP's payment for our reference, ``(psp_payment_id, status)``, or None."""
        if self.poll_mode == "down":
            raise PspError("unreachable", retryable=True)
        record = self.payments.get(reference)
        return None if record is None else (record.psp_payment_id, self._reported(record))

    def parse_webhook(self, body: bytes, signature: str | None, now: float) -> PspEvent:
        return self.adapter.parse_webhook(body, signature, now)

    async def settlement(self, day: date) -> list[SettlementLine]:
        return []

    async def aclose(self) -> None:
        await self.http.aclose()

    # --- the PSP's side ------------------------------------------------------------------------

    def decide(self, reference: str, status: str) -> Event:
        """The PSP finishes a payment (``succeeded`` or ``failed``); the webhook it sends.

        An out-of-order ``payment.processing`` event (``pending``, dated before the change) is
        emitted too, as the sandbox's ``out-of-order-webhooks`` scenario does."""
        record = self.payments[reference]
        assert record.status not in FINAL, f"{reference} is final at {self.name}"
        earlier = self._event(record, "pending", created=int(time.time()) - 5)
        record.previous, record.status = record.status, status
        self.events.append(earlier)
        final = self._event(record, status)
        self.events.append(final)
        return final

    def progress(self, reference: str) -> Event:
        """A depositor starts paying: the payment is ``pending`` at the PSP (not final)."""
        record = self.payments[reference]
        assert record.status == "requires_action", record
        record.previous, record.status = record.status, "pending"
        event = self._event(record, "pending")
        self.events.append(event)
        return event

    def claim(self, reference: str, status: str) -> Event:
        """An event about the payment that the PSP never sent (for forged deliveries)."""
        return self._event(self.payments[reference], status)

    def signed(self, event: Event, *, at: float | None = None) -> tuple[bytes, str]:
        body = event.bytes()
        return body, signing.sign(self.secret, body, int(at if at is not None else time.time()))

    def open_records(self) -> list[Record]:
        return [r for r in self.payments.values() if r.status not in FINAL]

    def _reported(self, record: Record) -> str:
        if self.poll_mode == "stale" and record.previous is not None:
            return record.previous
        return record.status

    def _event(self, record: Record, status: str, *, created: int | None = None) -> Event:
        event_id = "evt_" + secrets.token_hex(8)
        data: dict[str, Any] = {
            "psp_payment_id": record.psp_payment_id,
            "reference": record.reference,
            "kind": record.kind,
            "amount": record.amount,
            "currency": record.currency,
            "status": status,
        }
        if status == "failed":
            data["failure_code"] = "declined"
        body = {
            "id": event_id,
            "type": f"payment.{'processing' if status == 'pending' else status}",
            "created": created if created is not None else int(time.time()),
            "data": data,
        }
        return Event(self.name, event_id, record.reference, status, body)

    async def _serve(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return _error(401, "unauthorized")
        if request.method == "GET" and request.url.path.startswith("/v1/payments/"):
            return self._get(request.url.path.removeprefix("/v1/payments/"), request)
        if request.method == "POST" and request.url.path == "/v1/payments":
            return await self._create(request)
        return _error(404, "not_found")

    def _get(self, psp_payment_id: str, request: httpx.Request) -> httpx.Response:
        if self.poll_mode == "down":
            raise httpx.ConnectError("connection refused", request=request)
        for record in self.payments.values():
            if record.psp_payment_id == psp_payment_id:
                return httpx.Response(200, json={**record.answer, "status": self._reported(record)})
        return _error(404, "not_found")

    async def _create(self, request: httpx.Request) -> httpx.Response:
        fault = self.faults.pop(0) if self.faults else "ok"
        body = orjson.loads(request.content)
        key = request.headers["idempotency-key"]
        reference = str(body["reference"])
        if self.reask_answers and any(c.key == key and c.psp == self.name for c in self.calls):
            fault = "ok"
        if fault == "refused":
            self.calls.append(Call(self.name, reference, key, fault, acted=False))
            raise httpx.ConnectError("connection refused", request=request)
        existing = next((r for r in self.payments.values() if r.key == key), None)
        if existing is not None and existing.body != body:
            self.problems.append(f"{self.name}: key {key} reused with another body")
            self.calls.append(Call(self.name, reference, key, fault, acted=True))
            return _error(409, "idempotency_conflict")
        if existing is None and reference in self.payments:
            # Our reference is the wallet's payment id: a second key for it is a second payout.
            self.problems.append(f"{self.name}: a second payment for {reference} (key {key})")
        if fault == "decline" and existing is not None:
            fault = "ok"  # a PSP replays what it did under a key; it does not decline it now
        acted = existing is not None or fault in CREATES
        self.calls.append(Call(self.name, reference, key, fault, acted=acted))
        if fault == "429":
            return httpx.Response(429, headers={"retry-after": "0"}, json=_body("rate_limited"))
        if fault == "decline":
            return _error(422, "declined")
        if fault in ("5xx_before", "timeout_before"):
            return _unanswered(fault, request)
        record = existing or self._record(reference, key, body)
        if self.on_acted is not None:
            await self.on_acted()
        if fault == "ok":
            return httpx.Response(201, json=record.answer)
        return _unanswered(fault, request)

    def _record(self, reference: str, key: str, body: dict[str, Any]) -> Record:
        psp_payment_id = f"{self.name}_{secrets.token_hex(6)}"
        deposit = body["kind"] == "deposit"
        record = Record(
            psp_payment_id,
            reference,
            body["kind"],
            body["amount"],
            body["currency"],
            key,
            body,
            "requires_action" if deposit else "pending",
        )
        record.answer = {"psp_payment_id": psp_payment_id, "status": record.status}
        if deposit:
            record.answer["redirect_url"] = f"https://{self.name}.psp.test/pay/{psp_payment_id}"
        self.payments.setdefault(reference, record)
        return record


def _body(code: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": code}}


def _error(status: int, code: str) -> httpx.Response:
    return httpx.Response(status, json=_body(code))


def _unanswered(fault: str, request: httpx.Request) -> httpx.Response:
    if fault.startswith("timeout"):
        raise httpx.ReadTimeout("the PSP did not answer in time", request=request)
    return _error(503 if fault == "5xx_before" else 502, "service_unavailable")


async def deliver(
    http: httpx.AsyncClient, psp: FakePsp, body: bytes, signature: str | None
) -> httpx.Response:
    """POST one webhook delivery to the wallet's endpoint for ``psp``."""
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers["x-signature"] = signature
    return await http.post(f"/v1/psp/{psp.name}/webhook", content=body, headers=headers)
