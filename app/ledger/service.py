"""Ledger invariants, checked after the fact.

The schema already refuses most breakage (balanced postings are written in one transaction,
balances carry CHECK >= 0, postings and entries are append-only); this check proves it over the
whole ledger and reports precisely what broke, if anything did.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import asyncpg

from app.db import Queries

# How many offending rows each finding lists; the check is for people, not for export.
SAMPLE = 100

CHECKS = {
    "unbalanced_transactions": "check_unbalanced_transactions",
    "player_balance_mismatches": "check_player_balances",
    "negative_balances": "check_negative_balances",
    "orphan_entries": "check_orphan_entries",
    "transaction_delta_mismatches": "check_transaction_deltas",
}


# Told after each invariant: its number (from 1), its name, and how many offending rows it found.
OnStep = Callable[[int, str, int], None]


async def check(
    conn: asyncpg.Connection,
    queries: Queries,
    on_step: OnStep | None = None,
) -> dict[str, Any]:
    """``{"ok": True}`` when every invariant holds, else ``ok: False`` and what broke.

    Each invariant is one statement over the whole ledger; ``on_step(i, name, found)`` is told
    when the i-th has run (``wallet ledger check --progress``: a large ledger takes minutes)."""
    problems: dict[str, list[dict[str, Any]]] = {}
    # One snapshot for all checks, so a posting committed half-way through cannot look broken.
    # Inside a caller's transaction, that transaction decides what is seen.
    snapshot = (
        contextlib.nullcontext()
        if conn.is_in_transaction()
        else conn.transaction(isolation="repeatable_read", readonly=True)
    )
    async with snapshot:
        for i, (name, query) in enumerate(CHECKS.items(), 1):
            rows = await conn.fetch(*getattr(queries, query)(limit=SAMPLE))
            if rows:
                problems[name] = [dict(r) for r in rows]
            if on_step is not None:
                on_step(i, name, len(rows))
    if not problems:
        return {"ok": True}
    return {"ok": False, "problems": problems}
