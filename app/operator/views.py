"""How operator resources look on the wire: RFC 3339 UTC times, ids as strings."""

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


def transaction(row: Record) -> dict[str, Any]:
    out = record(row)
    out["id"] = str(row["id"])
    source = out.pop("source")
    out["provider"] = None if source.startswith("#") else source
    out["transaction_id"] = out.pop("external_id")
    out["ref_transaction_id"] = out.pop("ref_external_id")
    return out


def call(row: Record) -> dict[str, Any]:
    out = record(row)
    out["id"] = str(row["id"])
    wallet_tx = row["wallet_transaction_id"]
    out["wallet_transaction_id"] = str(wallet_tx) if wallet_tx is not None else None
    return out


def audit(row: Record) -> dict[str, Any]:
    out = record(row)
    out["id"] = str(row["id"])
    return out
