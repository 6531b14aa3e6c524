"""The sandbox PSP's memory and behaviour: payments, idempotency, the lifecycle, webhooks.

Concurrency: every change of state happens in plain (non-async) methods, so within one event loop
each change runs whole, with no other request or timer interleaved. No locks are needed, as long
as nothing here awaits between reading state and writing it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import date
from typing import Any

import httpx
import orjson

from app.dev.sandbox_psp import scenarios, settlements
from app.dev.sandbox_psp.config import SandboxConfig
from app.dev.sandbox_psp.model import CreateRequest, Delivery, Payment, SandboxError, not_found
from app.dev.sandbox_psp.pages import upi_deep_link
from app.dev.sandbox_psp.scenarios import Gate
from app.payments.sandbox_api import DEPOSIT, FAILED, HELD, PENDING, REQUIRES_ACTION, SUCCEEDED
from app.payments.signing import sign

log = logging.getLogger(__name__)

APPROVE, DECLINE = "approve", "decline"
OUTCOMES = (APPROVE, DECLINE)
# Longest wait for one webhook delivery attempt with the sandbox's own client.
_OWN_CLIENT_TIMEOUT = 10.0


@dataclass(frozen=True)
class _Stored:
    """The first answer given under an idempotency key, and the body that earned it."""

    fingerprint: bytes
    body: dict[str, Any]


@dataclass(frozen=True)
class Created:
    """What a create call answers (always 201): the body, whether it is a replay, and whether
    the call must first be held past the caller's timeout."""

    body: dict[str, Any]
    replayed: bool
    slow: bool


