"""What the back office reads: the seamless call history, the ledger check, the daily report
and the audit log. Nothing here writes."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

import asyncpg
from pydantic import Field, SerializerFunctionWrapHandler, StringConstraints, model_serializer

from app import gauges
from app.audit import ACTIONS
from app.db import Queries
from app.fields import Count, Currency, DigitsId, Identifier, Int64, OneOf, Rule, Time
from app.ledger import service as ledger
from app.operator.postings import CREDITED_RESULTS, RESULT_KINDS, ResultKind
from app.seamless.events import MODELS
from app.seamless.outcome import CODES, MESSAGES
from app.web import pagination, routing
from app.web.auth import READ
from app.web.messages import Answer, Body, Page
from app.web.query import Day, TimeRange, day_bounds
from app.web.routing import Api

history = Api("history")
api = Api("reports")

EVENTS = tuple(MODELS)
FILTER_RULE = "at most 200 characters, without U+0000"
Filter = Annotated[str, StringConstraints(max_length=200, pattern=r"^[^\x00]*$"), Rule(FILTER_RULE)]


# --- the seamless call history ------------------------------------------------------------------


class CallQuery(TimeRange):
    provider: Identifier | None = Field(None, description="provider code, exact match")
    event: Annotated[str, OneOf.of(EVENTS)] | None = Field(None, description="event name")
    code: Annotated[str, OneOf.of(CODES)] | None = Field(None, description="R-code")
    reason: Annotated[str, OneOf.of(MESSAGES)] | None = Field(
        None, description="reason, like insufficient_funds"
    )
    player_id: Identifier | None = Field(None, description="player, exact match")


class Call(Answer):
    """One seamless webhook call as the wallet answered it."""

    id: DigitsId
    provider: str
    event: str | None = Field(
        description=f"the event as sent: one of {', '.join(EVENTS)}, or an unknown one "
        "(answered R3 `unknown_event`); null when the body had none"
    )
    request_id: str | None
    player_id: str | None
    transaction_id: str | None
    code: Annotated[str, OneOf.of(CODES)]
    reason: Annotated[str, OneOf.of(MESSAGES)]
    wallet_transaction_id: DigitsId | None
    duplicate: bool
    replayed: bool
    latency_us: Count
    created_at: Time


class CallPage(Page[Call]):
    """A page of Call objects, keyset-paged."""


async def calls(
    conn: asyncpg.Connection, q: Queries, query: CallQuery, *, failures_only: bool
) -> CallPage:
    """A page of the call history (``wallet calls`` reads it too); only R1 to R3 calls with
    ``failures_only``."""
    last_id = pagination.after_int(query.cursor)
    rows = await conn.fetch(
        *q.seamless_calls(
            provider=query.provider,
            event=query.event,
            code=query.code,
            reason=query.reason,
            player_id=query.player_id,
            since=query.since,
            until=query.until,
            cursor_id=last_id,
            failures_only=failures_only,
            limit=query.limit + 1,
        ),
    )
    shown, next_cursor = pagination.window(rows, query.limit, lambda r: [r["id"]])
    data = [
        Call(
            **{
                **r,
                "id": str(r["id"]),
                "wallet_transaction_id": None
                if r["wallet_transaction_id"] is None
                else str(r["wallet_transaction_id"]),
            }
        )
        for r in shown
    ]
    return CallPage(data=data, next_cursor=next_cursor)


@history.get(
    "/v1/webhooks/calls",
    summary="The seamless call history, newest first",
    roles=READ,
    query=CallQuery,
    answers=[(200, CallPage, "A page of calls")],
    errors=(400,),
)
async def list_calls(c: routing.Call, query: CallQuery) -> CallPage:
    return await calls(c.conn, c.w.queries, query, failures_only=False)


@history.get(
    "/v1/webhooks/failures",
    summary="Only the calls answered R1 to R3, newest first",
    roles=READ,
    query=CallQuery,
    answers=[(200, CallPage, "A page of calls")],
    errors=(400,),
    description="R4 is the player's balance, not a fault, so it is not listed here.",
)
async def list_failures(c: routing.Call, query: CallQuery) -> CallPage:
    return await calls(c.conn, c.w.queries, query, failures_only=True)


# --- the ledger check and the daily report ------------------------------------------------------


class LedgerCheck(Answer):
    model_config = {
        "json_schema_extra": {
            "if": {"properties": {"ok": {"const": False}}},
            "then": {"required": ["problems"]},
            "else": {"not": {"required": ["problems"]}},
        }
    }

    ok: bool
    problems: dict[
        Annotated[str, OneOf.of(ledger.CHECKS)],
        Annotated[list[dict[str, Any]], Field(max_length=ledger.SAMPLE)],
    ] = Field(
        None,  # type: ignore[arg-type]  # absent when ok, never null
        description=f"up to {ledger.SAMPLE} offending rows per broken invariant",
    )

    @model_serializer(mode="wrap")
    def _absent_when_ok(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        out = handler(self)
        if out.get("problems") is None:
            out.pop("problems", None)
        return out


@api.get(
    "/v1/ledger/check",
    summary="Check the ledger's invariants in one snapshot",
    roles=READ,
    answers=[(200, LedgerCheck, "ok, or what broke")],
    operation_id="checkLedger",
)
async def check_ledger(c: routing.Call) -> LedgerCheck:
    result = await ledger.check(c.conn, c.w.queries)
    # The gauges show this result too, in every process (until the next periodic check).
    await gauges.record_ledger_check(c.conn, c.w.queries, c.w.metrics, result)
    return LedgerCheck.model_validate(result)


class DailyQuery(Body):
    date: Day | None = Field(None, description="YYYY-MM-DD; default today (UTC)")


class WinTotal(Answer):
    count: Count = Field(description="results of this kind")
    sum: Int64 = Field(description="their credits plus their corrections")


class DailyReportRow(Answer):
    """One provider and currency over the day.

    GGR is the game's: bets - refunds - wins, the wins of every kind (jackpots, bonuses and the
    wins of free rounds are paid in rounds of the game). Promotions (`promo_win`: tournament
    prizes, cash drops, campaign payouts) are credits outside rounds, reported apart: a cost of
    marketing, not of play, so they are taken off only in `ggr_after_promos`."""

    provider: str
    currency: Currency
    bet_count: Count = Field(description="bets that staked money (free-round bets are apart)")
    bet_sum: Int64 = Field(description="bets placed")
    free_round_bet_count: Count = Field(description="bets of free rounds, each staking 0")
    result_count: Count = Field(description="results of every kind")
    win_sum: Int64 = Field(description="results plus corrections, of every kind")
    wins: dict[ResultKind, WinTotal] = Field(
        description="`result_count` and `win_sum` split by the result's kind of credit (a "
        "correction counts with its result's kind): every kind, zero when none",
        json_schema_extra={"required": list(RESULT_KINDS)},
    )
    cancel_count: Count = Field(description="cancels that refunded money")
    cancel_sum: Int64 = Field(description="refunds")
    promo_count: Count = Field(description="promo_win credits")
    promo_sum: Int64 = Field(description="promo_win credits, apart from the game's wins")
    ggr: Int64 = Field(description="bets - refunds - wins (of every kind); promo wins excluded")
    ggr_after_promos: Int64 = Field(description="ggr - promo_sum")


class DailyReport(Answer):
    date: date
    time_zone: Literal["UTC"]
    rows: list[DailyReportRow]


def _report_row(provider: str, currency: str, groups: list[asyncpg.Record]) -> DailyReportRow:
    """Add up one provider's and currency's groups of postings (the daily_report query)."""

    def count(kind: str, **where: object) -> int:
        return sum(g["count"] for g in groups if g["kind"] == kind and _has(g, where))

    def total(*kinds: str, **where: object) -> int:
        return sum(g["total"] for g in groups if g["kind"] in kinds and _has(g, where))

    bets, refunds = -total("bet"), total("cancel")
    wins, promos = total(*CREDITED_RESULTS), total("promo_win")
    return DailyReportRow(
        provider=provider,
        currency=currency,
        bet_count=count("bet", free_round=False),
        bet_sum=bets,
        free_round_bet_count=count("bet", free_round=True),
        result_count=count("result"),
        win_sum=wins,
        wins={
            kind: WinTotal(
                count=count("result", result_kind=kind),
                sum=total(*CREDITED_RESULTS, result_kind=kind),
            )
            for kind in RESULT_KINDS
        },
        cancel_count=sum(g["moved"] for g in groups if g["kind"] == "cancel"),
        cancel_sum=refunds,
        promo_count=count("promo_win"),
        promo_sum=promos,
        ggr=bets - refunds - wins,
        ggr_after_promos=bets - refunds - wins - promos,
    )


def _has(group: asyncpg.Record, where: dict[str, object]) -> bool:
    return all(group[k] == v for k, v in where.items())


async def daily_report(conn: asyncpg.Connection, q: Queries, day: date) -> DailyReport:
    """Per provider and currency for one UTC day: bets, wins by kind, refunds, promotions, GGR."""
    start, end = day_bounds(day)
    groups: dict[tuple[str, str], list[asyncpg.Record]] = {}
    for g in await conn.fetch(*q.daily_report(since=start, until=end)):
        groups.setdefault((g["provider"], g["currency"]), []).append(g)
    rows = [_report_row(p, c, found) for (p, c), found in groups.items()]
    return DailyReport(date=day, time_zone="UTC", rows=rows)


@api.get(
    "/v1/reports/daily",
    summary="Bets, wins by kind, refunds, promotions and GGR per provider and currency for "
    "one UTC day",
    roles=READ,
    query=DailyQuery,
    answers=[(200, DailyReport, "The report")],
    errors=(400,),
    operation_id="dailyReport",
)
async def daily_report_route(c: routing.Call, query: DailyQuery) -> DailyReport:
    return await daily_report(c.conn, c.w.queries, query.date or datetime.now(UTC).date())


# --- the audit log ------------------------------------------------------------------------------


class AuditQuery(TimeRange):
    actor: Filter | None = Field(None, description="exact actor, like apikey:ak_1a2b3c4d5e6f")
    action: Filter | None = Field(None, description="exact action, like player.status")
    target: Filter | None = Field(None, description="exact target, like player:p-42")


class AuditEntry(Answer):
    id: DigitsId
    actor: str = Field(description="admin:bootstrap, apikey:<id> or cli:<user>")
    action: Annotated[str, OneOf.of(ACTIONS)]
    target: str = Field(description="like player:<id>, provider:<code>, apikey:<id>")
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None
    created_at: Time


class AuditEntryPage(Page[AuditEntry]):
    """A page of AuditEntry objects, keyset-paged."""


@api.get(
    "/v1/audit",
    summary="The audit log, newest first",
    roles=READ,
    query=AuditQuery,
    answers=[(200, AuditEntryPage, "A page of audit entries")],
    errors=(400,),
)
async def list_audit(c: routing.Call, query: AuditQuery) -> AuditEntryPage:
    last_id = pagination.after_int(query.cursor)
    rows = await c.conn.fetch(
        *c.w.queries.audit_entries(
            actor=query.actor,
            action=query.action,
            target=query.target,
            since=query.since,
            until=query.until,
            cursor_id=last_id,
            limit=query.limit + 1,
        ),
    )
    shown, next_cursor = pagination.window(rows, query.limit, lambda r: [r["id"]])
    data = [AuditEntry(**{**r, "id": str(r["id"])}) for r in shown]
    return AuditEntryPage(data=data, next_cursor=next_cursor)


routes = [*history.routes, *api.routes]
