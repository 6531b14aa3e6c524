"""Read-only views for the back office: paged lists, call investigations and reports."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg

from app.db import Queries
from app.operator import views
from app.web import pagination
from app.web.errors import InvalidRequest, NotFound
from app.web.query import day_bounds


@dataclass(frozen=True, slots=True)
class CallFilter:
    """Filters of the seamless call history; None means any."""

    provider: str | None = None
    event: str | None = None
    code: str | None = None
    player_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    failures_only: bool = False


async def player_transactions(
    conn: asyncpg.Connection,
    q: Queries,
    player_id: str,
    size: int,
    after: list[Any] | None,
    since: datetime | None,
    until: datetime | None,
) -> dict[str, Any]:
    if await conn.fetchrow(q.get_player, player_id) is None:
        raise NotFound(f"player {player_id!r} not found")
    at, last_id = (
        (pagination.cursor_time(after[0]), pagination.cursor_int(after[1]))
        if after
        else (None, None)
    )
    rows = await conn.fetch(q.player_transactions, player_id, since, until, at, last_id, size + 1)
    return pagination.page(
        rows, size, lambda r: [r["created_at"].isoformat(), r["id"]], views.transaction
    )


async def calls(
    conn: asyncpg.Connection, q: Queries, f: CallFilter, size: int, after: list[Any] | None
) -> dict[str, Any]:
    last_id = pagination.cursor_int(after[0]) if after else None
    rows = await conn.fetch(
        q.seamless_calls,
        f.provider,
        f.event,
        f.code,
        f.player_id,
        f.since,
        f.until,
        last_id,
        f.failures_only,
        size + 1,
    )
    return pagination.page(rows, size, lambda r: [r["id"]], views.call)


async def audit_entries(
    conn: asyncpg.Connection,
    q: Queries,
    actor: str | None,
    action: str | None,
    target: str | None,
    since: datetime | None,
    until: datetime | None,
    size: int,
    after: list[Any] | None,
) -> dict[str, Any]:
    last_id = pagination.cursor_int(after[0]) if after else None
    rows = await conn.fetch(q.audit_entries, actor, action, target, since, until, last_id, size + 1)
    return pagination.page(rows, size, lambda r: [r["id"]], views.audit)


async def players(
    conn: asyncpg.Connection, q: Queries, status: str | None, size: int, after: list[Any] | None
) -> dict[str, Any]:
    last = pagination.cursor_text(after[0]) if after else None
    rows = await conn.fetch(q.players_page, status, last, size + 1)
    return pagination.page(rows, size, lambda r: [r["player_id"]], views.record)


async def providers(
    conn: asyncpg.Connection, q: Queries, size: int, after: list[Any] | None
) -> dict[str, Any]:
    last = pagination.cursor_text(after[0]) if after else None
    rows = await conn.fetch(q.providers_page, last, size + 1)
    return pagination.page(rows, size, lambda r: [r["code"]], views.record)


async def api_keys(
    conn: asyncpg.Connection, q: Queries, size: int, after: list[Any] | None
) -> dict[str, Any]:
    last = pagination.cursor_text(after[0]) if after else None
    rows = await conn.fetch(q.api_keys_page, last, size + 1)
    return pagination.page(rows, size, lambda r: [r["id"]], views.record)


async def daily_report(conn: asyncpg.Connection, q: Queries, day: date) -> dict[str, Any]:
    """Per provider and currency for one UTC day: bets, wins, refunds and GGR."""
    start, end = day_bounds(day)
    rows = await conn.fetch(q.daily_report, start, end)
    return {"date": day.isoformat(), "time_zone": "UTC", "rows": [dict(r) for r in rows]}


async def statement(
    conn: asyncpg.Connection, q: Queries, player_id: str, since: datetime, until: datetime
) -> dict[str, Any]:
    """Opening and closing balance over [since, until) and what moved it, by kind."""
    if until <= since:
        raise InvalidRequest("to must be after from", field="to")
    player = await conn.fetchrow(q.get_player, player_id)
    if player is None:
        raise NotFound(f"player {player_id!r} not found")
    opening = await conn.fetchval(q.balance_before, player_id, since)
    closing = await conn.fetchval(q.balance_before, player_id, until)
    totals = {
        r["kind"]: {"count": r["count"], "total": r["total"]}
        for r in await conn.fetch(q.statement_totals, player_id, since, until)
    }
    return {
        "player_id": player_id,
        "currency": player["currency"],
        "from": views.rfc3339(since),
        "to": views.rfc3339(until),
        "opening_balance": opening,
        "closing_balance": closing,
        "totals": totals,
    }
