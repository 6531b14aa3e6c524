"""Rounds for operators: the listing (stale ones among them), a round's timeline for disputes,
the settlement of a stale round, and the stale-rounds gauge.

A round is stale when it is open, has a bet not cancelled, and is older than
``WALLET_ROUND_STALE_SECONDS`` (``wallet_round_stale``, sql/functions/rounds.sql: the one
definition). The provider never closed it, so the player's stake hangs; an operator may settle
it: ``refund`` gives back its open bets, ``close`` closes it as lost. Both are done by one SQL
function under the player's account row lock, the lock of every money event of that player, so
a settlement and a provider's late result or cancel are serialised: the late result then finds
the round closed (R1 ``round_closed``), the late cancel of a refunded bet finds the
settlement's refund (R0 duplicate).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Annotated, Literal, get_args

import asyncpg
from pydantic import Field

from app.audit import Actor, audit
from app.db import Queries
from app.fields import Balance, Count, DigitsId, Identifier, Int64, OneOf, Text, Time
from app.metrics import Metrics
from app.operator.postings import ResultKind
from app.web import pagination
from app.web.auth import MONEY, PLAYER_ADMIN, READ
from app.web.errors import InvalidRequest, NotFound
from app.web.messages import Answer, Body, Page
from app.web.routing import Api, Call

log = logging.getLogger(__name__)

api = Api(
    "rounds",
    path_params={
        "provider": "the provider's code",
        "player_id": "the player",
        "round_id": "the provider's round id",
    },
)

# A round's state, as wallet_round_state derives it (sql/functions/rounds.sql).
State = Literal["open", "cancelled", "closed", "settled"]
STATES: tuple[State, ...] = get_args(State)
# What a listing may ask for: a state, or the stale rounds (open ones past the age).
FILTERS = (*STATES, "stale")
# What a listing of every player's rounds serves: the stale ones (wallet_stale_rounds). Any state
# is listed per player (sql/migrations/019: nothing is indexed per round for listings).
EVERY_PLAYER_FILTERS = ("stale",)
ClosedBy = Literal["result", "end_round", "operator"]
SettleAction = Literal["refund", "close"]
SETTLE_ACTIONS: tuple[SettleAction, ...] = get_args(SettleAction)
# A timeline entry: a posting of the round (its ledger kind) or a round event (round_events).
PostingEvent = Literal["bet", "cancel", "result", "result_change"]
RoundEvent = Literal["end_round", "settle_refund", "settle_close"]
TimelineEvent = Literal[PostingEvent, RoundEvent]
# Settling touches money (a refund) and the back office's open cases: both sides may.
SETTLE_ROLES = PLAYER_ADMIN | MONEY
# How often each process counts the stale rounds for /metrics.
STALE_GAUGE_SECONDS = 60.0


class RoundQuery(pagination.PageQuery):
    provider: Identifier | None = Field(None, description="only this provider's rounds")
    player_id: Identifier | None = Field(None, description="only this player's rounds")
    state: Annotated[str, OneOf.of(FILTERS)] | None = Field(
        None,
        description="only rounds in this state; `stale`: open ones with a bet not cancelled, "
        "older than WALLET_ROUND_STALE_SECONDS. Without `player_id`, it must be "
        + " or ".join(f"`{f}`" for f in EVERY_PLAYER_FILTERS),
    )


class Round(Answer):
    provider: Identifier
    player_id: Identifier
    round_id: Identifier
    game_id: str | None
    state: State
    stale: bool = Field(description="open with a bet not cancelled, past the stale age")
    bets: Count
    cancelled_bets: Count
    results: Count
    created_at: Time
    closed_at: Time | None
    closed_by: ClosedBy | None
    settled_action: SettleAction | None


class RoundPage(Page[Round]):
    """A page of Round objects, newest first."""


class TimelineEntry(Answer):
    """A posting of the round, or a round event that posts nothing (end_round, settlement)."""

    event: TimelineEvent
    transaction_id: str | None = Field(
        description="the provider's transaction id (a settlement's refund: `#settle:<bet's id>`)"
        "; null for a round event"
    )
    wallet_transaction_id: DigitsId | None = Field(description="the posting's id in the ledger")
    amount: Int64 | None = Field(description="as sent (a refund: the bet's amount)")
    delta: Int64 | None = Field(description="the change of the player's balance")
    balance_after: Balance | None
    ref_transaction_id: str | None = Field(
        description="the bet a cancel refunds, the result a change corrects"
    )
    result_kind: ResultKind | None = Field(description="a result's or a correction's kind")
    free_round_id: DigitsId | None = Field(description="the grant a free-round bet used")
    request_id: str | None = Field(
        description="the provider's request_id; for a settlement, the operator call's X-Request-Id"
    )
    actor: str | None = Field(description="who settled the round; null otherwise")
    reason: str | None = Field(description="why the operator settled the round")
    created_at: Time


class RoundDetail(Round):
    timeline: list[TimelineEntry] = Field(description="every posting and event, oldest first")


class RoundSettle(Body):
    action: Annotated[str, OneOf.of(SETTLE_ACTIONS)] = Field(
        description="`refund`: give back every bet not yet cancelled; `close`: close the round "
        "as it stands, its bets lost"
    )
    reason: Text


def _round(row: asyncpg.Record) -> Round:
    return Round(**{k: row[k] for k in Round.model_fields})


async def list_rounds(
    conn: asyncpg.Connection, q: Queries, query: RoundQuery, age_seconds: int
) -> RoundPage:
    """A page of rounds, newest first: a player's (by their first posting), or every player's
    stale ones; 400 for any other listing."""
    stale = query.state == "stale"
    common = {
        "provider": query.provider,
        "age_seconds": age_seconds,
        "limit": query.limit + 1,
    }
    if query.player_id is not None:
        after = pagination.decode(query.cursor, 2)
        rows = await conn.fetch(
            *q.player_rounds(
                player_id=query.player_id,
                state="open" if stale else query.state,
                stale_only=stale,
                cursor_at=pagination.cursor_time(after[0]) if after else None,
                cursor_id=pagination.cursor_int(after[1]) if after else None,
                **common,
            )
        )
        shown, next_cursor = pagination.window(
            rows, query.limit, lambda r: [r["first_at"].isoformat(), r["first_id"]]
        )
    elif query.state in EVERY_PLAYER_FILTERS:  # stale
        after = pagination.decode(query.cursor, 4)
        rows = await conn.fetch(
            *q.stale_rounds(
                cursor_at=pagination.cursor_time(after[0]) if after else None,
                cursor_provider=pagination.cursor_text(after[1]) if after else None,
                cursor_player=pagination.cursor_text(after[2]) if after else None,
                cursor_round=pagination.cursor_text(after[3]) if after else None,
                **common,
            )
        )
        shown, next_cursor = pagination.window(
            rows,
            query.limit,
            lambda r: [r["created_at"].isoformat(), r["provider"], r["player_id"], r["round_id"]],
        )
    else:
        raise InvalidRequest(
            "give player_id, or state "
            + " or ".join(EVERY_PLAYER_FILTERS)
            + ": every player's rounds are listed only when stale",
            field="player_id",
        )
    return RoundPage(data=[_round(r) for r in shown], next_cursor=next_cursor)


async def round_detail(
    conn: asyncpg.Connection,
    q: Queries,
    provider: str,
    player_id: str,
    round_id: str,
    age_seconds: int,
) -> RoundDetail:
    """The round and its timeline (postings and round events by time); 404 when unknown."""
    key = {"provider": provider, "player_id": player_id, "round_id": round_id}
    row = await conn.fetchrow(*q.get_round(**key, age_seconds=age_seconds))
    if row is None:
        raise NotFound(f"round {round_id!r} of player {player_id!r} at {provider!r} not found")
    entries: list[tuple[tuple[datetime, int, int], TimelineEntry]] = []
    for p in await conn.fetch(*q.round_postings(**key)):
        entry = TimelineEntry(
            event=p["kind"],
            transaction_id=p["external_id"],
            wallet_transaction_id=str(p["id"]),
            amount=p["amount"],
            delta=p["delta"],
            balance_after=p["balance_after"],
            ref_transaction_id=p["ref_external_id"],
            result_kind=p["result_kind"],
            free_round_id=None if p["free_round_id"] is None else str(p["free_round_id"]),
            request_id=p["request_id"],
            actor=None,
            reason=None,
            created_at=p["created_at"],
        )
        entries.append(((p["created_at"], 0, p["id"]), entry))
    for e in await conn.fetch(*q.round_events(**key)):
        entry = TimelineEntry(
            event=e["event"],
            transaction_id=None,
            wallet_transaction_id=None,
            amount=None,
            delta=None,
            balance_after=None,
            ref_transaction_id=None,
            result_kind=None,
            free_round_id=None,
            request_id=e["request_id"],
            actor=e["actor"],
            reason=e["reason"],
            created_at=e["created_at"],
        )
        entries.append(((e["created_at"], 1, e["id"]), entry))
    entries.sort(key=lambda pair: pair[0])
    return RoundDetail(**_round(row).model_dump(), timeline=[e for _, e in entries])


async def settle(
    conn: asyncpg.Connection,
    q: Queries,
    provider: str,
    player_id: str,
    round_id: str,
    action: str,
    reason: str,
    actor: Actor,
    age_seconds: int,
) -> RoundDetail:
    """Settle a stale round (see the module's docstring), audited in the same transaction; the
    round after. 404 for an unknown round, 400 on ``state`` for one that is not stale."""
    key = {"provider": provider, "player_id": player_id, "round_id": round_id}
    async with conn.transaction():
        outcome = await conn.fetchval(
            *q.settle_round(
                **key,
                action=action,
                reason=reason,
                actor=actor.name,
                request_id=actor.request_id,
                age_seconds=age_seconds,
            )
        )
        if outcome == "round_not_found":
            raise NotFound(f"round {round_id!r} of player {player_id!r} at {provider!r} not found")
        if outcome != "ok":
            row = await conn.fetchrow(*q.get_round(**key, age_seconds=age_seconds))
            raise InvalidRequest(_why_not(outcome, row, age_seconds), field="state")
        settled = await round_detail(conn, q, provider, player_id, round_id, age_seconds)
        refunds = [e for e in settled.timeline if (e.transaction_id or "").startswith("#settle:")]
        await audit(
            conn,
            q,
            actor,
            "round.settle",
            f"round:{provider}/{player_id}/{round_id}",
            {"state": "open", "bets": settled.bets, "stale": True},
            {
                "state": settled.state,
                "action": action,
                "reason": reason,
                "refunded_bets": len(refunds),
                "refunded": sum(e.delta or 0 for e in refunds),
            },
        )
    return settled


def _why_not(outcome: str, row: asyncpg.Record, age_seconds: int) -> str:
    """Why a round may not be settled, in the words of a 400."""
    only = "; only a stale round may be settled"
    if outcome == "closed":
        return f"the round is closed (by {row['closed_by']})" + only
    if outcome == "settled":
        return f"the round is settled already ({row['settled_action']})" + only
    if outcome == "cancelled":
        return "every bet of the round is cancelled" + only
    if outcome == "no_open_bets":
        return "the round is open but has no bet left to settle" + only
    if outcome == "overflow":
        return (
            "refunding the round's bets would take the balance past the largest amount the "
            "wallet can hold; nothing was posted"
        )
    if outcome == "has_results":
        return (
            f"the round has {row['results']} result(s): its bets are settled, and a refund "
            "would pay them back on top of the win; close it instead"
        )
    stale_from = row["created_at"] + timedelta(seconds=age_seconds)
    return (
        f"the round is open but not stale yet: it is stale from {stale_from.isoformat()} "
        f"(WALLET_ROUND_STALE_SECONDS {age_seconds})" + only
    )


async def count_stale(pool: asyncpg.Pool, q: Queries, metrics: Metrics, age_seconds: int) -> None:
    """Sweep the rounds come of age into stale_rounds, then count the stale rounds per provider
    into the gauge."""
    async with pool.acquire() as conn:
        await conn.execute(*q.sweep_stale_rounds(age_seconds=age_seconds))
        rows = await conn.fetch(*q.stale_rounds_by_provider(age_seconds=age_seconds))
    metrics.stale_rounds_counted({r["provider"]: r["stale"] for r in rows})


async def count_stale_forever(
    pool: asyncpg.Pool, q: Queries, metrics: Metrics, age_seconds: int, interval: float
) -> None:
    """The gauge's refresh, run by the app's lifespan until it is cancelled: at start, then every
    ``interval`` seconds, so a scrape reads a number and never runs a query. Each process keeps
    its own count; a failed count keeps the last one."""
    while True:
        try:
            await count_stale(pool, q, metrics, age_seconds)
        except Exception as exc:  # noqa: BLE001 - the gauge keeps its last count, the task lives
            log.warning("counting stale rounds failed this time: %s", type(exc).__name__)
        await asyncio.sleep(interval)


@api.get(
    "/v1/rounds",
    summary="Rounds, newest first: open, stale, cancelled, closed or settled",
    roles=READ,
    query=RoundQuery,
    answers=[(200, RoundPage, "A page of rounds")],
    errors=(400,),
    operation_id="listRounds",
    description="By player (`player_id`, any state, newest first by the round's first "
    "posting) or, for every player, the stale rounds (`state=stale`; 400 on `player_id` "
    "otherwise). `provider` narrows either. A stale round is open, has a bet not "
    "cancelled and is older than WALLET_ROUND_STALE_SECONDS (default 86400): "
    "`POST .../settle` settles it.",
)
async def list_rounds_route(c: Call, query: RoundQuery) -> RoundPage:
    return await list_rounds(c.conn, c.w.queries, query, c.w.settings.round_stale_seconds)


@api.get(
    "/v1/rounds/{provider}/{player_id}/{round_id}",
    summary="A round and its timeline",
    roles=READ,
    answers=[(200, RoundDetail, "The round, with every posting and event, oldest first")],
    errors=(400, 404),
    description="What a dispute needs: each bet, cancel, result and correction with its "
    "amounts, balance, the provider's transaction and request ids and the ledger's id, "
    "and the round events that post nothing (an end_round that closed it, an operator's "
    "settlement with its actor, reason and request id).",
    operation_id="getRound",
)
async def get_round(c: Call, provider: str, player_id: str, round_id: str) -> RoundDetail:
    return await round_detail(
        c.conn, c.w.queries, provider, player_id, round_id, c.w.settings.round_stale_seconds
    )


@api.post(
    "/v1/rounds/{provider}/{player_id}/{round_id}/settle",
    summary="Settle a stale round: refund its open bets, or close it as lost",
    roles=SETTLE_ROLES,
    body=RoundSettle,
    answers=[(200, RoundDetail, "The round, settled, with its timeline")],
    errors=(400, 404, 409),
    idempotency="required",
    description="For a round the provider never closed. `refund` posts a refund of every bet "
    "not yet cancelled (transaction id `#settle:<bet's id>`; a free-round bet gives its "
    "round back); `close` posts nothing. The round is then `settled` (closed by `operator`): "
    "the provider's late result on it is R1 `round_closed`, its late cancel of a refunded "
    "bet R0 duplicate. Audited (`round.settle`, with the action and reason) with the "
    "settlement. 400 on `state` unless the round is stale (closed, cancelled, settled, or "
    "open but not stale yet: the message says which); 404 for an unknown round; 409 for an "
    "Idempotency-Key used with another request.",
)
async def settle_round(
    c: Call, provider: str, player_id: str, round_id: str, body: RoundSettle
) -> RoundDetail:
    return await settle(
        c.conn,
        c.w.queries,
        provider,
        player_id,
        round_id,
        body.action,
        body.reason,
        c.actor,
        c.w.settings.round_stale_seconds,
    )


routes = api.routes
