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

The seamless webhook never uses these: it always answers HTTP 200 with an R-code (see
``app.seamless.outcome``).
"""

from __future__ import annotations

from dataclasses import dataclass

DOCS_BASE = "https://wallet.invalid/docs/errors#"


class WalletError(Exception):
    """Base of every error the operator and payments APIs report to callers."""

    http_status = 500
    code = "internal_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def body(self, request_id: str | None) -> dict[str, object]:
        error: dict[str, object] = {
            "code": self.code,
            "message": self.message,
            "http_status": self.http_status,
            "docs_url": DOCS_BASE + self.code,
            "request_id": request_id,
        }
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}

    def headers(self) -> dict[str, str]:
        return {}


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

    def __init__(
        self, message: str, *, field: str | None = None, errors: tuple[FieldError, ...] = ()
    ) -> None:
        super().__init__(message, field=field)
        self.errors = errors

    def body(self, request_id: str | None) -> dict[str, object]:
        body = super().body(request_id)
        if self.errors:
            error = body["error"]
            assert isinstance(error, dict)
            error["errors"] = [{"field": e.field, "message": e.message} for e in self.errors]
        return body


class AuthenticationFailed(WalletError):
    http_status = 401
    code = "authentication_failed"


class Forbidden(WalletError):
    http_status = 403
    code = "forbidden_for_tenant"


class NotFound(WalletError):
    http_status = 404
    code = "resource_not_found"


class IdempotencyConflict(WalletError):
    http_status = 409
    code = "idempotency_conflict"


class InProgress(IdempotencyConflict):
    """The request's effect is under way elsewhere (a start talking to its PSP): the same
    request sent again later gets a real answer, so this one is never stored as the answer to
    an Idempotency-Key."""


class PlayerLimitExceeded(WalletError):
    http_status = 422
    code = "player_limit_exceeded"


class MethodUnavailable(WalletError):
    http_status = 422
    code = "method_unavailable"


class RateLimited(WalletError):
    http_status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class RouteDegraded(WalletError):
    http_status = 503
    code = "route_degraded"


class DatabaseUnavailable(RouteDegraded):
    """Postgres cannot be reached, or gave no connection in time: nothing was done, retry."""

    retry_after = 2

    def __init__(self) -> None:
        super().__init__("the database is unreachable; nothing was changed, retry in a few seconds")

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}
