"""Players: create, list and read them, change their status, KYC tier and limits, issue sessions.

Limits: lowering or adding one applies at once; raising or removing one applies after the
cooling-off period, so that a moment's impulse cannot undo a player's protection (docs/operator.md,
Limits). The kinds and periods are the fields of :class:`LimitsChange` and :class:`PeriodsChange`,
declared there once.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

import asyncpg
from pydantic import ConfigDict, Field

from app.audit import Action, Actor, audit
from app.db import Queries
from app.fields import Amount, Balance, Currency, Identifier, OneOf, Rule, Time
from app.secrets import token_hash
from app.web import pagination
from app.web.auth import PLAYER_ADMIN, READ
from app.web.errors import IdempotencyConflict, InvalidRequest, NotFound
from app.web.idempotency import IDEMPOTENT_ACTION, SHOWN_ONCE
from app.web.messages import Answer, Body, Page
from app.web.routing import Api, Call, Reply

api = Api("players", path_params={"player_id": "the player"})

Status = Literal["active", "blocked", "self_excluded"]
STATUSES: tuple[Status, ...] = get_args(Status)
KYC_RULE = "an integer from 0 to 3"
KycTier = Annotated[
    int,
    Field(ge=0, le=3, description="the player's KYC tier: 0 (the default) to 3"),
    Rule(KYC_RULE),
]


# --- messages -----------------------------------------------------------------------------------


class PeriodsChange(Body):
    """The limits of one kind to change: an amount sets one, null removes it."""

    model_config = ConfigDict(extra="forbid")  # an unknown period is refused, not ignored

    daily: Amount | None = None
    weekly: Amount | None = None
    monthly: Amount | None = None


class LimitsChange(Body):
    """Only the limits named change; see docs/operator.md, Limits."""

    model_config = ConfigDict(extra="forbid")  # an unknown kind is refused, not ignored

    deposit: PeriodsChange = Field(None)  # type: ignore[assignment]  # absent, never null
    wager: PeriodsChange = Field(None)  # type: ignore[assignment]
    loss: PeriodsChange = Field(None)  # type: ignore[assignment]


LIMIT_KINDS = tuple(LimitsChange.model_fields)
LIMIT_PERIODS = tuple(PeriodsChange.model_fields)
LimitKind = Annotated[str, OneOf.of(LIMIT_KINDS)]
Period = Annotated[str, OneOf.of(LIMIT_PERIODS)]


class PendingLimit(Answer):
    """A raise or removal waiting for its cooling-off period to end."""

    kind: LimitKind
    period: Period
    amount: Amount | None = Field(description="the coming limit; null removes it")
    effective_at: Time


class PlayerSummary(Answer):
    """A player as listed (without limits)."""

    player_id: Identifier
    currency: Currency
    status: Status
    kyc_tier: KycTier
    balance: Balance
    created_at: Time
    updated_at: Time


class Player(PlayerSummary):
    limits: dict[LimitKind, dict[Period, Amount]] = Field(
        description="the limits in force: every kind, with the periods that have one",
        json_schema_extra={"required": list(LIMIT_KINDS)},
    )
    pending_limits: list[PendingLimit]


class PlayerSummaryPage(Page[PlayerSummary]):
    """A page of PlayerSummary objects, keyset-paged."""


SessionState = Literal["active", "ended", "expired"]


class PlayerSession(Answer):
    """A session as listed: never its token (only the token's hash is stored)."""

    provider: Identifier
    game_id: str
    created_at: Time
    expires_at: Time
    ended_at: Time | None = Field(description="when the provider's logout ended it")
    state: SessionState = Field(
        description="ended: logged out; expired: past `expires_at`; active otherwise"
    )


class PlayerSessionPage(Page[PlayerSession]):
    """A page of PlayerSession objects, keyset-paged."""


class PlayerCreate(Body):
    player_id: Identifier
    currency: Currency


class PlayerQuery(pagination.PageQuery):
    status: Status | None = Field(None, description="only these players")


class PlayerStatusChange(Body):
    status: Status


class KycTierChange(Body):
    tier: KycTier = Field(description="the new KYC tier (400 on `tier` unless an integer 0 to 3)")


class SessionIssue(Body):
    provider: Identifier
    game_id: Identifier


class Session(Answer):
    session_token: str = Field(description="shown only here")
    expires_at: Time


# --- rules --------------------------------------------------------------------------------------


async def get_player(conn: asyncpg.Connection, q: Queries, player_id: str) -> Player:
    row = await conn.fetchrow(*q.get_player(player_id=player_id))
    if row is None:
        raise NotFound(f"player {player_id!r} not found")
    limits: dict[str, dict[str, int]] = {kind: {} for kind in LIMIT_KINDS}
    pending = []
    for r in await conn.fetch(*q.player_limit_rows(player_id=player_id)):
        if r["amount"] is not None:
            limits[r["kind"]][r["period"]] = r["amount"]
        if r["next_from"] is not None and r["amount"] != r["next_amount"]:
            pending.append(
                PendingLimit(
                    kind=r["kind"],
                    period=r["period"],
                    amount=r["next_amount"],
                    effective_at=r["next_from"],
                )
            )
    return Player(**row, limits=limits, pending_limits=pending)


async def create_player(
    conn: asyncpg.Connection, q: Queries, player_id: str, currency: str, actor: Actor
) -> tuple[Player, bool]:
    """Create a player with an empty wallet; (player, created). Creating it again is harmless."""
    async with conn.transaction():
        try:
            async with conn.transaction():  # a savepoint: the conflict must not end the outer one
                await conn.execute(*q.insert_player(player_id=player_id, currency=currency))
            created = True
        except asyncpg.UniqueViolationError:
            created = False
        player = await get_player(conn, q, player_id)
        if not created and player.currency != currency:
            raise IdempotencyConflict(
                f"player {player_id!r} already exists with currency {player.currency}",
                field="currency",
            )
        if created:
            await audit(
                conn, q, actor, "player.create", f"player:{player_id}", None, {"currency": currency}
            )
    return player, created


async def change_player(
    conn: asyncpg.Connection,
    q: Queries,
    player_id: str,
    actor: Actor,
    action: Action,
    field: Literal["status", "kyc_tier"],
    value: Any,
) -> Player:
    """Set one field of a player, audited as ``action`` with its value before and after."""
    statement = q.set_player_status if field == "status" else q.set_kyc_tier
    async with conn.transaction():
        before = await get_player(conn, q, player_id)
        await conn.execute(*statement(player_id=player_id, **{field: value}))
        await audit(
            conn,
            q,
            actor,
            action,
            f"player:{player_id}",
            {field: getattr(before, field)},
            {field: value},
        )
        return await get_player(conn, q, player_id)


async def set_limits(
    conn: asyncpg.Connection,
    q: Queries,
    player_id: str,
    limits: dict[str, dict[str, int | None]],
    cooling_off_seconds: int,
    actor: Actor,
) -> Player:
    """Set (an amount) or remove (None) limits given as ``{kind: {period: amount}}``; a raise or a
    removal applies after ``cooling_off_seconds``."""
    shown = {"limits", "pending_limits"}
    async with conn.transaction():
        # First, the player's account row lock: concurrent changes of one player's limits then
        # run one after the other, each reading the state it changes and auditing it, instead of
        # two first settings of one limit both inserting it. wallet_set_limit takes the same
        # lock, so postings cannot fall between it counting the totals and keeping them.
        await conn.execute(*q.lock_player_account(player_id=player_id))
        before = await get_player(conn, q, player_id)
        for kind, periods in limits.items():
            for period, amount in periods.items():
                await conn.execute(
                    *q.set_limit(
                        player_id=player_id,
                        kind=kind,
                        period=period,
                        amount=amount,
                        cooling_off_seconds=float(cooling_off_seconds),
                    )
                )
        after = await get_player(conn, q, player_id)
        await audit(
            conn,
            q,
            actor,
            "player.limits",
            f"player:{player_id}",
            before.model_dump(mode="json", include=shown),
            after.model_dump(mode="json", include=shown),
        )
    return after


async def issue_session(
    conn: asyncpg.Connection,
    q: Queries,
    player_id: str,
    provider: str,
    game_id: str,
    ttl_seconds: int,
) -> Session:
    """A new session token for one player at one provider; only its hash is stored. The same
    statement brings the player into the provider's scope (sql/010), for good."""
    if await conn.fetchrow(*q.get_player(player_id=player_id)) is None:
        raise NotFound(f"player {player_id!r} not found")
    if await conn.fetchval(*q.provider_exists(code=provider)) is None:
        raise InvalidRequest(f"unknown provider {provider!r}", field="provider")
    token = secrets.token_urlsafe(32)
    expires_at = await conn.fetchval(
        *q.insert_session(
            token_hash=token_hash(token),
            player_id=player_id,
            provider=provider,
            game_id=game_id,
            ttl_seconds=float(ttl_seconds),
        )
    )
    return Session(session_token=token, expires_at=expires_at)


async def list_sessions(
    conn: asyncpg.Connection, q: Queries, player_id: str, query: pagination.PageQuery
) -> PlayerSessionPage:
    """A player's sessions, newest first; 404 for an unknown player."""
    after = pagination.decode(query.cursor, 2)
    if await conn.fetchrow(*q.get_player(player_id=player_id)) is None:
        raise NotFound(f"player {player_id!r} not found")
    rows = await conn.fetch(
        *q.player_sessions_page(
            player_id=player_id,
            cursor_at=pagination.cursor_time(after[0]) if after else None,
            cursor_key=pagination.cursor_text(after[1]) if after else None,
            limit=query.limit + 1,
        )
    )
    shown, next_cursor = pagination.window(
        rows, query.limit, lambda r: [r["created_at"].isoformat(), r["key"]]
    )
    now = datetime.now(UTC)
    data = [
        PlayerSession(
            provider=r["provider"],
            game_id=r["game_id"],
            created_at=r["created_at"],
            expires_at=r["expires_at"],
            ended_at=r["ended_at"],
            state="ended" if r["ended_at"] else "expired" if r["expires_at"] <= now else "active",
        )
        for r in shown
    ]
    return PlayerSessionPage(data=data, next_cursor=next_cursor)


# --- routes -------------------------------------------------------------------------------------


@api.post(
    "/v1/players",
    summary="Create a player",
    operation_id="createPlayer",
    roles=PLAYER_ADMIN,
    body=PlayerCreate,
    answers=[
        (201, Player, "Created: balance 0, status active"),
        (200, Player, "The player already existed with this currency"),
    ],
    errors=(400, 409),
    description="Creating it again with the same currency is harmless (200); with another "
    "currency it is 409 `idempotency_conflict` on `currency`." + IDEMPOTENT_ACTION,
    idempotency="optional",
)
async def create_player_route(c: Call, body: PlayerCreate) -> Player | Reply:
    player, created = await create_player(
        c.conn, c.w.queries, body.player_id, body.currency, c.actor
    )
    return player if created else Reply(player, 200)


@api.get(
    "/v1/players",
    summary="List players, by id",
    roles=READ,
    query=PlayerQuery,
    answers=[(200, PlayerSummaryPage, "A page of players (without limits)")],
    errors=(400,),
)
async def list_players(c: Call, query: PlayerQuery) -> PlayerSummaryPage:
    last = pagination.after_text(query.cursor)
    rows = await c.conn.fetch(
        *c.w.queries.players_page(status=query.status, cursor=last, limit=query.limit + 1)
    )
    shown, next_cursor = pagination.window(rows, query.limit, lambda r: [r["player_id"]])
    return PlayerSummaryPage(data=[PlayerSummary(**r) for r in shown], next_cursor=next_cursor)


@api.get(
    "/v1/players/{player_id}",
    summary="Read a player with its limits",
    operation_id="getPlayer",
    roles=READ,
    answers=[(200, Player, "The player")],
    errors=(400, 404),
)
async def get_player_route(c: Call, player_id: str) -> Player:
    return await get_player(c.conn, c.w.queries, player_id)


@api.put(
    "/v1/players/{player_id}/status",
    summary="Change a player's status",
    roles=PLAYER_ADMIN,
    body=PlayerStatusChange,
    answers=[(200, Player, "The player")],
    errors=(400, 404),
)
async def set_player_status(c: Call, player_id: str, body: PlayerStatusChange) -> Player:
    return await change_player(
        c.conn, c.w.queries, player_id, c.actor, "player.status", "status", body.status
    )


@api.put(
    "/v1/players/{player_id}/kyc",
    summary="Change a player's KYC tier",
    roles=PLAYER_ADMIN,
    body=KycTierChange,
    answers=[(200, Player, "The player, with its new `kyc_tier`")],
    errors=(400, 404),
    description="Sets the player's know-your-customer tier, 0 (every player's at first) to "
    "3, and records it in the audit log as `player.kyc` (before and after: "
    '`{"kyc_tier": n}`). Payment methods may require a minimum tier per kind '
    '(WALLET_KYC_METHOD_TIERS, like `{"deposit": {"upi": 1}, "withdrawal": '
    '{"*": 1}}`, `*` for any method; by default none): a deposit or a withdrawal below '
    "it is 422 `method_unavailable`.\n\n"
    "400 on `tier` unless an integer from 0 to 3; 404 for an unknown player.",
)
async def set_player_kyc_tier(c: Call, player_id: str, body: KycTierChange) -> Player:
    return await change_player(
        c.conn, c.w.queries, player_id, c.actor, "player.kyc", "kyc_tier", body.tier
    )


@api.put(
    "/v1/players/{player_id}/limits",
    summary="Set or remove responsible-gaming limits",
    roles=PLAYER_ADMIN,
    body=LimitsChange,
    answers=[(200, Player, "The player, with limits in force and pending")],
    errors=(400, 404),
    description="A new or lower limit applies at once and drops a pending raise; a raise or "
    "a removal (null) applies after the cooling-off period "
    "(WALLET_LIMIT_COOLING_OFF_SECONDS) and shows under `pending_limits` until then.",
)
async def set_player_limits(c: Call, player_id: str, body: LimitsChange) -> Player:
    return await set_limits(
        c.conn,
        c.w.queries,
        player_id,
        body.model_dump(exclude_unset=True),
        c.w.settings.limit_cooling_off_seconds,
        c.actor,
    )


@api.post(
    "/v1/players/{player_id}/sessions",
    summary="Issue a session token for one provider",
    operation_id="issueSession",
    roles=PLAYER_ADMIN,
    body=SessionIssue,
    answers=[(201, Session, "The token (shown only here; stored as its SHA-256)")],
    errors=(400, 404, 409),
    description="404 for an unknown player; 400 on `provider` for an unknown provider. "
    "From then on the player is in that provider's scope, for good: the provider may read "
    "and move the player's money on the seamless webhook (docs/seamless.md, Provider scope)."
    + IDEMPOTENT_ACTION
    + SHOWN_ONCE,
    idempotency="optional",
    secret=True,
)
async def issue_session_route(c: Call, player_id: str, body: SessionIssue) -> Session:
    return await issue_session(
        c.conn,
        c.w.queries,
        player_id,
        body.provider,
        body.game_id,
        c.w.settings.session_ttl_seconds,
    )


@api.get(
    "/v1/players/{player_id}/sessions",
    summary="A player's sessions, newest first (never their tokens)",
    operation_id="listPlayerSessions",
    roles=READ,
    query=pagination.PageQuery,
    answers=[(200, PlayerSessionPage, "A page of sessions")],
    errors=(400, 404),
    description="Each session's provider, game, times and state (`active`, `ended` by the "
    "provider's logout, or `expired`). The token is never shown again: only its SHA-256 is "
    "stored. 404 for an unknown player.",
)
async def list_player_sessions(
    c: Call, player_id: str, query: pagination.PageQuery
) -> PlayerSessionPage:
    return await list_sessions(c.conn, c.w.queries, player_id, query)


routes = api.routes
