"""The constrained types that requests, events and answers share, declared once.

Each is an ``Annotated`` type: pydantic validates with it, the OpenAPI document shows it as JSON
Schema, and code that checks a value outside a message (a path parameter, a header, a log label)
uses the compiled pattern beside it. The patterns are anchored so that JSON Schema's
search-anywhere reading of ``pattern`` means the same as Python's ``fullmatch``.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, StringConstraints

IDENTIFIER_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"
IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
CURRENCY = re.compile(CURRENCY_PATTERN)

# 10^15 minor units is ten trillion euros: far above any real stake, far below BIGINT overflow.
MAX_AMOUNT = 10**15

Identifier = Annotated[
    str,
    StringConstraints(pattern=IDENTIFIER_PATTERN),
    Field(description="1 to 64 characters of `[A-Za-z0-9_.:-]`", examples=["p-000123"]),
]
Currency = Annotated[
    str,
    StringConstraints(pattern=CURRENCY_PATTERN),
    Field(description="ISO 4217 code", examples=["EUR"]),
]
Amount = Annotated[
    int,
    Field(ge=0, le=MAX_AMOUNT, description="Integer minor units (cents for EUR)"),
]
PositiveAmount = Annotated[
    int,
    Field(ge=1, le=MAX_AMOUNT, description="Integer minor units (cents for EUR), at least 1"),
]
SignedAmount = Annotated[
    int,
    Field(ge=-MAX_AMOUNT, le=MAX_AMOUNT, description="Integer minor units, signed"),
]
Timestamp = Annotated[int, Field(description="Unix time in seconds", examples=[1779104538])]
