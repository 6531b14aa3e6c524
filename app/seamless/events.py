"""The seamless events, declared once as typed messages: validation, the OpenAPI schemas and the
event digest all derive from the models below.

Types are strict: a JSON boolean, float or string is never an amount, and a number is never an
identifier. Unknown extra fields are ignored, as the contract says. The JSON itself is strict too
(:mod:`app.strict_json`, in front of the models: pydantic would keep the last of two equal keys):
a duplicate key or deep nesting makes the payload malformed.

The contract has one reason per answer, so a refusal names the first bad field in the order the
model declares them (the order of docs/seamless.md): a missing or null field is R3
``malformed_request`` "missing field: X", a wrong type or value R3 ``invalid_field`` "X: ..."
with the text that the field's type carries (:class:`Says`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args, get_origin

import annotated_types
import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from app import fields, strict_json
from app.fields import IDENTIFIER as IDENTIFIER  # re-exported: what other modules import here
from app.fields import MAX_AMOUNT as MAX_AMOUNT
from app.seamless.outcome import REASONS, Code, Reason, Refusal

MAX_TOKEN_LENGTH = 256


@dataclass(frozen=True, slots=True)
class Says:
    """The refusal text of a field of this type whose value is wrong (``invalid``), and, for a
    number, out of its bounds (``out_of_range``, with ``{ge}`` and ``{le}`` filled in)."""

    invalid: str
    out_of_range: str | None = None


Identifier = Annotated[fields.Identifier, Says("must be 1 to 64 characters of [A-Za-z0-9_.:-]")]
Currency = Annotated[fields.Currency, Says("must be an ISO 4217 code like EUR")]
Timestamp = Annotated[
    fields.Timestamp,
    Field(description="Unix seconds; more than 300 s off the wallet's clock is R2"),
    Says("must be integer unix seconds"),
]
_IN_RANGE = "must be between {ge} and {le}"
Amount = Annotated[fields.Amount, Says("must be an integer in minor units", _IN_RANGE)]
PositiveAmount = Annotated[
    fields.PositiveAmount, Says("must be an integer in minor units", _IN_RANGE)
]
SessionToken = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_TOKEN_LENGTH),
    Field(description="The session token the operator gave the game client"),
    Says("must be a non-empty string"),
]
FreeRoundAmount = Annotated[
    int,
    annotated_types.Ge(0),
    annotated_types.Le(0),
    Says("must be 0 for a bet of a free round", "must be 0 for a bet of a free round"),
]
FreeRoundId = Annotated[
    fields.Identifier,
    Field(
        description="A free-round grant's `free_round_id`: the bet debits nothing and uses a round"
    ),
    Says("must be 1 to 64 characters of [A-Za-z0-9_.:-]"),
]
KINDS = ("win", "jackpot", "bonus", "free_round")
"""The kinds of a result's credit (``result.kind``), reported apart."""
# A null kind means the default, as an absent one does.
ResultKind = Annotated[
    Literal["win", "jackpot", "bonus", "free_round"],
    BeforeValidator(lambda value: "win" if value is None else value),
    Field(
        description="What the credit is; a win of a round played with free rounds is stored "
        "as `free_round`"
    ),
    Says(f"must be one of {', '.join(KINDS)}"),
]
# A null round_closed means the default, as an absent one does.
RoundClosed = Annotated[
    bool,
    BeforeValidator(
        lambda value: True if value is None else value, json_schema_input_type=bool | None
    ),
    Field(description="false: more results of the round follow"),
    Says("must be true or false"),
]


class BaseEvent(BaseModel):
    """The fields every event has. ``event`` is the tag that picks the model."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    event: str
    request_id: Identifier
    timestamp: Timestamp
    player_id: Identifier


class Login(BaseEvent):
    """Opens the game: checks the session, answers the balance."""

    event: Literal["login"]
    session_token: SessionToken


class Balance(BaseEvent):
    """Asks the balance; a session token is accepted but not checked."""

    event: Literal["balance"]
    session_token: SessionToken | None = None


class Logout(BaseEvent):
    """Ends the session; results and refunds may still arrive."""

    event: Literal["logout"]
    session_token: SessionToken


class Bet(BaseEvent):
    """Debits ``amount`` for a round of a game; with ``free_round_id``, uses a round of that
    free-round grant instead (``amount`` 0: :class:`FreeRoundBet` checks such a bet)."""

    event: Literal["bet"]
    session_token: SessionToken
    transaction_id: Identifier
    round_id: Identifier
    game_id: Identifier
    amount: Annotated[
        PositiveAmount,
        WithJsonSchema({"type": "integer", "format": "int64", "minimum": 0, "maximum": MAX_AMOUNT}),
    ] = Field(description="Minor units, more than 0; exactly 0 with `free_round_id`")
    currency: Currency
    free_round_id: FreeRoundId | None = None


class FreeRoundBet(Bet):
    """A bet of a free round: what :func:`parse` checks a bet with a ``free_round_id`` against
    (its amount is 0). The document shows one bet schema (:class:`Bet`)."""

    amount: FreeRoundAmount
    free_round_id: FreeRoundId


class Cancel(BaseEvent):
    """Refunds the bet ``ref_transaction_id``; ``amount``, when sent, must equal the bet's."""

    event: Literal["cancel"]
    transaction_id: Identifier
    ref_transaction_id: Identifier = Field(description="The transaction_id of the bet")
    round_id: Identifier
    currency: Currency
    amount: Amount | None = Field(None, description="Must equal the bet's (0 for a free round)")


