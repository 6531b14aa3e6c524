"""HTTP for the operator API: authenticate, validate the body, call the service, answer JSON."""

from __future__ import annotations

from typing import Any

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app import http
from app.errors import InvalidRequest
from app.ledger import service as ledger
from app.operator import service
from app.operator.auth import authenticate
from app.seamless.events import MAX_AMOUNT
from app.state import Wallet, wallet

IDEMPOTENCY_KEY_MAX = 255


def _authorised(request: Request) -> tuple[Wallet, str]:
    w = wallet(request)
    admin = w.settings.admin_api_key
    return w, authenticate(request, str(admin) if admin is not None else None)


def _path_identifier(request: Request, name: str) -> str:
    return http.identifier(dict(request.path_params), name)


async def create_provider(request: Request) -> Response:
    w, _ = _authorised(request)
    data = await http.read_json(request)
    code = http.identifier(data, "code")
    name = http.text(data, "name")
    async with w.pool.acquire() as conn:
        created = await service.create_provider(conn, w.queries, code, name)
    return http.json_response(created, 201)


async def rotate_key(request: Request) -> Response:
    w, _ = _authorised(request)
    code = _path_identifier(request, "code")
    async with w.pool.acquire() as conn:
        rotated = await service.rotate_key(conn, w.queries, code)
    w.keys.forget(code)
    return http.json_response(rotated, 201)


async def create_player(request: Request) -> Response:
    w, _ = _authorised(request)
    data = await http.read_json(request)
    player_id = http.identifier(data, "player_id")
    currency = http.currency(data)
    async with w.pool.acquire() as conn:
        player, created = await service.create_player(conn, w.queries, player_id, currency)
    return http.json_response(player, 201 if created else 200)


async def get_player(request: Request) -> Response:
    w, _ = _authorised(request)
    player_id = _path_identifier(request, "player_id")
    async with w.pool.acquire() as conn:
        return http.json_response(await service.get_player(conn, w.queries, player_id))


async def set_status(request: Request) -> Response:
    w, _ = _authorised(request)
    player_id = _path_identifier(request, "player_id")
    data = await http.read_json(request)
    status = data.get("status")
    if not isinstance(status, str):
        raise InvalidRequest("status must be a string", field="status")
    async with w.pool.acquire() as conn:
        return http.json_response(await service.set_status(conn, w.queries, player_id, status))


async def set_limits(request: Request) -> Response:
    """Body: ``{"wager": {"daily": 5000}, "loss": {"weekly": null}}``; null clears a limit."""
    w, _ = _authorised(request)
    player_id = _path_identifier(request, "player_id")
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
    async with w.pool.acquire() as conn:
        return http.json_response(await service.set_limits(conn, w.queries, player_id, limits))


async def issue_session(request: Request) -> Response:
    w, _ = _authorised(request)
    player_id = _path_identifier(request, "player_id")
    data = await http.read_json(request)
    provider = http.identifier(data, "provider")
    game_id = http.identifier(data, "game_id")
    async with w.pool.acquire() as conn:
        issued = await service.issue_session(
            conn, w.queries, player_id, provider, game_id, w.settings.session_ttl_seconds
        )
    return http.json_response(issued, 201)


async def adjust(request: Request) -> Response:
    w, actor = _authorised(request)
    player_id = _path_identifier(request, "player_id")
    key = request.headers.get("idempotency-key", "")
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX or not key.isprintable():
        raise InvalidRequest(
            f"send an Idempotency-Key header of 1 to {IDEMPOTENCY_KEY_MAX} printable characters",
            field="Idempotency-Key",
        )
    data = await http.read_json(request)
    amount = http.integer(data, "amount", minimum=-MAX_AMOUNT, maximum=MAX_AMOUNT)
    if amount == 0:
        raise InvalidRequest("amount must not be zero", field="amount")
    reason = http.text(data, "reason", max_length=500)
    async with w.pool.acquire() as conn:
        adjustment, created = await service.adjust(
            conn, w.queries, player_id, amount, reason, key, actor
        )
    return http.json_response(adjustment, 201 if created else 200)


async def ledger_check(request: Request) -> Response:
    w, _ = _authorised(request)
    async with w.pool.acquire() as conn:
        return http.json_response(await ledger.check(conn, w.queries))


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
        checks["redis"] = "ok"
    except (RedisError, OSError) as exc:
        checks["redis"] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return http.json_response(
        {"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503
    )


routes = [
    Route("/v1/providers", create_provider, methods=["POST"]),
    Route("/v1/providers/{code}/keys", rotate_key, methods=["POST"]),
    Route("/v1/players", create_player, methods=["POST"]),
    Route("/v1/players/{player_id}", get_player, methods=["GET"]),
    Route("/v1/players/{player_id}/status", set_status, methods=["PUT"]),
    Route("/v1/players/{player_id}/limits", set_limits, methods=["PUT"]),
    Route("/v1/players/{player_id}/sessions", issue_session, methods=["POST"]),
    Route("/v1/players/{player_id}/adjustments", adjust, methods=["POST"]),
    Route("/v1/ledger/check", ledger_check, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
]
