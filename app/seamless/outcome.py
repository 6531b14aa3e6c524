"""Seamless answers: the R-codes and reasons of the contract, and the response object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MESSAGES: dict[str, str] = {
    "ok": "Success",
    "internal_error": "The wallet could not process the request; retry it",
    "player_blocked": "The player is blocked or self-excluded",
    "limit_exceeded": "The bet exceeds a responsible-gaming limit of the player",
    "round_closed": "The round is already closed",
    "bet_already_settled": "The bet's round already has a result",
    "round_cancelled": "Every bet of the round was cancelled",
    "transaction_cancelled": "That transaction_id was cancelled before it arrived",
    "transaction_not_found": "The referenced transaction was not found",
    "request_in_progress": "A delivery with this request_id is still being processed",
    "unknown_provider": "Unknown provider",
    "bad_signature": "The request could not be authenticated",
    "stale_request": "The timestamp is more than 300 seconds away from the wallet's clock",
    "invalid_session": "The session token is not valid for this player and provider",
    "session_expired": "The session has expired",
    "malformed_request": "The request is malformed",
    "unknown_event": "Unknown event",
    "invalid_field": "A field has an invalid type or value",
    "currency_mismatch": "The currency is not the player's wallet currency",
    "idempotency_conflict": "The transaction_id was already used with different fields",
    "player_not_found": "Unknown player",
    "insufficient_funds": "Not enough balance",
}


class Refusal(Exception):
    """A request refused before it reached the ledger (R1 to R3 with a reason)."""

    def __init__(self, code: str, reason: str, message: str | None = None) -> None:
        super().__init__(message or MESSAGES[reason])
        self.code = code
        self.reason = reason
        self.message = message or MESSAGES[reason]


@dataclass(slots=True)
class Outcome:
    """What the wallet answers; ``to_object`` gives the wire response object."""

    code: str
    reason: str
    message: str
    request_id: str | None = None
    player_id: str | None = None
    balance: int | None = None
    currency: str | None = None
    transaction_id: int | None = None
    duplicate: bool = False

    @classmethod
    def refused(cls, refusal: Refusal, request_id: str | None = None) -> Outcome:
        return cls(refusal.code, refusal.reason, refusal.message, request_id)

    def to_object(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"code": self.code, "reason": self.reason, "message": self.message}
        if self.request_id is not None:
            obj["request_id"] = self.request_id
        # R2 answers travel in plain text, so they never carry the player's balance.
        if self.balance is not None and self.code != "R2":
            obj["player_id"] = self.player_id
            obj["balance"] = self.balance
            obj["currency"] = self.currency
        if self.code == "R0" and self.transaction_id is not None:
            obj["transaction_id"] = str(self.transaction_id)
            if self.duplicate:
                obj["duplicate"] = True
        return obj