class Result(BaseEvent):
    """Credits the win of a round (``amount`` 0 records a loss)."""

    event: Literal["result"]
    transaction_id: Identifier
    round_id: Identifier
    game_id: Identifier
    amount: Amount = Field(description="The win; 0 records a loss")
    currency: Currency
    round_closed: RoundClosed = True
    kind: ResultKind = "win"


class ResultChange(BaseEvent):
    """Corrects the result ``ref_transaction_id`` to the total ``amount``."""

    event: Literal["result_change"]
    transaction_id: Identifier
    ref_transaction_id: Identifier = Field(description="The transaction_id of the result")
    round_id: Identifier
    amount: Amount = Field(description="The corrected total of the result")
    currency: Currency


class EndRound(BaseEvent):
    """Closes a round without a result; a closed or unknown round is answered ok, unchanged."""

    event: Literal["end_round"]
    round_id: Identifier
    game_id: Identifier | None = None


class PromoWin(BaseEvent):
    """Credits ``amount`` outside game rounds: a tournament prize, a cash drop, a campaign."""

    event: Literal["promo_win"]
    transaction_id: Identifier
    promo_id: Identifier = Field(description="The tournament, cash drop or campaign")
    amount: PositiveAmount
    currency: Currency
    round_id: Identifier | None = Field(None, description="Recorded only; no round is opened")
    game_id: Identifier | None = None


Event = Annotated[
    Login | Balance | Logout | Bet | Cancel | Result | ResultChange | EndRound | PromoWin,
    Field(discriminator="event"),
]
"""Any seamless event, told apart by its ``event`` field (a tagged union)."""

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)

MODELS: dict[str, type[BaseEvent]] = {
    get_args(model.model_fields["event"].annotation)[0]: model
    for model in get_args(get_args(Event)[0])
}
"""The model of each event name (its ``event`` literal), in the union's order."""

MONEY_EVENTS = frozenset({"bet", "cancel", "result", "result_change", "promo_win"})


def schema_name(event: str) -> str:
    """The document's name of an event's schema: `bet` -> `BetEvent`."""
    return "".join(part.title() for part in event.split("_")) + "Event"


def _answer_rules() -> list[JsonValue]:
    """The schema's rules that no field's type says, from the :class:`Reason` enum: each code
    allows its own reasons, only R0 carries a posting, and R2 (sent in plain text) never a
    balance; :meth:`Outcome.to_object` is the code that keeps them."""
    rules: list[JsonValue] = []
    for code, reasons in REASONS.items():
        then: dict[str, Any] = {"reason": {"enum": [reason.value for reason in reasons]}}
        if code != "R0":
            then.update(transaction_id=False, duplicate=False)
        if code == "R2":
            then.update(player_id=False, balance=False, currency=False)
        rules.append(
            {"if": {"properties": {"code": {"const": code}}}, "then": {"properties": then}}
        )
    return rules


