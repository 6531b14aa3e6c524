"""The constrained types that requests, events and answers share, declared once.

Each is an ``Annotated`` type: pydantic validates with it, the OpenAPI document shows it as JSON
Schema, and code that checks a value outside a message (a path parameter, a header, a log label)
uses the compiled pattern beside it. The patterns are anchored so that JSON Schema's
search-anywhere reading of ``pattern`` means the same as Python's ``fullmatch``.

A type's :class:`Rule` says in words what a valid value is; it is the field's description in the
document and the message of a 400 for a bad value (``amount must be an integer ...``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, Field, GetCoreSchemaHandler, PlainSerializer, StringConstraints
from pydantic_core import CoreSchema, core_schema


@dataclass(frozen=True, slots=True)
class Rule:
    """What a valid value is, in words that follow "must be"."""

    text: str


@dataclass(frozen=True, slots=True)
class OneOf(Rule):
    """A string among ``values``: the tuple the owning code keeps (statuses, event types...),
    read here instead of retyped as a ``Literal``. ``Annotated[str, OneOf.of(STATUSES)]``
    validates like ``Literal[...]``, shows as ``enum`` in the document, and its 400 says
    ``status must be one of a, b, c``."""

    values: tuple[str, ...] = ()

    @classmethod
    def of(cls, values: Iterable[str]) -> OneOf:
        found = tuple(values)
        return cls(f"one of {', '.join(found)}", found)

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.literal_schema(list(self.values))


IDENTIFIER_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"
IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
CURRENCY = re.compile(CURRENCY_PATTERN)

# 10^15 minor units is ten trillion euros: far above any real stake, far below BIGINT overflow.
MAX_AMOUNT = 10**15

IDENTIFIER_RULE = "1 to 64 characters of [A-Za-z0-9_.:-]"
CURRENCY_RULE = "an ISO 4217 code like EUR"
TEXT_RULE = "a string of 1 to 200 characters, not only spaces"

Identifier = Annotated[
    str,
    StringConstraints(pattern=IDENTIFIER_PATTERN),
    Rule(IDENTIFIER_RULE),
    Field(description=IDENTIFIER_RULE),
]
Currency = Annotated[
    str,
    StringConstraints(pattern=CURRENCY_PATTERN),
    Rule(CURRENCY_RULE),
    Field(description=CURRENCY_RULE, examples=["EUR"]),
]


def amount_rule(minimum: int, maximum: int = MAX_AMOUNT) -> str:
    return f"an integer (minor units) from {minimum} to {maximum}"


Amount = Annotated[
    int,
    Field(ge=0, le=MAX_AMOUNT, description=amount_rule(0), json_schema_extra={"format": "int64"}),
    Rule(amount_rule(0)),
]
PositiveAmount = Annotated[
    int,
    Field(ge=1, le=MAX_AMOUNT, description=amount_rule(1), json_schema_extra={"format": "int64"}),
    Rule(amount_rule(1)),
]
SignedAmount = Annotated[
    int,
    Field(
        ge=-MAX_AMOUNT,
        le=MAX_AMOUNT,
        description=amount_rule(-MAX_AMOUNT),
        json_schema_extra={"format": "int64"},
    ),
    Rule(amount_rule(-MAX_AMOUNT)),
]
Timestamp = Annotated[
    int,
    Rule("integer unix seconds"),
    Field(description="Unix time in seconds", examples=[1779104538]),
]
Text = Annotated[
    str,
    # The length counts every character sent, spaces too (the document's maxLength); what is
    # kept is the text without its surrounding spaces.
    StringConstraints(min_length=1, max_length=200, pattern=r"\S"),
    AfterValidator(str.strip),
    Rule(TEXT_RULE),
    Field(description=TEXT_RULE),
]
DigitsId = Annotated[str, Field(pattern=r"^[0-9]+$", description="a string of digits")]


def rfc3339(moment: datetime) -> str:
    """``2026-05-18T11:42:18Z`` (milliseconds when there are any), always UTC."""
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{moment.microsecond // 1000:03d}Z" if moment.microsecond else "Z")


Time = Annotated[
    datetime,
    PlainSerializer(rfc3339, return_type=str, when_used="json"),
    Field(json_schema_extra={"format": "date-time"}, description="RFC 3339, UTC"),
]
