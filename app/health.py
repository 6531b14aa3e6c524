"""Health probes and metrics, without an API key: liveness (``/healthz``), readiness
(``/readyz``) and the Prometheus exposition (``/metrics``), for an internal scraper."""

from __future__ import annotations

import asyncio
from typing import Literal

import asyncpg
from pydantic import Field
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from app.metrics import CONTENT_TYPE
from app.redis_mux import RedisMux
from app.state import wallet
from app.web.messages import Answer
from app.web.routing import Api, Media, Reply

api = Api("health")

# Seconds a readiness check waits for each of Postgres and Redis.
CHECK_TIMEOUT = 2.0


class Health(Answer):
    status: Literal["ok"]


class Checks(Answer):
    database: str = Field(description='"ok" or "unavailable: <error>"')
    redis: str = Field(description='"ok" or "unavailable: <error>"')


class Ready(Answer):
    status: Literal["ok", "unavailable"]
    checks: Checks


@api.get("/healthz", summary="Liveness", answers=[(200, Health, "Alive")], public=True)
async def healthz(request: Request) -> Health:
    return Health(status="ok")


@api.get(
    "/readyz",
    summary="Readiness: Postgres and Redis both answer",
    answers=[
        (200, Ready, "Ready"),
        (503, Ready, "Not ready; `checks` names what failed"),
    ],
    public=True,
)
async def readyz(request: Request) -> Ready | Reply:
    """Ready when Postgres and Redis both answer; 503 names what does not."""
    w = wallet(request)
    database = await check_database(w.pool)
    redis = await check_redis(w.redis, w.seamless.gate.mux)
    checks = Checks(database=database, redis=redis)
    if database == redis == "ok":
        return Ready(status="ok", checks=checks)
    return Reply(Ready(status="unavailable", checks=checks), 503)


async def check_database(pool: asyncpg.Pool) -> str:
    """``"ok"`` when Postgres answers within :data:`CHECK_TIMEOUT`, else what failed."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT), pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
        return "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; say which
        return f"unavailable: {type(exc).__name__}"


async def check_redis(redis: Redis, mux: RedisMux) -> str:
    """``"ok"`` when Redis answers both clients (the hot path's own connection too) within
    :data:`CHECK_TIMEOUT`, else what failed."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await redis.ping()
            await mux.execute(("PING",))
        return "ok"
    except (RedisError, OSError) as exc:  # TimeoutError is an OSError
        return f"unavailable: {type(exc).__name__}"


@api.get(
    "/metrics",
    summary="Prometheus metrics of this server, all its workers (for an internal scraper only)",
    answers=[(200, Media(("text/plain",)), f"Prometheus text format ({CONTENT_TYPE})")],
    public=True,
)
async def metrics(request: Request) -> Response:
    return Response(wallet(request).metrics.render(), media_type=CONTENT_TYPE)


routes = api.routes
