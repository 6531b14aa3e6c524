"""HTTP for the operator API: authenticate, authorise by role, validate, call the service.

Every route is declared with the roles allowed to call it (:data:`PERMISSIONS`), so the role
matrix is one table that the docs and the tests read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.audit import Actor
from app.ledger import service as ledger
from app.operator import history, service
from app.seamless.events import MAX_AMOUNT, MODELS
from app.state import Wallet, wallet
from app.web import http, pagination
from app.web.auth import ADMIN, MONEY, PLAYER_ADMIN, READ, Principal, authenticate, authorize
from app.web.errors import InvalidRequest, RateLimited
from app.web.idempotency import KEY_MAX, key_of, once, required_key

IDEMPOTENCY_KEY_MAX = KEY_MAX
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9998, 12, 31, tzinfo=UTC)
EVENT_NAMES = tuple(MODELS)


@dataclass(frozen=True, slots=True)
class Call:
    """One authorised operator call: the app's resources, a connection, and who is calling."""

    w: Wallet
    conn: asyncpg.Connection
    principal: Principal
    actor: Actor


Handler = Callable[[Request, Call], Awaitable[Response]]
routes: list[Route] = []
PERMISSIONS: dict[tuple[str, str], frozenset[str]] = {}


def route(
    method: str,
    path: str,
    roles: frozenset[str],
    what: str,
    *,
    idempotency: str | None = None,
    secret: bool = False,
) -> Callable[[Handler], Handler]:
    """Register ``handler`` for ``method path``, callable by ``roles`` only.

    ``idempotency`` ``"optional"`` or ``"required"``: the route takes an ``Idempotency-Key``
    (:mod:`app.web.idempotency`); routes with their own record of it leave this None.
    ``secret``: its answer shows a secret, stored sealed under the master key.
    """

    def register(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            w = wallet(request)
            admin = w.settings.admin_api_key
            # Bounded like the webhook's: a full pool answers 503 in time (app.main), not never.
            async with w.pool.acquire(timeout=w.settings.db_acquire_timeout_ms / 1000) as conn:
                principal = await authenticate(
                    request, conn, w.queries, str(admin) if admin is not None else None
                )
                authorize(principal, roles, what)
                await _within_rate_limit(w, principal)
                actor = Actor(principal.actor, http.request_id(request))
                call = Call(w, conn, principal, actor)
                key = (
                    None
                    if idempotency is None
                    else required_key(request)
                    if idempotency == "required"
                    else key_of(request)
                )
                if key is None:
                    return await handler(request, call)
                return await once(
                    request,
                    conn,
                    w.queries,
                    key,
                    lambda: handler(request, call),
                    seal=w.keys.master_key if secret else None,
                )

        routes.append(Route(path, endpoint, methods=[method]))
        PERMISSIONS[(method, path)] = roles
        return handler

    return register


async def _within_rate_limit(w: Wallet, principal: Principal) -> None:
    """Per API key (the bootstrap admin key is one key too); 429 with Retry-After when over."""
    retry_after = await w.limiter.check(principal.actor)
    if retry_after is not None:
        w.metrics.rate_limited.labels("api_key").inc()
        raise RateLimited(
            f"more than {w.limiter.per_second} requests per second with this API key",
            retry_after=retry_after,
        )


# --- query and path parameters ----------------------------------------------------------------


def _path(request: Request, name: str) -> str:
    return http.identifier(dict(request.path_params), name)


def _query_identifier(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    return None if value is None else http.identifier({name: value}, name)


def _query_choice(request: Request, name: str, choices: tuple[str, ...]) -> str | None:
    value = request.query_params.get(name)
    if value is not None and value not in choices:
        raise InvalidRequest(f"{name} must be one of {', '.join(choices)}", field=name)
    return value


def _query_time(request: Request, name: str) -> datetime | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidRequest(
            f"{name} must be an RFC 3339 time with a zone, like 2026-05-18T11:42:18Z", field=name
        )
    # Postgres stores UTC, and a statement reaches 30 days back: keep clear of year 1 and 9999.
    if not EARLIEST <= moment <= LATEST:
        raise InvalidRequest(f"{name} must be between 1970 and 9998", field=name)
    return moment


def _query_text(request: Request, name: str) -> str | None:
    """A free-text filter: at most 200 characters, and never U+0000 (Postgres refuses it)."""
    value = request.query_params.get(name)
    if value is not None and (len(value) > 200 or "\x00" in value):
        raise InvalidRequest(f"{name} must be at most 200 characters, without U+0000", field=name)
    return value


def _time_range(request: Request) -> tuple[datetime | None, datetime | None]:
    return _query_time(request, "from"), _query_time(request, "to")


# --- players ------------------------------------------------------------------------------------


@route("POST", "/v1/players", PLAYER_ADMIN, "create players", idempotency="optional")
async def create_player(request: Request, c: Call) -> Response:
    data = await http.read_json(request)
    player_id = http.identifier(data, "player_id")
    currency = http.currency(data)
    player, created = await service.create_player(c.conn, c.w.queries, player_id, currency, c.actor)
    return http.json_response(player, 201 if created else 200)


@route("GET", "/v1/players", READ, "list players")
async def list_players(request: Request, c: Call) -> Response:
    status = _query_choice(request, "status", service.STATUSES)
    size, after = pagination.limit(request), pagination.cursor(request, 1)
    return http.json_response(await history.players(c.conn, c.w.queries, status, size, after))


@route("GET", "/v1/players/{player_id}", READ, "read players")
async def get_player(request: Request, c: Call) -> Response:
    player_id = _path(request, "player_id")
    return http.json_response(await service.get_player(c.conn, c.w.queries, player_id))


@route("PUT", "/v1/players/{player_id}/status", PLAYER_ADMIN, "change a player's status")
async def set_status(request: Request, c: Call) -> Response:
    player_id = _path(request, "player_id")
    data = await http.read_json(request)
    status = data.get("status")
    if not isinstance(status, str):
        raise InvalidRequest("status must be a string", field="status")
    return http.json_response(
        await service.set_status(c.conn, c.w.queries, player_id, status, c.actor)
    )


@route("PUT", "/v1/players/{player_id}/kyc", PLAYER_ADMIN, "change a player's KYC tier")
async def set_kyc_tier(request: Request, c: Call) -> Response:
    """Body: ``{"tier": 0..3}``; payment methods may require a minimum tier."""
    player_id = _path(request, "player_id")
    data = await http.read_json(request)
    tier = data.get("tier")
    if type(tier) is not int or not 0 <= tier <= 3:
        raise InvalidRequest("tier must be an integer from 0 to 3", field="tier")
    return http.json_response(
        await service.set_kyc_tier(c.conn, c.w.queries, player_id, tier, c.actor)
    )


@route("PUT", "/v1/players/{player_id}/limits", PLAYER_ADMIN, "change a player's limits")
async def set_limits(request: Request, c: Call) -> Response:
    """Body: ``{"wager": {"daily": 5000}, "loss": {"weekly": null}}``; null removes a limit."""
    player_id = _path(request, "player_id")
    data = await http.read_json(request)
    limits: dict[str, dict[str, int | None]] = {}
    for kind, periods in data.items():
        if kind not in service.LIMIT_KINDS:
            raise InvalidRequest(
                f"limit kind must be one of {', '.join(service.LIMIT_KINDS)}", field=kind
            )
        if not isinstance(periods, dict):
            raise InvalidRequest(f"{kind} must be an object of period: amount", field=kind)
        limits[kind] = {}
        for period, amount in periods.items():
            field = f"{kind}.{period}"
            if period not in service.LIMIT_PERIODS:
                raise InvalidRequest(
                    f"limit period must be one of {', '.join(service.LIMIT_PERIODS)}", field=field
                )
            if amount is not None:
                amount = http.integer({field: amount}, field, minimum=0, maximum=MAX_AMOUNT)
            limits[kind][period] = amount
    return http.json_response(
        await service.set_limits(
            c.conn, c.w.queries, player_id, limits, c.w.settings.limit_cooling_off_seconds, c.actor
        )
    )


@route(
    "POST",
    "/v1/players/{player_id}/sessions",
    PLAYER_ADMIN,
    "issue sessions",
    idempotency="optional",
    secret=True,
)
async def issue_session(request: Request, c: Call) -> Response:
    player_id = _path(request, "player_id")
    data = await http.read_json(request)
    provider = http.identifier(data, "provider")
    game_id = http.identifier(data, "game_id")
    issued = await service.issue_session(
        c.conn, c.w.queries, player_id, provider, game_id, c.w.settings.session_ttl_seconds
    )
    return http.json_response(issued, 201)


@route("POST", "/v1/players/{player_id}/adjustments", MONEY, "adjust balances")
async def adjust(request: Request, c: Call) -> Response:
    player_id = _path(request, "player_id")
    key = required_key(request)
    data = await http.read_json(request)
    amount = http.integer(data, "amount", minimum=-MAX_AMOUNT, maximum=MAX_AMOUNT)
    if amount == 0:
        raise InvalidRequest("amount must not be zero", field="amount")
    reason = http.text(data, "reason", max_length=500)
    adjustment, created = await service.adjust(
        c.conn, c.w.queries, player_id, amount, reason, key, c.actor
    )
    return http.json_response(adjustment, 201 if created else 200)


@route("GET", "/v1/players/{player_id}/transactions", READ, "read player history")
async def player_transactions(request: Request, c: Call) -> Response:
    player_id = _path(request, "player_id")
    since, until = _time_range(request)
    size, after = pagination.limit(request), pagination.cursor(request, 2)
    return http.json_response(
        await history.player_transactions(c.conn, c.w.queries, player_id, size, after, since, until)
    )


@route("GET", "/v1/players/{player_id}/statement", READ, "read player statements")
async def player_statement(request: Request, c: Call) -> Response:
    player_id = _path(request, "player_id")
    since, until = _time_range(request)
    now = datetime.now(UTC)
    until = until or now
    since = since or until - timedelta(days=30)
    return http.json_response(await history.statement(c.conn, c.w.queries, player_id, since, until))


# --- seamless call history ----------------------------------------------------------------------


def _call_filter(request: Request, *, failures_only: bool) -> history.CallFilter:
    since, until = _time_range(request)
    code = _query_choice(request, "code", ("R0", "R1", "R2", "R3", "R4"))
    return history.CallFilter(
        provider=_query_identifier(request, "provider"),
        event=_query_choice(request, "event", EVENT_NAMES),
        code=code,
        player_id=_query_identifier(request, "player_id"),
        since=since,
        until=until,
        failures_only=failures_only,
    )


@route("GET", "/v1/webhooks/calls", READ, "read the call history")
async def list_calls(request: Request, c: Call) -> Response:
    f = _call_filter(request, failures_only=False)
    size, after = pagination.limit(request), pagination.cursor(request, 1)
    return http.json_response(await history.calls(c.conn, c.w.queries, f, size, after))


@route("GET", "/v1/webhooks/failures", READ, "read the call history")
async def list_failures(request: Request, c: Call) -> Response:
    f = _call_filter(request, failures_only=True)
    size, after = pagination.limit(request), pagination.cursor(request, 1)
    return http.json_response(await history.calls(c.conn, c.w.queries, f, size, after))


# --- ledger, reports, audit ---------------------------------------------------------------------


@route("GET", "/v1/ledger/check", READ, "check the ledger")
async def ledger_check(request: Request, c: Call) -> Response:
    return http.json_response(await ledger.check(c.conn, c.w.queries))


@route("GET", "/v1/reports/daily", READ, "read reports")
async def daily_report(request: Request, c: Call) -> Response:
    raw = request.query_params.get("date")
    try:
        day = date.fromisoformat(raw) if raw else datetime.now(UTC).date()
    except ValueError:
        raise InvalidRequest("date must be YYYY-MM-DD", field="date") from None
    return http.json_response(await history.daily_report(c.conn, c.w.queries, day))


@route("GET", "/v1/audit", READ, "read the audit log")
async def list_audit(request: Request, c: Call) -> Response:
    since, until = _time_range(request)
    size, after = pagination.limit(request), pagination.cursor(request, 1)
    return http.json_response(
        await history.audit_entries(
            c.conn,
            c.w.queries,
            _query_text(request, "actor"),
            _query_text(request, "action"),
            _query_text(request, "target"),
            since,
            until,
            size,
            after,
        )
    )


# --- API keys -----------------------------------------------------------------------------------


@route("POST", "/v1/api-keys", ADMIN, "manage API keys", idempotency="optional", secret=True)
async def create_api_key(request: Request, c: Call) -> Response:
    data = await http.read_json(request)
    role = data.get("role")
    if not isinstance(role, str):
        raise InvalidRequest("role must be a string", field="role")
    name = http.text(data, "name")
    return http.json_response(
        await service.create_api_key(c.conn, c.w.queries, role, name, c.actor), 201
    )


@route("GET", "/v1/api-keys", ADMIN, "manage API keys")
async def list_api_keys(request: Request, c: Call) -> Response:
    size, after = pagination.limit(request), pagination.cursor(request, 1)
    return http.json_response(await history.api_keys(c.conn, c.w.queries, size, after))


@route("DELETE", "/v1/api-keys/{key_id}", ADMIN, "manage API keys")
async def revoke_api_key(request: Request, c: Call) -> Response:
    key_id = _path(request, "key_id")
    return http.json_response(await service.revoke_api_key(c.conn, c.w.queries, key_id, c.actor))


# --- health -------------------------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    return http.json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when Postgres and Redis both answer; 503 names what does not."""
    w = wallet(request)
    checks: dict[str, Any] = {}
    try:
        async with w.pool.acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; say which
        checks["database"] = f"unavailable: {type(exc).__name__}"
    try:
        await w.redis.ping()
        await w.seamless.gate.mux.execute(("PING",))  # the hot path's own connection too
        checks["redis"] = "ok"
    except (RedisError, OSError) as exc:
        checks["redis"] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return http.json_response(
        {"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503
    )


routes += [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
]
