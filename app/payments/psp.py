"""PSP adapters behind one interface, and the error taxonomy that decides what is retried.

:class:`PspError` is *retryable* (timeouts, 5xx, 429, a connection that failed) or *final* (a
decline, a method the PSP does not offer, a request it calls invalid). Only retryable errors are
retried, or failed over to another route; a final error is an answer.

Everything a PSP sends is read strictly (contract 3 [1.1]), with its typed message
(:mod:`app.payments.psp_messages`), before the wallet acts on it: amounts are JSON integers (never
a bool, a float or a numeric string), ids are identifiers, statuses are ones the PSP documents.
A webhook that breaks this raises :class:`MalformedPspData` naming the field (400, nothing
written); an answer to the wallet's own call that breaks it is a
retryable, ambiguous :class:`PspError` ``invalid_answer``, as if the answer had been lost.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from app import logs, strict_json, tracing
from app.config import PspSettings
from app.payments import psp_messages as messages
from app.payments import signing
from app.payments.psp_messages import EVENT_STATUS

log = logging.getLogger(__name__)


class PspError(Exception):
    """A PSP call that did not give an answer (retryable) or gave a refusal (final)."""

    def __init__(
        self,
        code: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        ambiguous: bool = False,
        not_sent: bool = False,
    ) -> None:
        super().__init__(code)
        self.code = code
        self.retryable = retryable
        self.retry_after = retry_after
        # A timeout: the PSP may have acted on the request. Ask it again under the same
        # idempotency key before going elsewhere.
        self.ambiguous = ambiguous
        # The PSP provably did not take the request: no connection was made, or it answered
        # 429. Only then may a payout go to another route (contract 3 [1.1]).
        self.not_sent = not_sent


class MalformedPspData(ValueError):
    """Data from a PSP that is not of the documented shape; ``field`` names the offender
    (``data.amount``), or is None when the whole body is at fault."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


MessageT = TypeVar("MessageT", bound=BaseModel)


def read(model: type[MessageT], data: Any) -> MessageT:
    """``data`` (parsed JSON from a PSP) as ``model``, or :class:`MalformedPspData` naming the
    first field that is not as documented (``data.amount``, ``lines.0.fee``)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        raise MalformedPspData(field, first["msg"]) from None


def _invalid_answer(psp: str, what: str, exc: MalformedPspData) -> PspError:
    """A PSP answer the wallet cannot trust, handled like a lost answer: the PSP may have acted,
    so it is asked again at the same route, never taken as a decline."""
    log.warning("psp %s sent an invalid %s answer: %s", psp, what, exc)
    return PspError("invalid_answer", retryable=True, ambiguous=True)


@dataclass(frozen=True, slots=True)
class Initiated:
    """What a PSP answered to a new payment."""

    psp_payment_id: str
    status: str  # requires_action | pending | succeeded | failed | held
    redirect_url: str | None = None
    deep_link: str | None = None
    failure_code: str | None = None


@dataclass(frozen=True, slots=True)
class PspEvent:
    """A verified webhook event, as the wallet understands it."""

    event_id: str
    type: str
    psp_payment_id: str
    reference: str
    amount: int
    currency: str
    status: str
    failure_code: str | None = None


@dataclass(frozen=True, slots=True)
class SettlementLine:
    """One line of a PSP's settlement report."""

    psp_payment_id: str
    reference: str
    kind: str  # deposit | payout
    amount: int
    currency: str
    fee: int
    net: int


class Psp(Protocol):
    """What the wallet needs from a PSP."""

    name: str
    currencies: frozenset[str]
    methods: frozenset[str]
    countries: frozenset[str]  # routing rules: empty means any country
    min_amount: int | None
    max_amount: int | None

    async def initiate(self, payment: dict[str, Any], webhook_url: str) -> Initiated: ...

    async def status(self, psp_payment_id: str) -> str: ...

    async def find(self, reference: str) -> tuple[str, str] | None:
        """(psp_payment_id, status) of the PSP's payment with our ``reference`` (our payment
        id), or None when the PSP has none: how the wallet learns the outcome of a payout whose
        answer was lost."""
        ...

    def parse_webhook(self, body: bytes, signature: str | None, now: float) -> PspEvent: ...

    async def settlement(self, day: date) -> list[SettlementLine]: ...


