"""JSON in from callers, parsed strictly: orjson's rules plus no duplicate keys and bounded depth.

orjson already refuses what JSON does not allow (NaN, Infinity, invalid UTF-8, lone surrogates,
a byte-order mark, trailing bytes) and nests at most 1024 levels, but it keeps the *last* of two
equal keys. ``{"amount": 1, "amount": 100000}`` would then mean one thing to the wallet and
possibly another to whatever logged, signed or inspected the body first, so a duplicate key is
refused instead. So is nesting deeper than :data:`MAX_DEPTH`: no request of ours needs it.

The check is cheap on the hot path (two byte counts, well under a microsecond for an event).
Every key of a valid document is followed by exactly one ``:`` outside strings, so the number of
``:`` bytes is at least the number of keys. When it equals the keys of the top-level object, no
nested object exists and no key can repeat: done. Only when ``:`` also appears inside strings, or
objects nest, is the body parsed a second time, by the standard library with a hook that sees
every key (about ten microseconds for an event). Likewise the depth is only walked when there are
at least :data:`MAX_DEPTH` ``[`` and ``{`` bytes, which is needed for that many levels.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# Deeper than any request body of the wallet needs; far below orjson's own limit of 1024 levels
# and the standard library's recursion limit, which the duplicate check's second parse meets.
MAX_DEPTH = 32


class StrictJsonError(ValueError):
    """Valid JSON that the wallet refuses: a duplicate key, or too deep a nesting."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def loads(raw: bytes) -> Any:
    """The document in ``raw``; raises ``ValueError`` (``orjson.JSONDecodeError`` for invalid
    JSON, :class:`StrictJsonError` for a duplicate key or too deep a nesting)."""
    data = orjson.loads(raw)
    if type(data) is dict and raw.count(b":") == len(data):
        # No nested object and no colon in a string, so no key can repeat; only lists nest, and
        # there are at least as many "[" bytes as levels of them.
        if raw.count(b"[") >= MAX_DEPTH:
            _check_depth(data)
        return data
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH:
        _check_depth(data)
    _check_duplicates(raw)
    return data


def _check_depth(data: Any) -> None:
    """Refuse nesting deeper than :data:`MAX_DEPTH`, without recursion (orjson allows 1024)."""
    level: list[Any] = [data]
    depth = 0
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            raise StrictJsonError(f"JSON nests deeper than {MAX_DEPTH} levels")
        deeper: list[Any] = []
        for value in level:
            if type(value) is dict:
                deeper.extend(v for v in value.values() if type(v) in (dict, list))
            elif type(value) is list:
                deeper.extend(v for v in value if type(v) in (dict, list))
        level = deeper


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                shown = key[:64] if key[:64].isprintable() else repr(key[:64])
                raise StrictJsonError(f"duplicate key: {shown}", key[:64])
            seen.add(key)
    return obj


_DECODER = json.JSONDecoder(object_pairs_hook=_refuse_duplicates)


def _check_duplicates(raw: bytes) -> None:
    # orjson has accepted ``raw``: it is valid UTF-8 JSON of bounded depth, so this parse cannot
    # fail for any reason but a duplicate key.
    _DECODER.decode(raw.decode())
