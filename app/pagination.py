"""Keyset pagination for every list: ``?limit=N&cursor=...`` in, ``{data, next_cursor}`` out.

The cursor is the last row's sort key, opaque to callers (URL-safe base64 of a JSON array).
Pages stay correct while rows are added, unlike offsets.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import orjson
from starlette.requests import Request

from app.errors import InvalidRequest

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


def limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be an integer from 1 to {MAX_LIMIT}", field="limit")
    return int(raw)


def encode(key: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode().rstrip("=")


def cursor(request: Request, size: int) -> list[Any] | None:
    """The decoded cursor (a list of ``size`` values), or None for the first page."""
    raw = request.query_params.get("cursor")
    if raw is None or raw == "":
        return None
    try:
        values = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError):
        values = None
    if not isinstance(values, list) or len(values) != size:
        raise InvalidRequest("cursor is not one this API gave out", field="cursor")
    return values


def cursor_time(value: Any) -> datetime:
    """A timestamp stored in a cursor."""
    try:
        return datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise InvalidRequest("cursor is not one this API gave out", field="cursor") from None


def page(
    rows: Sequence[Any],
    size: int,
    key: Callable[[Any], Sequence[Any]],
    shape: Callable[[Any], dict[str, Any]],
) -> dict[str, Any]:
    """The response for ``rows`` fetched with ``LIMIT size + 1``."""
    more = len(rows) > size
    rows = rows[:size]
    return {
        "data": [shape(r) for r in rows],
        "next_cursor": encode(key(rows[-1])) if more and rows else None,
    }
