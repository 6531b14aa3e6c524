"""Free-round grants (contract 1.1): the operator gives a player ``rounds`` bets of ``bet_value``
at one provider's game until ``expires_at``; the provider spends them with ``bet.free_round_id``.

This module is the operator's side: grant, list, read and withdraw. The spending is the seamless
bet's (``sql/functions/seamless.sql``): it takes a round with one guarded ``UPDATE`` of the grant's
row, and a cancel gives it back. A withdrawal takes that row's lock too, so a bet and a withdrawal
of one grant run one after the other, and the answer shows the grant as it is after both.

A grant moves no money: its bets debit nothing and its wins are credited as ``free_round``
results. So granting is a back-office act of the ``operator`` role (with ``admin``), not a
``finance`` one; everyone may read. A grant is ``Idempotency-Key``-required (one key, one grant,
however the request is retried or raced) and audited, its withdrawal audited once.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal, get_args

import asyncpg
from pydantic import BeforeValidator, Field

from app.audit import Actor, audit
from app.db import Queries
from app.fields import Count, Currency, DigitsId, Identifier, PositiveAmount, Rule, Time
from app.web import pagination
from app.web.auth import PLAYER_ADMIN, READ
from app.web.errors import InvalidRequest, NotFound
from app.web.idempotency import IDEMPOTENT_ACTION
from app.web.messages import Answer, Body, Page
from app.web.routing import Api, Call, KeyParameter

api = Api(
    "players",
    path_params={"player_id": "the player", "free_round_id": "the grant's `free_round_id`"},
)

# The names free_round_state (sql/functions/free_rounds.sql) answers, in its order of precedence.
State = Literal["active", "used_up", "expired", "withdrawn"]
STATES: tuple[State, ...] = get_args(State)

MAX_ROUNDS = 100_000  # the table's CHECK (sql/migrations/016_game_side.sql)
MAX_AHEAD = timedelta(days=366)
ROUNDS_RULE = f"an integer from 1 to {MAX_ROUNDS}"
EXPIRY_RULE = (
    "an RFC 3339 time with a zone, like 2026-05-18T11:42:18Z, in the future and at most "
    f"{MAX_AHEAD.days} days ahead (kept to the millisecond)"
)
# RFC 3339's date-time (section 5.6), `T` and `Z` in either case; Python reads the value.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_BIGINT = 2**63


def _moment(raw: object) -> object:
    """A JSON string as an aware datetime in UTC, to the millisecond (what answers show)."""
    if not isinstance(raw, str):
        return raw  # strict: a number is refused as not a datetime
    if _RFC3339.fullmatch(raw) is None:
        raise ValueError(EXPIRY_RULE)
    try:
        moment = datetime.fromisoformat(raw.upper()).astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(EXPIRY_RULE) from None
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


Rounds = Annotated[
    int,
    Field(ge=1, le=MAX_ROUNDS, description=f"how many bets the grant gives: {ROUNDS_RULE}"),
    Rule(ROUNDS_RULE),
]
Expiry = Annotated[
    datetime,
    BeforeValidator(_moment),
    Rule(EXPIRY_RULE),
    Field(
        description=f"the grant's rounds can be played until then: {EXPIRY_RULE}",
        json_schema_extra={"type": "string", "format": "date-time"},
    ),
]


# --- messages -----------------------------------------------------------------------------------


class FreeRoundGrant(Body):
    provider: Identifier = Field(description="a registered provider's code (400 otherwise)")
    game_id: Identifier = Field(description="the provider's game the rounds are for")
    rounds: Rounds
    bet_value: PositiveAmount = Field(
        description="the stake of each round, in minor units of the player's currency"
    )
    expires_at: Expiry


class FreeRound(Answer):
    """A grant as it stands: ``remaining`` is what a provider may still spend of it."""

    free_round_id: DigitsId = Field(
        description="a string of digits; the provider sends it as `bet.free_round_id`"
    )
    player_id: Identifier
    provider: Identifier
    game_id: Identifier
    rounds: Rounds
    used: Count = Field(description="rounds taken by bets (a cancelled bet gives its round back)")
    remaining: Count = Field(description="rounds - used while active; 0 in every other state")
    bet_value: PositiveAmount
    currency: Currency = Field(description="the player's")
    expires_at: Time
    created_at: Time
    withdrawn_at: Time | None = Field(description="null unless withdrawn")
    state: State = Field(
        description="`withdrawn`, else `used_up` when every round is used, else `expired` from "
        "`expires_at` on, else `active`"
    )


class FreeRoundPage(Page[FreeRound]):
    """A page of FreeRound objects, keyset-paged."""


class FreeRoundQuery(pagination.PageQuery):
    state: State | None = Field(None, description="only the grants in this state now")


# --- rules --------------------------------------------------------------------------------------


def free_round(row: asyncpg.Record) -> FreeRound:
    return FreeRound(
        free_round_id=str(row["id"]),
        player_id=row["player_id"],
        provider=row["provider"],
        game_id=row["game_id"],
        rounds=row["rounds"],
        used=row["used"],
        remaining=row["rounds"] - row["used"] if row["state"] == "active" else 0,
        bet_value=row["bet_value"],
        currency=row["currency"],
        expires_at=row["expires_at"],
        created_at=row["created_at"],
        withdrawn_at=row["withdrawn_at"],
        state=row["state"],
    )


def _grant_id(free_round_id: str) -> int:
    """The grant's key. An id is given out as the bigint's digits, so anything else (a sign,
    a leading zero, too many digits) names no grant: one grant, one spelling of its id."""
    digits = free_round_id.isascii() and free_round_id.isdigit()
    if not digits or str(int(free_round_id)) != free_round_id or int(free_round_id) >= _BIGINT:
        raise NotFound(f"free round {free_round_id!r} not found")
    return int(free_round_id)


async def _player_exists(conn: asyncpg.Connection, q: Queries, player_id: str) -> None:
    if await conn.fetchrow(*q.get_player(player_id=player_id)) is None:
        raise NotFound(f"player {player_id!r} not found")


def _audited(grant: FreeRound) -> dict[str, object]:
    return grant.model_dump(mode="json", exclude={"player_id", "created_at"})


async def grant(
    conn: asyncpg.Connection,
    q: Queries,
    player_id: str,
    body: FreeRoundGrant,
    actor: Actor,
    now: datetime | None = None,
) -> FreeRound:
    """A new grant of free rounds in the player's currency, audited in its transaction.

    The player need not be in the provider's scope yet: the operator may grant first and issue
    the session after (the session brings the player into scope, sql/010)."""
    now = now or datetime.now(UTC)
    if body.expires_at <= now:
        raise InvalidRequest("expires_at must be in the future", field="expires_at")
    if body.expires_at > now + MAX_AHEAD:
        raise InvalidRequest(
            f"expires_at must be at most {MAX_AHEAD.days} days ahead", field="expires_at"
        )
    await _player_exists(conn, q, player_id)
    if await conn.fetchval(*q.provider_exists(code=body.provider)) is None:
        raise InvalidRequest(f"unknown provider {body.provider!r}", field="provider")
    async with conn.transaction():
        grant_id = await conn.fetchval(
            *q.insert_free_round(
                player_id=player_id,
                provider=body.provider,
                game_id=body.game_id,
                rounds=body.rounds,
                bet_value=body.bet_value,
                expires_at=body.expires_at,
            )
        )
        if grant_id is None:  # the player was deleted meanwhile; players are never deleted
            raise NotFound(f"player {player_id!r} not found")
        granted = free_round(await conn.fetchrow(*q.free_round(id=grant_id, player_id=player_id)))
        await audit(
            conn,
            q,
            actor,
            "free_rounds.grant",
            f"free_round:{granted.free_round_id}",
            None,
            {"player_id": player_id, **_audited(granted)},
        )
    return granted


async def get(
    conn: asyncpg.Connection, q: Queries, player_id: str, free_round_id: str
) -> FreeRound:
    row = await conn.fetchrow(*q.free_round(id=_grant_id(free_round_id), player_id=player_id))
    if row is None:
        raise await _not_found(conn, q, player_id, free_round_id)
    return free_round(row)


async def _not_found(
    conn: asyncpg.Connection, q: Queries, player_id: str, free_round_id: str
) -> NotFound:
    """The 404 of a grant not found: the player's own when the player is unknown."""
    await _player_exists(conn, q, player_id)
    return NotFound(f"free round {free_round_id!r} not found for player {player_id!r}")


