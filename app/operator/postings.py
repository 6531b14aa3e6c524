"""A player's history: the postings of its ledger, and statements over a period."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

import asyncpg
from pydantic import ConfigDict, Field

from app.db import Queries
from app.fields import Balance, Currency, DigitsId, Identifier, Int64, Time
from app.web import pagination
from app.web.auth import READ
from app.web.errors import InvalidRequest, NotFound
from app.web.messages import Answer, Page
from app.web.query import Span, TimeRange
from app.web.routing import Api, Call

api = Api("history", path_params={"player_id": "the player"})

# What a posting records (ledger_transactions.kind; a test compares the table's CHECK).
Kind = Literal[
    "bet",
    "cancel",
    "result",
    "result_change",
    "promo_win",
    "adjustment",
    "deposit",
    "withdrawal_hold",
    "withdrawal_release",
    "withdrawal_settle",
]
KINDS: tuple[Kind, ...] = get_args(Kind)


class Transaction(Answer):
    """One posting of the player's ledger."""

    id: DigitsId
    kind: Kind
    provider: str | None = Field(description="null for adjustments and payments")
    transaction_id: str = Field(
        description="the provider's id, an adjustment's Idempotency-Key, or a payment's id"
    )
    round_id: str | None
    game_id: str | None
    ref_transaction_id: str | None
    amount: Int64 | None = Field(
        description="as sent (a cancel's refund, an adjustment's signed amount); null for a "
        "cancel sent without `amount` (its refund is in `delta`, 0 for a bet never posted)"
    )
    delta: Int64 = Field(description="the change of the player's balance")
    balance_after: Balance
    currency: Currency
    request_id: str | None
    metadata: dict[str, Any] | None
    created_at: Time


class TransactionPage(Page[Transaction]):
    """A page of Transaction objects, keyset-paged."""


class StatementTotal(Answer):
    count: int = Field(ge=1)
    total: Int64 = Field(description="sum of balance changes")


class Statement(Answer):
    model_config = ConfigDict(populate_by_name=True)  # built as since=, until=

    player_id: Identifier
    currency: Currency
    since: Time = Field(alias="from")
    until: Time = Field(alias="to")
    opening_balance: Balance = Field(description="balance just before `from`")
    closing_balance: Balance = Field(description="balance just before `to`")
    totals: dict[Kind, StatementTotal] = Field(
        description="per kind of posting, the kinds that occurred"
    )


def transaction(row: asyncpg.Record) -> Transaction:
    source: str = row["source"]
    return Transaction(
        id=str(row["id"]),
        kind=row["kind"],
        provider=None if source.startswith("#") else source,
        transaction_id=row["external_id"],
        round_id=row["round_id"],
        game_id=row["game_id"],
        ref_transaction_id=row["ref_external_id"],
        amount=row["amount"],
        delta=row["delta"],
        balance_after=row["balance_after"],
        currency=row["currency"],
        request_id=row["request_id"],
        metadata=row["metadata"],
        created_at=row["created_at"],
    )


async def statement(
    conn: asyncpg.Connection, q: Queries, player_id: str, since: datetime, until: datetime
) -> Statement:
    """Opening and closing balance over [since, until) and what moved it, by kind."""
    if until <= since:
        raise InvalidRequest("to must be after from", field="to")
    player = await conn.fetchrow(*q.get_player(player_id=player_id))
    if player is None:
        raise NotFound(f"player {player_id!r} not found")
    totals = {
        r["kind"]: StatementTotal(count=r["count"], total=r["total"])
        for r in await conn.fetch(
            *q.statement_totals(player_id=player_id, since=since, until=until)
        )
    }
    return Statement(
        player_id=player_id,
        currency=player["currency"],
        since=since,
        until=until,
        opening_balance=await conn.fetchval(*q.balance_before(player_id=player_id, at=since)),
        closing_balance=await conn.fetchval(*q.balance_before(player_id=player_id, at=until)),
        totals=totals,
    )


@api.get(
    "/v1/players/{player_id}/transactions",
    summary="A player's postings, newest first",
    roles=READ,
    query=TimeRange,
    answers=[(200, TransactionPage, "A page of postings")],
    errors=(400, 404),
)
async def list_player_transactions(c: Call, player_id: str, query: TimeRange) -> TransactionPage:
    q = c.w.queries
    after = pagination.decode(query.cursor, 2)
    if await c.conn.fetchrow(*q.get_player(player_id=player_id)) is None:
        raise NotFound(f"player {player_id!r} not found")
    at, last_id = (
        (pagination.cursor_time(after[0]), pagination.cursor_int(after[1]))
        if after
        else (None, None)
    )
    rows = await c.conn.fetch(
        *q.player_transactions(
            player_id=player_id,
            since=query.since,
            until=query.until,
            cursor_at=at,
            cursor_id=last_id,
            limit=query.limit + 1,
        )
    )
    shown, next_cursor = pagination.window(
        rows, query.limit, lambda r: [r["created_at"].isoformat(), r["id"]]
    )
    return TransactionPage(data=[transaction(r) for r in shown], next_cursor=next_cursor)


@api.get(
    "/v1/players/{player_id}/statement",
    summary="Opening and closing balance over a period, and totals by kind",
    roles=READ,
    query=Span,
    answers=[(200, Statement, "The statement")],
    errors=(400, 404),
    description="By default the last 30 days up to now. `to` must be after `from`.",
    operation_id="getPlayerStatement",
)
async def player_statement(c: Call, player_id: str, query: Span) -> Statement:
    until = query.until or datetime.now(UTC)
    since = query.since or until - timedelta(days=30)
    return await statement(c.conn, c.w.queries, player_id, since, until)


routes = api.routes
