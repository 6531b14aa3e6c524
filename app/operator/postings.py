"""A player's history: the postings of its ledger, and statements over a period."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, get_args

import asyncpg
from pydantic import ConfigDict, Field

from app.db import Queries
from app.fields import Balance, Count, Currency, DigitsId, Identifier, Int64, OneOf, Time
from app.seamless import events
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
# What a result's credit was: the event's kinds (ledger_transactions.result_kind, carried by its
# corrections too; a test compares the table's CHECK). A row of before contract 1.1 has none: a win.
RESULT_KINDS: tuple[str, ...] = events.KINDS
ResultKind = Annotated[str, OneOf.of(RESULT_KINDS)]
CREDITED_RESULTS = ("result", "result_change")
"""The postings that carry a result's kind."""


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
    ref_transaction_id: str | None = Field(
        description="the bet a cancel refunds, the result a correction changes"
    )
    result_kind: ResultKind | None = Field(
        description="a result's or a correction's kind of credit (`win` for those posted before "
        "kinds existed); null on other postings"
    )
    free_round_id: DigitsId | None = Field(
        description="a bet of a free round: its grant (the bet stakes 0); null otherwise"
    )
    promo_id: str | None = Field(
        description="a promo_win's promotion (tournament, cash drop, campaign); null otherwise"
    )
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
        description="per kind of posting, the kinds that occurred; `promo_win` (credits "
        "outside game rounds) is its own line"
    )
    results_by_kind: dict[ResultKind, StatementTotal] = Field(
        description="the results and their corrections (the `result` and `result_change` "
        "lines) split by the result's kind of credit, the kinds that occurred"
    )
    free_round_bets: Count = Field(description="bets of free rounds (in `bet`, each staking 0)")


def transaction(row: asyncpg.Record) -> Transaction:
    source: str = row["source"]
    promo = row["kind"] == "promo_win"  # its reference is the promotion, not a posting
    free_round = row["free_round_id"]
    return Transaction(
        id=str(row["id"]),
        kind=row["kind"],
        provider=None if source.startswith("#") else source,
        transaction_id=row["external_id"],
        round_id=row["round_id"],
        game_id=row["game_id"],
        ref_transaction_id=None if promo else row["ref_external_id"],
        result_kind=(row["result_kind"] or "win") if row["kind"] in CREDITED_RESULTS else None,
        free_round_id=None if free_round is None else str(free_round),
        promo_id=row["ref_external_id"] if promo else None,
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
    """Opening and closing balance over [since, until) and what moved it, by kind of posting;
    the results again by their kind of credit, and how many bets were of free rounds."""
    if until <= since:
        raise InvalidRequest("to must be after from", field="to")
    player = await conn.fetchrow(*q.get_player(player_id=player_id))
    if player is None:
        raise NotFound(f"player {player_id!r} not found")
    rows = await conn.fetch(*q.statement_totals(player_id=player_id, since=since, until=until))
    totals: dict[Kind, StatementTotal] = {}
    by_result: dict[ResultKind, StatementTotal] = {}
    free_round_bets = 0
    for r in rows:
        line = StatementTotal(count=r["count"], total=r["total"])
        totals[r["kind"]] = _add(totals.get(r["kind"]), line)
        if r["result_kind"] is not None:
            by_result[r["result_kind"]] = _add(by_result.get(r["result_kind"]), line)
        if r["free_round"]:
            free_round_bets += r["count"]
    return Statement(
        player_id=player_id,
        currency=player["currency"],
        since=since,
        until=until,
        opening_balance=await conn.fetchval(*q.balance_before(player_id=player_id, at=since)),
        closing_balance=await conn.fetchval(*q.balance_before(player_id=player_id, at=until)),
        totals=totals,
        results_by_kind=by_result,
        free_round_bets=free_round_bets,
    )


def _add(a: StatementTotal | None, b: StatementTotal) -> StatementTotal:
    return b if a is None else StatementTotal(count=a.count + b.count, total=a.total + b.total)


@api.get(
    "/v1/players/{player_id}/transactions",
    summary="A player's postings, newest first",
    roles=READ,
    query=TimeRange,
    answers=[(200, TransactionPage, "A page of postings")],
    errors=(400, 404),
)
async def list_player_transactions(c: Call, player_id: str, query: TimeRange) -> TransactionPage:
    return await transactions(c.conn, c.w.queries, player_id, query)


async def transactions(
    conn: asyncpg.Connection, q: Queries, player_id: str, query: TimeRange
) -> TransactionPage:
    """A page of the player's postings, newest first (``wallet player show`` reads it too)."""
    after = pagination.decode(query.cursor, 2)
    if await conn.fetchrow(*q.get_player(player_id=player_id)) is None:
        raise NotFound(f"player {player_id!r} not found")
    at, last_id = (
        (pagination.cursor_time(after[0]), pagination.cursor_int(after[1]))
        if after
        else (None, None)
    )
    rows = await conn.fetch(
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
