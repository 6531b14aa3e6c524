"""Parse and validate a decrypted seamless event into a typed event, or refuse it with R3.

Types are strict: a JSON boolean, float or string is never an amount, and a number is never an
identifier. Unknown extra fields are ignored, as the contract says. The JSON itself is strict too
(:mod:`app.strict_json`): a duplicate key or deep nesting makes the payload malformed.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, fields
from typing import Any

import orjson

from app import strict_json
from app.seamless.outcome import Refusal

IDENTIFIER = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
CURRENCY = re.compile(r"[A-Z]{3}")
# 10^15 minor units is ten trillion euros: far above any real stake, far below BIGINT overflow.
MAX_AMOUNT = 10**15
MAX_TOKEN_LENGTH = 256


@dataclass(frozen=True, slots=True)
class Event:
    event: str
    request_id: str
    timestamp: int
    player_id: str


@dataclass(frozen=True, slots=True)
class Login(Event):
    session_token: str


@dataclass(frozen=True, slots=True)
class Balance(Event):
    session_token: str | None


@dataclass(frozen=True, slots=True)
class Logout(Event):
    session_token: str


@dataclass(frozen=True, slots=True)
class Bet(Event):
    session_token: str
    transaction_id: str
    round_id: str
    game_id: str
    amount: int
    currency: str


@dataclass(frozen=True, slots=True)
class Cancel(Event):
    transaction_id: str
    ref_transaction_id: str
    round_id: str
    currency: str
    amount: int | None


@dataclass(frozen=True, slots=True)
class Result(Event):
    transaction_id: str
    round_id: str
    game_id: str
    amount: int
    currency: str
    round_closed: bool


@dataclass(frozen=True, slots=True)
class ResultChange(Event):
    transaction_id: str
    ref_transaction_id: str
    round_id: str
    amount: int
    currency: str


MONEY_EVENTS = frozenset({"bet", "cancel", "result", "result_change"})

# Per event class, the fields that make an event the same event: all but the timestamp, which a
# provider refreshes when it seals a retry again.
_IDENTITY: dict[type[Event], tuple[str, ...]] = {}


def digest(event: Event) -> bytes:
    """16 bytes that differ for two events with one request_id unless every field but the
    timestamp is the same (the contract's test for a replay versus a conflicting reuse)."""
    cls = type(event)
    names = _IDENTITY.get(cls)
    if names is None:
        names = _IDENTITY[cls] = tuple(f.name for f in fields(cls) if f.name != "timestamp")
    values = [getattr(event, name) for name in names]
    return hashlib.blake2b(orjson.dumps(values), digest_size=16).digest()


class _Fields:
    """Typed access to one event object; every failure names its field."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def _present(self, name: str) -> Any:
        if name not in self.data or self.data[name] is None:
            raise Refusal("R3", "malformed_request", f"missing field: {name}")
        return self.data[name]

    def identifier(self, name: str) -> str:
        value = self._present(name)
        if not isinstance(value, str) or not IDENTIFIER.fullmatch(value):
            raise Refusal(
                "R3", "invalid_field", f"{name}: must be 1 to 64 characters of [A-Za-z0-9_.:-]"
            )
        return value

    def token(self, name: str) -> str:
        value = self._present(name)
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_TOKEN_LENGTH:
            raise Refusal("R3", "invalid_field", f"{name}: must be a non-empty string")
        return value

    def optional_token(self, name: str) -> str | None:
        return self.token(name) if self.data.get(name) is not None else None

    def amount(self, name: str, *, minimum: int) -> int:
        value = self._present(name)
        # bool is a subclass of int in Python; a JSON true is not an amount.
        if type(value) is not int:
            raise Refusal("R3", "invalid_field", f"{name}: must be an integer in minor units")
        if not minimum <= value <= MAX_AMOUNT:
            raise Refusal(
                "R3", "invalid_field", f"{name}: must be between {minimum} and {MAX_AMOUNT}"
            )
        return value

    def optional_amount(self, name: str, *, minimum: int) -> int | None:
        return self.amount(name, minimum=minimum) if self.data.get(name) is not None else None

    def currency(self, name: str) -> str:
        value = self._present(name)
        if not isinstance(value, str) or not CURRENCY.fullmatch(value):
            raise Refusal("R3", "invalid_field", f"{name}: must be an ISO 4217 code like EUR")
        return value

    def timestamp(self, name: str) -> int:
        value = self._present(name)
        if type(value) is not int:
            raise Refusal("R3", "invalid_field", f"{name}: must be integer unix seconds")
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.data.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise Refusal("R3", "invalid_field", f"{name}: must be true or false")
        return value


def decode(plaintext: bytes) -> dict[str, Any]:
    """The event object of a decrypted payload (R3 malformed_request if it is not one)."""
    try:
        data = strict_json.loads(plaintext)
    except strict_json.StrictJsonError as exc:
        raise Refusal("R3", "malformed_request", f"payload: {exc}") from None
    except ValueError:
        raise Refusal("R3", "malformed_request", "payload is not UTF-8 JSON") from None
    if not isinstance(data, dict):
        raise Refusal("R3", "malformed_request", "payload is not a JSON object")
    return data


def readable(data: dict[str, Any], name: str) -> str | None:
    """An identifier field of the object when it is valid (to echo ``request_id``, or to look up
    the player of a refused event)."""
    value = data.get(name)
    return value if isinstance(value, str) and IDENTIFIER.fullmatch(value) else None


def parse(data: dict[str, Any]) -> Event:
    """A typed event from a decoded object; raises :class:`Refusal` (R3) naming the field."""
    f = _Fields(data)
    name = data.get("event")
    if name is None:
        raise Refusal("R3", "malformed_request", "missing field: event")
    if not isinstance(name, str) or name not in PARSERS:
        # Never str() a value the caller chose: a deeply nested list cannot even be printed.
        shown = repr(name[:64]) if isinstance(name, str) else f"a JSON {_json_type(name)}"
        raise Refusal("R3", "unknown_event", f"unknown event: {shown}")
    base = (name, f.identifier("request_id"), f.timestamp("timestamp"), f.identifier("player_id"))
    return PARSERS[name](base, f)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "array" if isinstance(value, list) else "object"


def _login(base: tuple[str, str, int, str], f: _Fields) -> Event:
    return Login(*base, session_token=f.token("session_token"))


def _balance(base: tuple[str, str, int, str], f: _Fields) -> Event:
    return Balance(*base, session_token=f.optional_token("session_token"))


def _logout(base: tuple[str, str, int, str], f: _Fields) -> Event:
    return Logout(*base, session_token=f.token("session_token"))


def _bet(base: tuple[str, str, int, str], f: _Fields) -> Event:
    return Bet(
        *base,
        session_token=f.token("session_token"),
        transaction_id=f.identifier("transaction_id"),
        round_id=f.identifier("round_id"),
        game_id=f.identifier("game_id"),
        amount=f.amount("amount", minimum=1),
        currency=f.currency("currency"),
    )


def _cancel(base: tuple[str, str, int, str], f: _Fields) -> Event:
    return Cancel(
        *base,
        transaction_id=f.identifier("transaction_id"),
        ref_transaction_id=f.identifier("ref_transaction_id"),
        round_id=f.identifier("round_id"),
        currency=f.currency("currency"),
        amount=f.optional_amount("amount", minimum=1),
    )


def _result(base: tuple[str, str, int, str], f: _Fields) -> Event:
    return Result(
        *base,
        transaction_id=f.identifier("transaction_id"),
        round_id=f.identifier("round_id"),
        game_id=f.identifier("game_id"),
        amount=f.amount("amount", minimum=0),
        currency=f.currency("currency"),
        round_closed=f.flag("round_closed", True),
    )


def _result_change(base: tuple[str, str, int, str], f: _Fields) -> Event:
    return ResultChange(
        *base,
        transaction_id=f.identifier("transaction_id"),
        ref_transaction_id=f.identifier("ref_transaction_id"),
        round_id=f.identifier("round_id"),
        amount=f.amount("amount", minimum=0),
        currency=f.currency("currency"),
    )


PARSERS = {
    "login": _login,
    "balance": _balance,
    "logout": _logout,
    "bet": _bet,
    "cancel": _cancel,
    "result": _result,
    "result_change": _result_change,
}
