"""HMAC-SHA256 signatures of webhook bodies: the sandbox PSP signs, the wallet verifies.

The header is ``t=<unix seconds>,v1=<hex HMAC-SHA256 of f"{t}.".encode() + body>``. The timestamp
is inside the MAC, so a captured delivery cannot be replayed later under a fresh timestamp, and the
receiver's tolerance window bounds how long a captured delivery stays usable.

A header may carry several ``v1=`` entries: a sender rotating its secret signs with the old and the
new one, and a receiver holding either accepts. Entries of other schemes (``v0=``, a future
``v2=``) are ignored, so a sender can add one without breaking receivers that only know ``v1``.
"""

from __future__ import annotations

import hashlib
import hmac

SCHEME = "v1"
# Longer digit strings are not a time, and int() of a very long one costs (and can raise).
_MAX_TIMESTAMP_DIGITS = 12


class SignatureError(Exception):
    """The header does not prove the body. ``reason`` is ``missing``, ``malformed``, ``stale`` or
    ``mismatch``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _mac(secret: bytes, body: bytes, t: int) -> str:
    return hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, body: bytes, t: int) -> str:
    """The signature header value for ``body`` sent at unix time ``t``."""
    return f"t={t},{SCHEME}={_mac(secret, body, t)}"


def verify(
    secret: bytes, body: bytes, header: str | None, *, now: float, tolerance: int = 300
) -> None:
    """Return if ``header`` signs ``body`` under ``secret`` within ``tolerance`` seconds of
    ``now`` (either way); raise :class:`SignatureError` otherwise.

    The MAC is checked before the age, so ``stale`` is only ever said of an authentic delivery
    (a genuine but old or replayed one), which is what a receiver wants to log differently.
    """
    if header is None or not header.strip():
        raise SignatureError("missing")
    timestamp: int | None = None
    candidates: list[bytes] = []
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep or not name:
            raise SignatureError("malformed")
        if name == "t":
            if (
                timestamp is not None
                or not value.isascii()
                or not value.isdigit()
                or len(value) > _MAX_TIMESTAMP_DIGITS
            ):
                raise SignatureError("malformed")
            timestamp = int(value)
        elif name == SCHEME:
            candidates.append(value.encode())
    if timestamp is None or not candidates:
        raise SignatureError("malformed")
    expected = _mac(secret, body, timestamp).encode()
    # Every candidate is compared, in constant time each, so the time taken does not tell which
    # entry (or how much of it) matched.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("mismatch")
    if abs(now - timestamp) > tolerance:
        raise SignatureError("stale")