async def withdraw(
    conn: asyncpg.Connection, q: Queries, player_id: str, free_round_id: str, actor: Actor
) -> FreeRound:
    """Withdraw what is left of a grant; a withdrawn one is answered as it is (audited once).

    Under the grant's row lock, which a bet taking a round waits for too: a bet that comes
    after finds the grant withdrawn, one that came before is counted in ``used``."""
    grant_id = _grant_id(free_round_id)
    async with conn.transaction():
        row = await conn.fetchrow(*q.lock_free_round(id=grant_id, player_id=player_id))
        if row is None:
            raise await _not_found(conn, q, player_id, free_round_id)
        before = free_round(row)
        if before.state == "withdrawn":
            return before
        await conn.execute(*q.withdraw_free_round(id=grant_id))
        after = free_round(await conn.fetchrow(*q.free_round(id=grant_id, player_id=player_id)))
        await audit(
            conn,
            q,
            actor,
            "free_rounds.withdraw",
            f"free_round:{free_round_id}",
            {"state": before.state, "used": before.used, "remaining": before.remaining},
            {"state": after.state, "used": after.used, "remaining": after.remaining},
        )
    return after


# --- routes -------------------------------------------------------------------------------------

GRANTS = "/v1/players/{player_id}/free-rounds"
ONE_GRANT = GRANTS + "/{free_round_id}"


