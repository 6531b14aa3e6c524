"""One error hierarchy for the HTTP APIs, mapped to the wire shape by one handler.

Operator and payments APIs answer ``{"error": {code, message, http_status, docs_url,
request_id}}``::

    WalletError                 500 internal_error
    ├── InvalidRequest          400 invalid_request       (names the offending field)
    ├── AuthenticationFailed    401 authentication_failed
    ├── Forbidden               403 forbidden_for_tenant
    ├── NotFound                404 resource_not_found
    ├── IdempotencyConflict     409 idempotency_conflict
    │   └── InProgress          409 idempotency_conflict  (under way: retry the same request)
    ├── PlayerLimitExceeded     422 player_limit_exceeded
    ├── MethodUnavailable       422 method_unavailable
    ├── RateLimited             429 rate_limited          (carries Retry-After)
    └── RouteDegraded           503 route_degraded
        └── DatabaseUnavailable                       (Postgres unreachable; carries Retry-After)

The wire shape is declared once, as the :class:`Error` message, and each class says what the
document tells of its answer (``description``; ``response`` names the shared answer of its
status, ``retry_after_note`` its Retry-After header, ``challenge_note`` its WWW-Authenticate
header): :mod:`app.web.docgen` reads them, and so does the page ``GET /docs/errors``
(:mod:`app.web.error_docs`) that each answer's ``docs_url`` points at.

The seamless webhook never uses these: it always answers HTTP 200 with an R-code (see
``app.seamless.outcome``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# Where the service serves the page of error codes (app.web.error_docs); docs_url is this page
# on the URL the caller reached the service at, with the code as its fragment.
ERRORS_PAGE = "/docs/errors"


class WalletError(Exception):
    """Base of every error the operator and payments APIs report to callers."""

    http_status = 500
    code = "internal_error"
    # What the document says of this answer; a subclass that does not set its own adds nothing.
    description = "internal_error: a bug (HTTP 500)"
    # The name of its status's shared answer (components/responses), set once per status.
    response = "Unexpected"
    # When the answer carries Retry-After: what its seconds mean.
    retry_after_note = ""
    # When the answer carries WWW-Authenticate: what it says.
    challenge_note = ""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def detail(self, request_id: str | None, base_url: str) -> dict[str, Any]:
        """The ``error`` object; ``base_url`` is the service's, as the caller reached it."""
        detail: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "http_status": self.http_status,
            "docs_url": f"{base_url.rstrip('/')}{ERRORS_PAGE}#{self.code}",
            "request_id": request_id,
        }
        if self.field is not None:
            detail["field"] = self.field
        return detail

    def body(self, request_id: str | None, base_url: str) -> dict[str, object]:
        answer = Error(error=ErrorDetail(**self.detail(request_id, base_url)))
        body: dict[str, object] = answer.model_dump(exclude_unset=True)
        return body

    def headers(self) -> dict[str, str]:
        return {}


def error_classes() -> list[type[WalletError]]:
    """WalletError and every subclass of it, parents first."""
    found: list[type[WalletError]] = []
    todo: list[type[WalletError]] = [WalletError]
    while todo:
        cls = todo.pop(0)
        found.append(cls)
        todo += cls.__subclasses__()
    return found


def _codes(schema: dict[str, Any]) -> None:
    schema["enum"] = sorted({cls.code for cls in error_classes()})


