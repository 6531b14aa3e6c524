"""Seamless answers: the reasons of the contract with their R-codes and messages, declared once
(:class:`Reason`), and the response object.

Everything else reads the enum: the refusals below, the answers of the posting functions (SQL
returns a reason, the code is derived here), the OpenAPI document and the reason table of
docs/seamless.md, which a test compares with it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Literal, get_args


class Reason(enum.StrEnum):
    """A reason of the contract; each carries its R-code and its default message."""

    code: str
    message: str

    def __new__(cls, value: str, code: str, message: str) -> Reason:
        member = str.__new__(cls, value)
        member._value_ = value
        member.code = code
        member.message = message
        return member

    @classmethod
    def named(cls, value: str) -> Reason:
        """The reason of a wire name (as SQL or a stored answer gives it); ValueError if none."""
        return cls(value)  # type: ignore[call-arg]  # lookup by value, not the __new__ above

    OK = "ok", "R0", "Success"
    INTERNAL_ERROR = "internal_error", "R1", "The wallet could not process the request; retry it"
    PLAYER_BLOCKED = "player_blocked", "R1", "The player is blocked or self-excluded"
    LIMIT_EXCEEDED = (
        "limit_exceeded",
        "R1",
        "The bet exceeds a responsible-gaming limit of the player",
    )
    ROUND_CLOSED = "round_closed", "R1", "The round is already closed"
    BET_ALREADY_SETTLED = "bet_already_settled", "R1", "The bet's round already has a result"
    ROUND_CANCELLED = "round_cancelled", "R1", "Every bet of the round was cancelled"
    TRANSACTION_CANCELLED = (
        "transaction_cancelled",
        "R1",
        "That transaction_id was cancelled before it arrived",
    )
    TRANSACTION_NOT_FOUND = (
        "transaction_not_found",
        "R1",
        "The referenced transaction was not found",
    )
    REQUEST_IN_PROGRESS = (
        "request_in_progress",
        "R1",
        "A delivery with this request_id is still being processed",
    )
    FREE_ROUND_UNAVAILABLE = (
        "free_round_unavailable",
        "R1",
        "No round left of that free-round grant for this player, provider and game",
    )
    UNKNOWN_PROVIDER = "unknown_provider", "R2", "Unknown provider"
    BAD_SIGNATURE = "bad_signature", "R2", "The request could not be authenticated"
    STALE_REQUEST = (
        "stale_request",
        "R2",
        "The timestamp is more than 300 seconds away from the wallet's clock",
    )
    INVALID_SESSION = (
        "invalid_session",
        "R2",
        "The session token is not valid for this player and provider",
    )
    SESSION_EXPIRED = "session_expired", "R2", "The session has expired"
    MALFORMED_REQUEST = "malformed_request", "R3", "The request is malformed"
    UNKNOWN_EVENT = "unknown_event", "R3", "Unknown event"
    INVALID_FIELD = "invalid_field", "R3", "A field has an invalid type or value"
    CURRENCY_MISMATCH = (
        "currency_mismatch",
        "R3",
        "The currency is not the player's wallet currency",
    )
    IDEMPOTENCY_CONFLICT = (
        "idempotency_conflict",
        "R3",
        "The transaction_id was already used with different fields",
    )
    PLAYER_NOT_FOUND = "player_not_found", "R3", "Unknown player"
    INSUFFICIENT_FUNDS = "insufficient_funds", "R4", "Not enough balance"


Code = Literal["R0", "R1", "R2", "R3", "R4"]
"""R0 success, R1 failed processing, R2 unauthorized, R3 validation failed, R4 no balance."""
CODES: tuple[Code, ...] = get_args(Code)

REASONS: dict[str, tuple[Reason, ...]] = {
    code: tuple(reason for reason in Reason if reason.code == code) for code in CODES
}
"""The reasons of each code, in the enum's order."""

MESSAGES: dict[str, str] = {reason.value: reason.message for reason in Reason}
"""Each reason's default message, by its name on the wire."""


class Refusal(Exception):
    """A request refused before it reached the ledger (R1 to R3 with a reason)."""

    def __init__(self, reason: Reason, message: str | None = None) -> None:
        super().__init__(message or reason.message)
        self.reason = reason
        self.message = message or reason.message

    @property
    def code(self) -> str:
        return self.reason.code


@dataclass(slots=True)
class Outcome:
    """What the wallet answers; ``to_object`` gives the wire response object."""

    reason: Reason
    message: str
    request_id: str | None = None
    player_id: str | None = None
    balance: int | None = None
    currency: str | None = None
    transaction_id: int | None = None
    duplicate: bool = False

    @property
    def code(self) -> str:
        return self.reason.code

    @classmethod
    def refused(cls, refusal: Refusal, request_id: str | None = None) -> Outcome:
        return cls(refusal.reason, refusal.message, request_id)

    def to_object(self) -> dict[str, Any]:
        code = self.reason.code
        obj: dict[str, Any] = {"code": code, "reason": self.reason.value, "message": self.message}
        if self.request_id is not None:
            obj["request_id"] = self.request_id
        # R2 answers travel in plain text, so they never carry the player's balance.
        if self.balance is not None and code != "R2":
            obj["player_id"] = self.player_id
            obj["balance"] = self.balance
            obj["currency"] = self.currency
        if code == "R0" and self.transaction_id is not None:
            obj["transaction_id"] = str(self.transaction_id)
            if self.duplicate:
                obj["duplicate"] = True
        return obj