@api.post(
    GRANTS,
    summary="Grant a player free rounds at one provider's game",
    roles=PLAYER_ADMIN,
    body=FreeRoundGrant,
    answers=[(201, FreeRound, "The grant, `active` (the same key and body again: this answer)")],
    errors=(400, 404, 409),
    idempotency="required",
    key_parameter=KeyParameter(
        "FreeRoundIdempotencyKey",
        "printable (400 on `Idempotency-Key` when missing): the same key and body again get the "
        "first answer again, refusals included; another request with the key is 409; racing "
        "requests with one key make one grant",
    ),
    description="`rounds` bets of `bet_value` each, in the player's currency, for the provider "
    "to play on `game_id` until `expires_at`: its `bet` with `free_round_id` debits nothing and "
    "takes one round (docs/seamless.md, Free rounds). The player need not have had a session "
    "with the provider yet. Audited (`free_rounds.grant`).\n\n"
    "400 on a field: `rounds` an integer from 1 to 100000, `bet_value` an integer amount from "
    "1, `expires_at` an RFC 3339 time in the future and at most 366 days ahead; 400 on "
    "`provider` for an unknown provider; 404 for an unknown player.",
    operation_id="grantFreeRounds",
)
async def grant_free_rounds(c: Call, player_id: str, body: FreeRoundGrant) -> FreeRound:
    return await grant(c.conn, c.w.queries, player_id, body, c.actor)


@api.get(
    GRANTS,
    summary="A player's free-round grants, newest first",
    roles=READ,
    query=FreeRoundQuery,
    answers=[(200, FreeRoundPage, "A page of grants")],
    errors=(400, 404),
    description="`state` filters on the state now. 404 for an unknown player.",
    operation_id="listFreeRounds",
)
async def list_free_rounds(c: Call, player_id: str, query: FreeRoundQuery) -> FreeRoundPage:
    last = pagination.after_int(query.cursor)
    await _player_exists(c.conn, c.w.queries, player_id)
    rows = await c.conn.fetch(
        *c.w.queries.player_free_rounds(
            player_id=player_id, cursor=last, state=query.state, limit=query.limit + 1
        )
    )
    shown, next_cursor = pagination.window(rows, query.limit, lambda r: [r["id"]])
    return FreeRoundPage(data=[free_round(r) for r in shown], next_cursor=next_cursor)


@api.get(
    ONE_GRANT,
    summary="Read a free-round grant",
    roles=READ,
    answers=[(200, FreeRound, "The grant as it stands")],
    errors=(400, 404),
    description="404 for an unknown player, an unknown grant, or another player's.",
    operation_id="getFreeRounds",
)
async def get_free_rounds(c: Call, player_id: str, free_round_id: str) -> FreeRound:
    return await get(c.conn, c.w.queries, player_id, free_round_id)


@api.delete(
    ONE_GRANT,
    summary="Withdraw what is left of a free-round grant",
    roles=PLAYER_ADMIN,
    answers=[(200, FreeRound, "The grant, `withdrawn`")],
    errors=(400, 404, 409),
    idempotency="optional",
    description="From then on the provider's bets on it are refused (R1 "
    "`free_round_unavailable`); `used` keeps the rounds already played, and a bet that took "
    "its round first stays counted. Withdrawing a withdrawn grant answers it again, as it "
    "is (200); any grant can be withdrawn, an expired or used-up one too (a cancelled bet "
    "then gives no round back). Audited (`free_rounds.withdraw`, once). 404 for an unknown "
    "player, an unknown grant, or another player's." + IDEMPOTENT_ACTION,
    operation_id="withdrawFreeRounds",
)
async def withdraw_free_rounds(c: Call, player_id: str, free_round_id: str) -> FreeRound:
    return await withdraw(c.conn, c.w.queries, player_id, free_round_id, c.actor)


routes = api.routes
