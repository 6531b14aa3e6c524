"""Rows as JSON, kept only for ``app.payments`` (``service``, ``outbox``) until its answers are
typed messages; operator answers are declared as :class:`app.web.messages.Answer` models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from asyncpg import Record


def rfc3339(moment: datetime | None) -> str | None:
    """``2026-05-18T11:42:18Z`` (milliseconds when there are any); None stays None."""
    if moment is None:
        return None
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{moment.microsecond // 1000:03d}Z" if moment.microsecond else "Z")


def record(row: Record | dict[str, Any]) -> dict[str, Any]:
    """A row as a JSON-ready dict: times as RFC 3339 strings."""
    return {k: rfc3339(v) if isinstance(v, datetime) else v for k, v in dict(row).items()}
