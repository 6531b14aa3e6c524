"""Health probes and metrics, without an API key: liveness (``/healthz``), readiness
(``/readyz``) and the Prometheus exposition (``/metrics``), for an internal scraper."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from app.metrics import CONTENT_TYPE
from app.state import wallet
from app.web.messages import Answer
from app.web.routing import Api, Media, Reply

api = Api("health")


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
    try:
        async with w.pool.acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1")
        database = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; say which
        database = f"unavailable: {type(exc).__name__}"
    try:
        await w.redis.ping()
        await w.seamless.gate.mux.execute(("PING",))  # the hot path's own connection too
        redis = "ok"
    except (RedisError, OSError) as exc:
        redis = f"unavailable: {type(exc).__name__}"
    checks = Checks(database=database, redis=redis)
    if database == redis == "ok":
        return Ready(status="ok", checks=checks)
    return Reply(Ready(status="unavailable", checks=checks), 503)


@api.get(
    "/metrics",
    summary="Prometheus metrics of this process (for an internal scraper only)",
    answers=[(200, Media(("text/plain",)), f"Prometheus text format ({CONTENT_TYPE})")],
    public=True,
)
async def metrics(request: Request) -> Response:
    return Response(wallet(request).metrics.render(), media_type=CONTENT_TYPE)


routes = api.routes