class Answer(BaseModel):
    """The answer to every event (decrypted), or a plain R2 answer."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra={
            "dependentRequired": {
                "balance": ["player_id", "currency"],
                "duplicate": ["transaction_id"],
            },
            "allOf": _answer_rules(),
        },
    )

    code: Code
    reason: Annotated[
        Reason, WithJsonSchema({"type": "string", "enum": [reason.value for reason in Reason]})
    ]
    message: str = Field(description="For people; may name the offending field")
    # Absent, never null: the wire object leaves out what an answer does not carry.
    request_id: fields.Identifier = Field(  # type: ignore[assignment]
        None, description="The event's request_id, echoed whenever it could be read"
    )
    player_id: fields.Identifier = Field(  # type: ignore[assignment]
        None, description="With the balance, on every answer about an existing player but R2"
    )
    balance: fields.Amount = Field(None)  # type: ignore[assignment]
    currency: fields.Currency = Field(None)  # type: ignore[assignment]
    transaction_id: fields.DigitsId = Field(  # type: ignore[assignment]
        None, description="The wallet's transaction id of an R0 money event", examples=["1042"]
    )
    duplicate: Literal[True] = Field(
        None,  # type: ignore[arg-type]
        description="true: an earlier delivery already posted (an idempotent repeat)",
    )


# Optional fields that events gained after digests were first stored: one of them is part of the
# digest only when it is not at its default, so an event that does not use it keeps the digest
# it always had (a replay across the upgrade is still a replay).
_ADDED_LATER = frozenset({"free_round_id", "kind"})

# Per event model, the fields that make an event the same event: all but the timestamp, which a
# provider refreshes when it seals a retry again.
_CHECKED: tuple[type[BaseEvent], ...] = (*MODELS.values(), FreeRoundBet)
"""Every model :func:`parse` validates with."""
_IDENTITY: dict[type[BaseEvent], tuple[str, ...]] = {
    model: tuple(name for name in model.model_fields if name not in _ADDED_LATER | {"timestamp"})
    for model in _CHECKED
}
_ADDED: dict[type[BaseEvent], tuple[tuple[str, Any], ...]] = {
    model: tuple(
        (name, field.default) for name, field in model.model_fields.items() if name in _ADDED_LATER
    )
    for model in _IDENTITY
}


def digest(event: BaseEvent) -> bytes:
    """16 bytes that differ for two events with one request_id unless every field but the
    timestamp is the same (the contract's test for a replay versus a conflicting reuse).

    Stored claims and replay records carry it: its input (the field values in the models' order,
    as a JSON array, then ``[name, value]`` of each later field not at its default) must not
    change.
    """
    model = type(event)
    values: list[Any] = [getattr(event, name) for name in _IDENTITY[model]]
    for name, default in _ADDED[model]:
        value = getattr(event, name)
        if value != default:
            values.append([name, value])
    return hashlib.blake2b(orjson.dumps(values), digest_size=16).digest()


def decode(plaintext: bytes) -> dict[str, Any]:
    """The event object of a decrypted payload (R3 malformed_request if it is not one)."""
    try:
        data = strict_json.loads(plaintext)
    except strict_json.StrictJsonError as exc:
        raise Refusal(Reason.MALFORMED_REQUEST, f"payload: {exc}") from None
    except ValueError:
        raise Refusal(Reason.MALFORMED_REQUEST, "payload is not UTF-8 JSON") from None
    if not isinstance(data, dict):
        raise Refusal(Reason.MALFORMED_REQUEST, "payload is not a JSON object")
    return data


def readable(data: dict[str, Any], name: str) -> str | None:
    """An identifier field of the object when it is valid (to echo ``request_id``, or to look up
    the player of a refused event)."""
    value = data.get(name)
    return value if isinstance(value, str) and IDENTIFIER.fullmatch(value) else None


def parse(data: dict[str, Any]) -> Event:
    """A typed event from a decoded object; raises :class:`Refusal` (R3) naming the field.

    Validates the object :func:`decode` gave rather than the bytes again: faster (1.4 us for a
    bet against 1.8 us for ``validate_json``, which would parse a second time), and the guard,
    the models and the digest read numbers one way (orjson's: 2^64 and above are floats).
    """
    name = data.get("event")
    if name is None:
        raise Refusal(Reason.MALFORMED_REQUEST, "missing field: event")
    model = MODELS.get(name) if isinstance(name, str) else None
    if model is None:
        # Never str() a value the caller chose: a deeply nested list cannot even be printed.
        shown = repr(name[:64]) if isinstance(name, str) else f"a JSON {_json_type(name)}"
        raise Refusal(Reason.UNKNOWN_EVENT, f"unknown event: {shown}")
    if model is Bet and isinstance(data.get("free_round_id"), str):
        model = FreeRoundBet
    try:
        return model.model_validate(data)  # type: ignore[return-value]
    except ValidationError as exc:
        raise _refusal(model, exc.errors(include_url=False, include_context=False)) from None


def _refusal(model: type[BaseEvent], errors: list[ErrorDetails]) -> Refusal:
    """The contract's refusal for the first bad field, in the model's order of fields (an
    error's ``loc`` is the field)."""
    order = list(model.model_fields)
    error = min(errors, key=lambda e: order.index(str(e["loc"][0])))
    name = str(error["loc"][0])
    if error["type"] == "missing" or error["input"] is None:
        return Refusal(Reason.MALFORMED_REQUEST, f"missing field: {name}")
    says, ge, le = _SAYS[model][name]
    if says.out_of_range is not None and error["type"] in ("greater_than_equal", "less_than_equal"):
        return Refusal(Reason.INVALID_FIELD, f"{name}: {says.out_of_range.format(ge=ge, le=le)}")
    return Refusal(Reason.INVALID_FIELD, f"{name}: {says.invalid}")


def _explained(field: FieldInfo) -> tuple[Says, int | None, int | None]:
    """The :class:`Says` of a field's type and its bounds (looking inside ``X | None``)."""
    metadata = list(field.metadata)
    for arg in get_args(field.annotation):
        if get_origin(arg) is Annotated:
            for m in arg.__metadata__:
                metadata += m.metadata if isinstance(m, FieldInfo) else [m]
    says = next((m for m in metadata if isinstance(m, Says)), Says("is not valid"))
    ge = next((m.ge for m in metadata if isinstance(m, annotated_types.Ge)), None)
    le = next((m.le for m in metadata if isinstance(m, annotated_types.Le)), None)
    return says, ge, le  # type: ignore[return-value]


_SAYS = {
    model: {name: _explained(field) for name, field in model.model_fields.items()}
    for model in _IDENTITY
}


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "array" if isinstance(value, list) else "object"