class BadField(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str
    message: str


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(json_schema_extra=_codes)
    message: str = Field(description="for people; names the problem")
    http_status: int
    docs_url: str = Field(
        json_schema_extra={"format": "uri"},
        description="this code's entry on the service's page of error codes (GET /docs/errors)",
    )
    request_id: str | None = Field(description="the X-Request-Id")
    field: str = Field(
        None,  # type: ignore[assignment]  # absent unless a field is named, never null
        description="the offending field of a validation error (the first, if several)",
    )
    errors: list[BadField] = Field(
        None,  # type: ignore[arg-type]
        min_length=1,
        description="every bad field of a request body or query, when it has several checks "
        "(a typed message)",
    )


class Error(BaseModel):
    """Every operator API error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    error: ErrorDetail


@dataclass(frozen=True, slots=True)
class FieldError:
    """One bad field of a request: its dotted name and what is wrong with it."""

    field: str
    message: str


class InvalidRequest(WalletError):
    """400. ``field`` names the (first) offending field; ``errors`` lists every bad field when
    a typed message found several (:func:`app.web.messages.parse`)."""

    http_status = 400
    code = "invalid_request"
    response = "BadRequest"
    description = "invalid_request: a parameter or a body field is wrong (see `field`)"

    def __init__(
        self, message: str, *, field: str | None = None, errors: tuple[FieldError, ...] = ()
    ) -> None:
        super().__init__(message, field=field)
        self.errors = errors

    def detail(self, request_id: str | None, base_url: str) -> dict[str, Any]:
        detail = super().detail(request_id, base_url)
        if self.errors:
            detail["errors"] = [BadField(field=e.field, message=e.message) for e in self.errors]
        return detail


class AuthenticationFailed(WalletError):
    """401, with the challenge of RFC 6750 (RFC 9110 asks every 401 for one): ``invalid_token``
    when a key was sent but is not known, absent when none was sent. A PSP webhook whose
    signature does not verify gets the bare challenge too: it names no scheme of its own."""

    http_status = 401
    code = "authentication_failed"
    response = "Unauthorized"
    description = "authentication_failed: no, unknown or revoked API key"
    challenge_note = (
        'Bearer realm="wallet", with error="invalid_token" when the key sent is unknown or revoked'
    )

    def __init__(self, message: str, *, invalid_token: bool = False) -> None:
        super().__init__(message)
        self.invalid_token = invalid_token

    def headers(self) -> dict[str, str]:
        challenge = 'Bearer realm="wallet"'
        if self.invalid_token:
            challenge += ', error="invalid_token"'
        return {"WWW-Authenticate": challenge}


class Forbidden(WalletError):
    http_status = 403
    code = "forbidden_for_tenant"
    response = "Forbidden"
    description = "forbidden_for_tenant: the key's role may not call this route"


class NotFound(WalletError):
    http_status = 404
    code = "resource_not_found"
    response = "NotFound"
    description = "resource_not_found: no such resource (player, payment, key...) or route"


class IdempotencyConflict(WalletError):
    http_status = 409
    code = "idempotency_conflict"
    response = "Conflict"
    description = (
        "idempotency_conflict: the request conflicts with an earlier one (its Idempotency-Key "
        "was used for another request, or what it creates exists already)"
    )


class InProgress(IdempotencyConflict):
    """The request's effect is under way elsewhere (a start talking to its PSP): the same
    request sent again later gets a real answer, so this one is never stored as the answer to
    an Idempotency-Key."""


class PlayerLimitExceeded(WalletError):
    http_status = 422
    code = "player_limit_exceeded"
    description = "player_limit_exceeded (a deposit limit)"


class MethodUnavailable(WalletError):
    http_status = 422
    code = "method_unavailable"
    response = "Unprocessable"
    description = (
        "method_unavailable (field `method`: no payment route serves the method and currency, "
        "or the player's KYC tier is below the method's minimum)"
    )


class RateLimited(WalletError):
    http_status = 429
    code = "rate_limited"
    response = "RateLimited"
    description = (
        "rate_limited: more requests in this second than WALLET_RATE_LIMIT_API_KEY allows this "
        "API key; send again after the Retry-After header's seconds"
    )
    retry_after_note = "seconds to wait before the next request with this key"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class RouteDegraded(WalletError):
    http_status = 503
    code = "route_degraded"
    response = "RouteDegraded"
    description = (
        "route_degraded: creating a payment, every payment route failed with a retryable error; "
        "the payment is failed (a withdrawal's hold released), so retry with a new "
        "Idempotency-Key"
    )


class DatabaseUnavailable(RouteDegraded):
    """Postgres cannot be reached, or gave no connection in time: nothing was done, retry."""

    retry_after = 2
    # Any route may answer so (app.main.DATABASE_UNAVAILABLE), also one with its own 503 note.
    description = (
        "on any route, the database is unreachable or gave no connection in time: nothing "
        "changed, send again after the Retry-After header's seconds"
    )
    retry_after_note = "seconds to wait, when the database is unreachable"

    def __init__(self) -> None:
        super().__init__("the database is unreachable; nothing was changed, retry in a few seconds")

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}