@dataclass
class SandboxPsp:
    """The adapter for the sandbox PSP shipped with the project (see docs/sandbox-psp.md)."""

    name: str
    base_url: str
    api_key: str
    webhook_secret: bytes
    http: httpx.AsyncClient
    currencies: frozenset[str] = field(default_factory=lambda: frozenset({"EUR", "INR"}))
    methods: frozenset[str] = field(default_factory=lambda: frozenset({"card", "upi"}))
    timeout: float = 5.0
    countries: frozenset[str] = frozenset()
    min_amount: int | None = None
    max_amount: int | None = None

    async def initiate(self, payment: dict[str, Any], webhook_url: str) -> Initiated:
        body = {
            "reference": payment["id"],
            "kind": "deposit" if payment["kind"] == "deposit" else "payout",
            "amount": payment["amount"],
            "currency": payment["currency"],
            "method": payment["method"],
            "scenario": (payment.get("metadata") or {}).get("scenario", "succeed"),
            "customer": payment["player_id"],
            "country": (payment.get("metadata") or {}).get("country"),
            "webhook_url": webhook_url,
        }
        # Our payment id is the PSP's idempotency key: initiating again after a crash returns
        # the same PSP payment instead of creating a second one.
        data = await self._call(
            "POST", "/v1/payments", body, idempotency_key=payment["id"], about=payment["id"]
        )
        answer = self._answer(messages.Initiation, data, "initiate")
        return Initiated(
            psp_payment_id=answer.psp_payment_id,
            status=answer.status,
            redirect_url=answer.redirect_url,
            deep_link=answer.deep_link,
            failure_code=answer.failure_code,
        )

    async def status(self, psp_payment_id: str) -> str:
        data = await self._call("GET", f"/v1/payments/{psp_payment_id}", about=psp_payment_id)
        return self._answer(messages.PaymentStatus, data, "status").status

    async def find(self, reference: str) -> tuple[str, str] | None:
        try:
            data = await self._call(
                "GET", f"/v1/payments?reference={quote(reference, safe='')}", about=reference
            )
        except PspError as exc:
            if exc.code == "not_found":
                return None
            raise
        found = self._answer(messages.FoundPayment, data, "find")
        return found.psp_payment_id, found.status

    async def settlement(self, day: date) -> list[SettlementLine]:
        data = await self._call(
            "GET", f"/v1/settlements?date={day.isoformat()}", about=f"settlement-{day.isoformat()}"
        )
        report = self._answer(messages.Settlement, data, "settlement")
        return [
            SettlementLine(
                psp_payment_id=line.psp_payment_id,
                reference=line.reference,
                kind=line.kind,
                amount=line.amount,
                currency=line.currency,
                fee=line.fee,
                net=line.net,
            )
            for line in report.lines
        ]

    def _answer(self, model: type[MessageT], data: Any, what: str) -> MessageT:
        try:
            return read(model, data)
        except MalformedPspData as exc:
            raise _invalid_answer(self.name, what, exc) from None

    def parse_webhook(self, body: bytes, signature: str | None, now: float) -> PspEvent:
        """The verified event; :class:`signing.SignatureError` when the body cannot be trusted,
        then :class:`MalformedPspData` when it is not an event as the PSP documents them."""
        signing.verify(self.webhook_secret, body, signature, now=now)
        try:
            parsed = strict_json.loads(body)
        except strict_json.StrictJsonError as exc:
            raise MalformedPspData(exc.key, str(exc)) from None
        except ValueError:
            raise MalformedPspData(None, "the body is not UTF-8 JSON") from None
        event = read(messages.PspEvent, parsed)
        data = event.data
        if data.status != EVENT_STATUS[event.type]:
            raise MalformedPspData(
                "data.status", f"must be {EVENT_STATUS[event.type]} in a {event.type} event"
            )
        return PspEvent(
            event_id=event.id,
            type=event.type,
            psp_payment_id=data.psp_payment_id,
            # The wallet's own payment id, sent as the reference when the payment was initiated.
            reference=data.reference,
            amount=data.amount,
            currency=data.currency,
            status=data.status,
            failure_code=data.failure_code,
        )

    async def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        idempotency_key: str | None = None,
        about: str,
    ) -> Any:
        """The answer's parsed JSON (read by the caller with its model), or a :class:`PspError`.

        ``X-Request-Id`` is the id of the request that caused the call, or for background work
        (the poller) ``about``, the payment's id; ``traceparent`` goes along when tracing."""
        headers = {
            "authorization": f"Bearer {self.api_key}",
            "x-request-id": logs.current_request_id() or about,
        }
        tracing.inject(headers)
        if idempotency_key is not None:
            headers["idempotency-key"] = idempotency_key
        try:
            response = await self.http.request(
                method,
                self.base_url.rstrip("/") + path,
                json=body,
                headers=headers,
                timeout=self.timeout,
            )
        except (httpx.ConnectError, httpx.ConnectTimeout):
            # Before anything was sent: the PSP never saw the request.
            raise PspError("unreachable", retryable=True, not_sent=True) from None
        except httpx.TimeoutException:
            raise PspError("timeout", retryable=True, ambiguous=True) from None
        except httpx.TransportError:
            # The connection broke after the request may have gone out.
            raise PspError("connection_lost", retryable=True, ambiguous=True) from None
        if response.status_code == 429:
            retry_after = response.headers.get("retry-after", "1")
            raise PspError(
                "rate_limited",
                retryable=True,
                not_sent=True,
                # isdigit() alone also takes digits such as "²", which float() refuses.
                retry_after=float(retry_after)
                if retry_after.isascii() and retry_after.isdigit()
                else 1.0,
            )
        if response.status_code >= 500:
            raise PspError(f"http_{response.status_code}", retryable=True)
        try:
            data = strict_json.loads(response.content)
        except ValueError as exc:  # not JSON at all
            if response.status_code >= 400:
                raise PspError(f"http_{response.status_code}", retryable=False) from None
            raise _invalid_answer(self.name, path, MalformedPspData(None, str(exc))) from None
        if response.status_code >= 400:
            # The code becomes the payment's failure_code: only an identifier is taken as one.
            try:
                code = read(messages.Refusal, data).error.code
            except MalformedPspData:
                code = f"http_{response.status_code}"
            raise PspError(code, retryable=False)
        return data


def now() -> float:
    return time.time()


def build_psps(configured: tuple[PspSettings, ...], http: httpx.AsyncClient) -> list[Psp]:
    """The PSP routes of ``WALLET_PSPS``, in order of preference, sharing one HTTP client."""
    return [
        SandboxPsp(
            name=p.name,
            base_url=p.base_url,
            api_key=str(p.api_key),
            webhook_secret=str(p.webhook_secret).encode(),
            http=http,
            currencies=frozenset(p.currencies),
            methods=frozenset(p.methods),
            timeout=p.timeout_seconds,
            countries=frozenset(p.countries),
            min_amount=p.min_amount,
            max_amount=p.max_amount,
        )
        for p in configured
    ]
