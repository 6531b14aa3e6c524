"""What the sandbox PSP keeps in memory, and the errors its API answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from app.payments.sandbox_api import FAILED, SUCCEEDED

TERMINAL = frozenset({SUCCEEDED, FAILED})

# Rails and the payment methods each accepts; a request naming no rail gets its method's rail.
RAILS: dict[str, frozenset[str]] = {
    "card": frozenset({"card", "visa", "mastercard"}),
    "upi": frozenset({"upi"}),
}
RAIL_OF_METHOD = {method: rail for rail, methods in RAILS.items() for method in methods}


class SandboxError(Exception):
    """An API answer other than success: ``{"error": {code, message, field?}}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


def invalid(field_name: str, message: str) -> SandboxError:
    return SandboxError(400, "invalid_request", message, field=field_name)


def not_found(what: str) -> SandboxError:
    return SandboxError(404, "not_found", f"no such {what}")


@dataclass
class Payment:
    """One payment as the PSP sees it. Mutated only by :class:`SandboxState`, between awaits."""

    psp_payment_id: str
    reference: str
    kind: str
    amount: int
    currency: str
    method: str
    rail: str
    country: str | None
    scenario: str
    webhook_url: str
    return_url: str | None
    status: str
    created_at: float
    failure_code: str | None = None
    settled_at: float | None = None

    def view(self) -> dict[str, Any]:
        """The payment as ``GET /v1/payments/{id}`` shows it."""
        shown: dict[str, Any] = {
            "psp_payment_id": self.psp_payment_id,
            "reference": self.reference,
            "kind": self.kind,
            "amount": self.amount,
            "currency": self.currency,
            "method": self.method,
            "rail": self.rail,
            "status": self.status,
            "created": int(self.created_at),
        }
        if self.failure_code is not None:
            shown["failure_code"] = self.failure_code
        return shown

    def event_data(self) -> dict[str, Any]:
        """The payment as a webhook's ``data`` carries it, at this moment."""
        data: dict[str, Any] = {
            "psp_payment_id": self.psp_payment_id,
            "reference": self.reference,
            "kind": self.kind,
            "amount": self.amount,
            "currency": self.currency,
            "status": self.status,
        }
        if self.failure_code is not None:
            data["failure_code"] = self.failure_code
        return data


@dataclass(frozen=True)
class Delivery:
    """One attempt to deliver one webhook event: ``status_code`` if the receiver answered,
    ``error`` if it could not be reached."""

    event_id: str
    event_type: str
    psp_payment_id: str
    url: str
    attempt: int
    status_code: int | None
    error: str | None
    at: float = field(compare=False)

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def view(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "psp_payment_id": self.psp_payment_id,
            "url": self.url,
            "attempt": self.attempt,
            "status_code": self.status_code,
            "error": self.error,
            "at": utc_text(self.at),
        }


def utc_text(moment: float) -> str:
    """Unix seconds as RFC 3339 UTC to the second, e.g. ``2026-05-18T10:15:30Z``."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class CreateRequest:
    """A checked ``POST /v1/payments`` body."""

    reference: str
    kind: str
    amount: int
    currency: str
    method: str
    rail: str
    country: str | None
    customer: str | None
    scenario: str
    webhook_url: str
    return_url: str | None