class SandboxState:
    """Everything one sandbox PSP knows; ``app.state.sandbox``."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.payments: dict[str, Payment] = {}
        # Every webhook delivery attempt, in the order made: for tests to inspect.
        self.deliveries: list[Delivery] = []
        # psp_payment_id -> the amount the settlement report shows instead, or None to leave the
        # payment out of it.
        self.overrides: dict[str, int | None] = {}
        self.extra_lines: list[dict[str, Any]] = []
        self._idempotency: dict[str, _Stored] = {}
        # (scenario, reference) -> create calls seen: the scenarios that misbehave "the first N
        # times" count here, so retries of one reference see the misbehaviour end.
        self._attempts: dict[tuple[str, str], int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._own_http: httpx.AsyncClient | None = None
        self._closed = False

    # -- payments ---------------------------------------------------------------------------

    def get(self, psp_payment_id: str) -> Payment:
        payment = self.payments.get(psp_payment_id)
        if payment is None:
            raise not_found("payment")
        return payment

    def by_reference(self, reference: str) -> Payment:
        """The payment made for the merchant's ``reference`` (the wallet's payment id)."""
        for payment in self.payments.values():
            if payment.reference == reference:
                return payment
        raise not_found("payment")

    def create(self, idempotency_key: str, fingerprint: bytes, request: CreateRequest) -> Created:
        """Create a payment, or answer as the first call under ``idempotency_key`` did.

        Answers that created nothing (503, 429) are not stored: a retry under the same key is a
        new attempt, as with real PSPs.
        """
        stored = self._idempotency.get(idempotency_key)
        if stored is not None:
            if stored.fingerprint != fingerprint:
                raise SandboxError(
                    409,
                    "idempotency_conflict",
                    "this Idempotency-Key was already used with a different body",
                )
            return Created(stored.body, replayed=True, slow=False)
        # decline-then-succeed plays out over a customer's attempts (a new payment each time);
        # the other scenarios over retries of one payment.
        group = request.customer if request.scenario == scenarios.DECLINE_THEN_SUCCEED else None
        counter = (request.scenario, group or request.reference)
        attempt = self._attempts.get(counter, 0) + 1
        self._attempts[counter] = attempt
        fate = scenarios.gate(request.scenario, attempt, self.config.burst)
        if fate is Gate.UNAVAILABLE:
            raise SandboxError(503, "service_unavailable", "the PSP is briefly unavailable")
        if fate is Gate.RATE_LIMITED:
            raise SandboxError(
                429, "rate_limited", "too many requests", headers={"Retry-After": "1"}
            )
        payment = Payment(
            psp_payment_id="psp_" + secrets.token_hex(12),
            reference=request.reference,
            kind=request.kind,
            amount=request.amount,
            currency=request.currency,
            method=request.method,
            rail=request.rail,
            country=request.country,
            scenario=request.scenario,
            webhook_url=request.webhook_url,
            return_url=request.return_url,
            status=REQUIRES_ACTION if request.kind == DEPOSIT else PENDING,
            created_at=time.time(),
        )
        self.payments[payment.psp_payment_id] = payment
        if fate is Gate.DECLINE:
            self._fail(payment, "declined")
        elif payment.status == PENDING:
            self._spawn(self._decide_payout_later(payment))
        body = self._creation_answer(payment)
        self._idempotency[idempotency_key] = _Stored(fingerprint, body)
        return Created(body, replayed=False, slow=fate is Gate.SLOW)

    def _creation_answer(self, payment: Payment) -> dict[str, Any]:
        body: dict[str, Any] = {"psp_payment_id": payment.psp_payment_id, "status": payment.status}
        if payment.status == REQUIRES_ACTION:
            body["redirect_url"] = f"{self.config.base_url}/pay/{payment.psp_payment_id}"
            if payment.rail == "upi":
                body["deep_link"] = upi_deep_link(payment)
        if payment.failure_code is not None:
            body["failure_code"] = payment.failure_code
        return body

    def complete(self, payment: Payment, outcome: str) -> None:
        """A decision by the person (``requires_action``), by the bank (``pending`` payout) or by
        the KYC review (``held``). A decided payment cannot be decided again."""
        if payment.status in (REQUIRES_ACTION, PENDING):
            if outcome == APPROVE:
                self._approve(payment)
            else:
                self._fail(payment, "declined")
        elif payment.status == HELD:
            if outcome == APPROVE:
                self._succeed(payment)
            else:
                self._fail(payment, "kyc_rejected")
        else:
            message = f"payment {payment.psp_payment_id} is already {payment.status}"
            raise SandboxError(409, "invalid_state", message)

    async def _decide_payout_later(self, payment: Payment) -> None:
        await asyncio.sleep(self.config.payout_delay)
        # A test may have decided it meanwhile through the complete endpoint.
        if payment.status == PENDING:
            self._approve(payment)

    def _approve(self, payment: Payment) -> None:
        if payment.scenario == scenarios.HELD_FOR_KYC:
            payment.status = HELD
            self._send(payment, [self._event("payment.held", payment.event_data())])
        else:
            self._succeed(payment)

    def _succeed(self, payment: Payment) -> None:
        payment.status = SUCCEEDED
        payment.settled_at = time.time()
        succeeded = self._event("payment.succeeded", payment.event_data())
        events = [succeeded]
        plan = scenarios.webhook_plan(payment.scenario, self.config.webhook_delay)
        if plan.processing_after_success:
            # What a slower pipeline at a real PSP produces: the "processing" news, dated before
            # the success, arriving after it. A receiver must not let it undo the success.
            stale = dict(payment.event_data(), status=PENDING)
            created = min(int(payment.created_at), succeeded["created"] - 1)
            events.append(self._event("payment.processing", stale, created=created))
        self._send(payment, events)

    def _fail(self, payment: Payment, failure_code: str) -> None:
        payment.status = FAILED
        payment.failure_code = failure_code
        self._send(payment, [self._event("payment.failed", payment.event_data())])

    # -- settlements ------------------------------------------------------------------------

    def settlement_report(self, day: date) -> dict[str, Any]:
        return settlements.report(
            day, self.payments.values(), self.overrides, self.extra_lines, self.config.fee_bps
        )

    # -- webhooks ---------------------------------------------------------------------------

    @staticmethod
    def _event(type_: str, data: dict[str, Any], *, created: int | None = None) -> dict[str, Any]:
        return {
            "id": "evt_" + secrets.token_hex(12),
            "type": type_,
            "created": int(time.time()) if created is None else created,
            "data": data,
        }

    def _send(self, payment: Payment, events: list[dict[str, Any]]) -> None:
        plan = scenarios.webhook_plan(payment.scenario, self.config.webhook_delay)
        self._spawn(self._deliver_batch(payment.webhook_url, payment, events, plan))

    async def _deliver_batch(
        self,
        url: str,
        payment: Payment,
        events: list[dict[str, Any]],
        plan: scenarios.WebhookPlan,
    ) -> None:
        """Deliver ``events`` one after the other, each ``plan.copies`` times."""
        if plan.delay:
            await asyncio.sleep(plan.delay)
        secret = scenarios.WRONG_SECRET if plan.wrong_secret else self.config.secret
        for event in events:
            body = orjson.dumps(event)
            for _ in range(plan.copies):
                await self._deliver(url, payment.psp_payment_id, event, body, secret)

    async def _deliver(
        self, url: str, psp_payment_id: str, event: dict[str, Any], body: bytes, secret: bytes
    ) -> None:
        """One delivery: tried, then retried with doubling waits until a 2xx or out of retries.
        Each attempt is signed afresh, so a late retry is not refused as stale."""
        http = self._http()
        retries = self.config.webhook_retries
        for attempt in range(1, retries + 2):
            status_code: int | None = None
            error: str | None = None
            headers = {
                "content-type": "application/json",
                "x-signature": sign(secret, body, int(time.time())),
            }
            try:
                response = await http.post(url, content=body, headers=headers)
                status_code = response.status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            delivery = Delivery(
                event_id=event["id"],
                event_type=event["type"],
                psp_payment_id=psp_payment_id,
                url=url,
                attempt=attempt,
                status_code=status_code,
                error=error,
                at=time.time(),
            )
            self.deliveries.append(delivery)
            if delivery.ok:
                return
            if attempt <= retries:
                await asyncio.sleep(self.config.retry_backoff * 2 ** (attempt - 1))
        log.warning("webhook %s to %s not delivered after %d attempts", event["id"], url, attempt)

    def _http(self) -> httpx.AsyncClient:
        if self.config.http is not None:
            return self.config.http
        if self._own_http is None:
            self._own_http = httpx.AsyncClient(timeout=_OWN_CLIENT_TIMEOUT)
        return self._own_http

    # -- background work --------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        if self._closed:
            work.close()
            return
        task = asyncio.get_running_loop().create_task(work)
        # The loop holds tasks weakly: without this reference a pending delivery could vanish.
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("sandbox background task failed", exc_info=exc)

    @property
    def background_tasks(self) -> int:
        """How many timers and webhook deliveries are under way."""
        return len(self._tasks)

    async def idle(self, timeout: float = 5.0) -> None:
        """Wait until no timer or webhook delivery is under way (for tests)."""
        async with asyncio.timeout(timeout):
            while self._tasks:
                await asyncio.wait(set(self._tasks))

    async def aclose(self) -> None:
        """Stop every timer and delivery, and close the sandbox's own HTTP client."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._own_http is not None:
            await self._own_http.aclose()
            self._own_http = None
