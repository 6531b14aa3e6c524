"""PSP adapters behind one interface, and the error taxonomy that decides what is retried.

:class:`PspError` is *retryable* (timeouts, 5xx, 429, a connection that failed) or *final* (a
decline, a method the PSP does not offer, a request it calls invalid). Only retryable errors are
retried, or failed over to another route; a final error is an answer.

Everything a PSP sends is read strictly (contract 3 [1.1]), field by field, before the wallet acts
on it: amounts are JSON integers (never a bool, a float or a numeric string), ids are identifiers,
statuses are ones the PSP documents. A webhook that breaks this raises :class:`MalformedPspData`
naming the field (400, nothing written); an answer to the wallet's own call that breaks it is a
retryable, ambiguous :class:`PspError` ``invalid_answer``, as if the answer had been lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from app import strict_json
from app.config import PspSettings
from app.payments import sandbox_api as sandbox
from app.payments import signing
from app.seamless.events import MAX_AMOUNT
from app.web.http import CURRENCY, IDENTIFIER

log = logging.getLogger(__name__)

# The statuses the sandbox PSP documents for a payment (docs/sandbox-psp.md), and the status each
# of its webhook types carries: a payment.processing event reports the payment still pending.
PSP_STATUSES = (
    sandbox.REQUIRES_ACTION,
    sandbox.PENDING,
    sandbox.SUCCEEDED,
    sandbox.FAILED,
    sandbox.HELD,
)
EVENT_STATUS = {
    "payment.succeeded": sandbox.SUCCEEDED,
    "payment.failed": sandbox.FAILED,
    "payment.held": sandbox.HELD,
    "payment.processing": sandbox.PENDING,
}
MAX_URL = 2048
INT64 = (-(2**63), 2**63 - 1)


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


@dataclass(frozen=True, slots=True)
class _Fields:
    """Typed reads of one JSON object sent by a PSP; ``path`` prefixes the field names reported."""

    obj: dict[str, Any]
    path: str = ""

    @classmethod
    def of(cls, value: Any, path: str = "") -> _Fields:
        if type(value) is not dict:
            raise MalformedPspData(path or None, "must be a JSON object")
        return cls(value, path)

    def name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def nested(self, key: str) -> _Fields:
        return _Fields.of(self.obj.get(key), self.name(key))

    def identifier(self, key: str) -> str:
        value = self.obj.get(key)
        if type(value) is not str or not IDENTIFIER.fullmatch(value):
            raise MalformedPspData(self.name(key), "must be 1 to 64 characters of [A-Za-z0-9_.:-]")
        return value

    def optional_identifier(self, key: str) -> str | None:
        return None if self.obj.get(key) is None else self.identifier(key)

    def reference(self, key: str) -> str:
        """Any merchant reference the PSP accepts (a settlement line need not be the wallet's)."""
        value = self.obj.get(key)
        if type(value) is not str or not sandbox.REFERENCE.fullmatch(value):
            raise MalformedPspData(
                self.name(key), "must be 1 to 128 characters of [A-Za-z0-9_.:/-]"
            )
        return value

    def currency(self, key: str) -> str:
        value = self.obj.get(key)
        if type(value) is not str or not CURRENCY.fullmatch(value):
            raise MalformedPspData(self.name(key), "must be an ISO 4217 code like EUR")
        return value

    def integer(self, key: str, minimum: int, maximum: int) -> int:
        value = self.obj.get(key)
        # type() rather than isinstance(): a JSON true is a Python int, and not an amount.
        if type(value) is not int or not minimum <= value <= maximum:
            raise MalformedPspData(
                self.name(key), f"must be a JSON integer from {minimum} to {maximum}"
            )
        return value

    def choice(self, key: str, allowed: Collection[str]) -> str:
        value = self.obj.get(key)
        if type(value) is not str or value not in allowed:
            raise MalformedPspData(self.name(key), f"must be one of {', '.join(sorted(allowed))}")
        return value

    def optional_url(self, key: str) -> str | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if type(value) is not str or not 1 <= len(value) <= MAX_URL or not value.isprintable():
            raise MalformedPspData(
                self.name(key), f"must be null or a string of 1 to {MAX_URL} printable characters"
            )
        return value


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
        data = await self._call("POST", "/v1/payments", body, idempotency_key=payment["id"])
        try:
            return Initiated(
                psp_payment_id=data.identifier("psp_payment_id"),
                status=data.choice("status", PSP_STATUSES),
                redirect_url=data.optional_url("redirect_url"),
                deep_link=data.optional_url("deep_link"),
                failure_code=data.optional_identifier("failure_code"),
            )
        except MalformedPspData as exc:
            raise _invalid_answer(self.name, "initiate", exc) from None

    async def status(self, psp_payment_id: str) -> str:
        data = await self._call("GET", f"/v1/payments/{psp_payment_id}")
        try:
            return data.choice("status", PSP_STATUSES)
        except MalformedPspData as exc:
            raise _invalid_answer(self.name, "status", exc) from None

    async def find(self, reference: str) -> tuple[str, str] | None:
        try:
            data = await self._call("GET", f"/v1/payments?reference={quote(reference, safe='')}")
        except PspError as exc:
            if exc.code == "not_found":
                return None
            raise
        try:
            return data.identifier("psp_payment_id"), data.choice("status", PSP_STATUSES)
        except MalformedPspData as exc:
            raise _invalid_answer(self.name, "find", exc) from None

    async def settlement(self, day: date) -> list[SettlementLine]:
        data = await self._call("GET", f"/v1/settlements?date={day.isoformat()}")
        try:
            lines = data.obj.get("lines")
            if type(lines) is not list:
                raise MalformedPspData("lines", "must be a JSON array")
            return [
                _settlement_line(_Fields.of(line, f"lines[{i}]")) for i, line in enumerate(lines)
            ]
        except MalformedPspData as exc:
            raise _invalid_answer(self.name, "settlement", exc) from None

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
        event = _Fields.of(parsed)
        event_id = event.identifier("id")
        event_type = event.choice("type", EVENT_STATUS)
        # Read by nobody here, but documented and sent with every event: typed like the rest.
        event.integer("created", 0, INT64[1])
        data = event.nested("data")
        data.choice("kind", sandbox.KINDS)
        status = data.choice("status", PSP_STATUSES)
        if status != EVENT_STATUS[event_type]:
            raise MalformedPspData(
                data.name("status"), f"must be {EVENT_STATUS[event_type]} in a {event_type} event"
            )
        return PspEvent(
            event_id=event_id,
            type=event_type,
            psp_payment_id=data.identifier("psp_payment_id"),
            # The wallet's own payment id, sent as the reference when the payment was initiated.
            reference=data.identifier("reference"),
            amount=data.integer("amount", 1, MAX_AMOUNT),
            currency=data.currency("currency"),
            status=status,
            failure_code=data.optional_identifier("failure_code"),
        )

    async def _call(
        self, method: str, path: str, body: Any = None, *, idempotency_key: str | None = None
    ) -> _Fields:
        headers = {"authorization": f"Bearer {self.api_key}"}
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
            data = _Fields.of(strict_json.loads(response.content))
        except ValueError as exc:  # MalformedPspData, or not JSON at all
            if response.status_code >= 400:
                raise PspError(f"http_{response.status_code}", retryable=False) from None
            raise _invalid_answer(self.name, path, MalformedPspData(None, str(exc))) from None
        if response.status_code >= 400:
            # The code becomes the payment's failure_code: only an identifier is taken as one.
            try:
                code = data.nested("error").identifier("code")
            except MalformedPspData:
                code = f"http_{response.status_code}"
            raise PspError(code, retryable=False)
        return data


def _settlement_line(line: _Fields) -> SettlementLine:
    """One line of a report. Its amounts are integers, but any integer: a report is compared,
    not posted, and a line with an odd amount is a discrepancy to show, not a reason to lose the
    whole report."""
    return SettlementLine(
        psp_payment_id=line.identifier("psp_payment_id"),
        reference=line.reference("reference"),
        kind=line.choice("kind", sandbox.KINDS),
        amount=line.integer("amount", *INT64),
        currency=line.currency("currency"),
        fee=line.integer("fee", *INT64),
        net=line.integer("net", *INT64),
    )


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
