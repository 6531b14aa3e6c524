"""Keyset pagination for every list: ``?limit=N&cursor=...`` in, ``{data, next_cursor}`` out.

The cursor is the last row's sort key, opaque to callers (URL-safe base64 of a JSON array).
Pages stay correct while rows are added, unlike offsets.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import BeforeValidator, Field

from app.fields import Rule
from app.web.errors import InvalidRequest
from app.web.messages import Body

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
LIMIT_RULE = f"an integer from 1 to {MAX_LIMIT}"


def _digits(raw: object) -> object:
    # isdigit() alone accepts "²" and "٣", which int() refuses; and no limit needs 4 digits.
    if isinstance(raw, str):
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 3):
            raise ValueError(LIMIT_RULE)
        return int(raw)
    return raw


Limit = Annotated[
    int,
    Field(ge=1, le=MAX_LIMIT, description="page size"),
    BeforeValidator(_digits),
    Rule(LIMIT_RULE),
]


class PageQuery(Body):
    """``?limit=N&cursor=...`` of every list; a list with filters extends it."""

    limit: Limit = DEFAULT_LIMIT
    cursor: str | None = Field(None, description="`next_cursor` of the previous page")


def encode(key: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode().rstrip("=")


def decode(raw: str | None, size: int) -> list[Any] | None:
    """A cursor this API gave out (a list of ``size`` values), or None for the first page."""
    if raw is None or raw == "":
        return None
    try:
        values = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError):
        values = None
    if not isinstance(values, list) or len(values) != size or not all(map(_plain, values)):
        raise InvalidRequest("cursor is not one this API gave out", field="cursor")
    return values


def _plain(value: Any) -> bool:
    """A value a cursor of ours can hold: a bigint, or a short text without U+0000."""
    if type(value) is int:
        return -(2**63) <= value < 2**63
    return type(value) is str and len(value) <= 256 and "\x00" not in value


def _foreign() -> InvalidRequest:
    return InvalidRequest("cursor is not one this API gave out", field="cursor")


def cursor_time(value: Any) -> datetime:
    """A timestamp stored in a cursor."""
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError("naive")
        moment.astimezone(UTC)  # Postgres gets it in UTC: year 1 at +01:00 would overflow
    except (TypeError, ValueError, OverflowError):
        raise _foreign() from None
    return moment


def cursor_int(value: Any) -> int:
    """A bigint key stored in a cursor (a bool is not one)."""
    if type(value) is not int or not -(2**63) <= value < 2**63:
        raise _foreign()
    return value


def cursor_text(value: Any) -> str:
    """A text key stored in a cursor."""
    if not isinstance(value, str) or len(value) > 256 or "\x00" in value:
        raise _foreign()
    return value


def after_text(raw: str | None) -> str | None:
    """Where a page keyed by one text column starts: the key of a ``cursor``, None at first."""
    after = decode(raw, 1)
    return cursor_text(after[0]) if after else None


def after_int(raw: str | None) -> int | None:
    """Where a page keyed by one bigint column starts: the key of a ``cursor``, None at first."""
    after = decode(raw, 1)
    return cursor_int(after[0]) if after else None


def page(
    rows: Sequence[Any],
    size: int,
    key: Callable[[Any], Sequence[Any]],
    shape: Callable[[Any], dict[str, Any]],
) -> dict[str, Any]:
    """The response for ``rows`` fetched with ``LIMIT size + 1``."""
    shown, next_cursor = window(rows, size, key)
    return {"data": [shape(r) for r in shown], "next_cursor": next_cursor}


def window(
    rows: Sequence[Any], size: int, key: Callable[[Any], Sequence[Any]]
) -> tuple[Sequence[Any], str | None]:
    """The rows of the page (fetched with ``LIMIT size + 1``) and the cursor of the next one."""
    more = len(rows) > size
    rows = rows[:size]
    return rows, encode(key(rows[-1])) if more and rows else None
