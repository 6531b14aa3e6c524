"""PSP adapters behind one interface, and the error taxonomy that decides what is retried.

:class:`PspError` is *retryable* (timeouts, 5xx, 429, a connection that failed) or *final* (a
decline, a method the PSP does not offer, a request it calls invalid). Only retryable errors are
retried, or failed over to another route; a final error is an answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

import httpx
import orjson

from app.config import PspSettings
from app.payments import signing


class PspError(Exception):
    """A PSP call that did not give an answer (retryable) or gave a refusal (final)."""

    def __init__(
        self,
        code: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        ambiguous: bool = False,
    ) -> None:
        super().__init__(code)
        self.code = code
        self.retryable = retryable
        self.retry_after = retry_after
        # A timeout: the PSP may have acted on the request. Ask it again under the same
        # idempotency key before going elsewhere.
        self.ambiguous = ambiguous


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
        return Initiated(
            psp_payment_id=data["psp_payment_id"],
            status=data["status"],
            redirect_url=data.get("redirect_url"),
            deep_link=data.get("deep_link"),
            failure_code=data.get("failure_code"),
        )

    async def status(self, psp_payment_id: str) -> str:
        data = await self._call("GET", f"/v1/payments/{psp_payment_id}")
        status: str = data["status"]
        return status

    async def settlement(self, day: date) -> list[SettlementLine]:
        data = await self._call("GET", f"/v1/settlements?date={day.isoformat()}")
        return [
            SettlementLine(
                psp_payment_id=str(line["psp_payment_id"]),
                reference=str(line["reference"]),
                kind=str(line["kind"]),
                amount=int(line["amount"]),
                currency=str(line["currency"]),
                fee=int(line["fee"]),
                net=int(line["net"]),
            )
            for line in data["lines"]
        ]

    def parse_webhook(self, body: bytes, signature: str | None, now: float) -> PspEvent:
        signing.verify(self.webhook_secret, body, signature, now=now)
        event = orjson.loads(body)
        data = event["data"]
        return PspEvent(
            event_id=str(event["id"]),
            type=str(event["type"]),
            psp_payment_id=str(data["psp_payment_id"]),
            reference=str(data["reference"]),
            amount=int(data["amount"]),
            currency=str(data["currency"]),
            status=str(data["status"]),
            failure_code=data.get("failure_code"),
        )

    async def _call(
        self, method: str, path: str, body: Any = None, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
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
        except httpx.TimeoutException:
            raise PspError("timeout", retryable=True, ambiguous=True) from None
        except httpx.TransportError:
            raise PspError("unreachable", retryable=True) from None
        if response.status_code == 429:
            retry_after = response.headers.get("retry-after", "1")
            raise PspError(
                "rate_limited",
                retryable=True,
                retry_after=float(retry_after) if retry_after.isdigit() else 1.0,
            )
        if response.status_code >= 500:
            raise PspError(f"http_{response.status_code}", retryable=True)
        data: dict[str, Any] = response.json()
        if response.status_code >= 400:
            code = data.get("error", {}).get("code", f"http_{response.status_code}")
            raise PspError(str(code), retryable=False)
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
