"""The operator and payments APIs while Postgres is away (issue 12, defect 8).

Contract: "While Postgres is unreachable the API answers 503 with the error shape, never 500."
Every route that takes an API key (the operator's and the payments' ones, all declared in
``app.operator.endpoints.PERMISSIONS``) answers 503 ``route_degraded`` with ``Retry-After`` when:

- Postgres is stopped (its own server here, ``loadtests.faults.FaultStack``, so the session's
  servers stay up), and the same routes work again once it is back, without a restart;
- no pool connection comes free within ``WALLET_DB_ACQUIRE_TIMEOUT_MS``.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp

from app.config import Settings
from app.main import PERMISSIONS
from loadtests.faults import FaultStack, wait_ready
from tests.conftest import ADMIN_KEY, start_app
from tests.test_openapi import check_response

pytestmark = pytest.mark.slow

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}
# One route of each family the issue names must be among those checked.
FAMILIES = {
    ("GET", "/v1/players/{player_id}"),
    ("POST", "/v1/players"),
    ("POST", "/v1/players/{player_id}/adjustments"),
    ("POST", "/v1/providers"),
    ("POST", "/v1/withdrawals"),
    ("POST", "/v1/deposits"),
    ("GET", "/v1/webhooks/calls"),
    ("GET", "/v1/webhooks/failures"),
}


@pytest.fixture
def folder() -> Iterator[Path]:
    """Outside pytest's basetemp, for the reason tests/test_faults.py gives."""
    path = Path(tempfile.mkdtemp(prefix="wallet-operator-faults-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def _client(app: ASGIApp, stack: AsyncExitStack) -> httpx.AsyncClient:
    # A 500 comes back as an answer to assert on, not as the app's exception.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    client = httpx.AsyncClient(transport=transport, base_url="http://wallet.test")
    return await stack.enter_async_context(client)


def _url(path: str) -> str:
    return re.sub(r"\{[a-z_]+\}", lambda _: "x-" + secrets.token_hex(3), path)


async def every_route(http: httpx.AsyncClient) -> dict[tuple[str, str], httpx.Response]:
    """One request to every route that takes an API key, a plausible body where one goes."""
    answers = {}
    for method, path in PERMISSIONS:
        headers = {**AUTH, "idempotency-key": secrets.token_hex(8)}
        body: Any = {"player_id": "p-1", "currency": "EUR", "amount": 5, "reason": "x"}
        answers[(method, path)] = await http.request(
            method,
            _url(path),
            headers=headers,
            json=body if method in ("POST", "PUT") else None,
        )
    return answers


def assert_degraded(answers: dict[tuple[str, str], httpx.Response]) -> None:
    assert FAMILIES <= set(answers)
    wrong = {
        f"{m} {p}": (r.status_code, r.text[:200])
        for (m, p), r in answers.items()
        if r.status_code != 503
    }
    assert wrong == {}
    for (method, path), response in answers.items():
        check_response(response, method, path)  # as /openapi.json documents it
        error = response.json()["error"]
        assert error["code"] == "route_degraded"
        assert error["http_status"] == 503
        assert "database" in error["message"]
        assert error["docs_url"].endswith("route_degraded")
        assert error["request_id"] == response.headers["x-request-id"]
        assert int(response.headers["retry-after"]) >= 1


@pytest.fixture
async def stack(folder: Path) -> AsyncIterator[FaultStack]:
    servers = FaultStack(folder)
    try:
        await servers.start()
        yield servers
    finally:
        await servers.close()


async def test_every_route_answers_503_while_postgres_is_down_and_recovers(
    stack: FaultStack, settings: Settings
) -> None:
    own = replace(settings, database_url=stack.dsn, redis_url=stack.redis_url)
    async with AsyncExitStack() as exits:
        app = await start_app(own, exits)
        http = await _client(app, exits)
        player = "pl-" + secrets.token_hex(4)
        created = await http.post(
            "/v1/players", json={"player_id": player, "currency": "EUR"}, headers=AUTH
        )
        assert created.status_code == 201, created.text

        stack.stop_postgres()
        # Let the pool see its connections closed: a request handed one in the moment of the
        # shutdown may get its 400 for a body that was never going to be read anyway.
        await asyncio.sleep(0.2)
        try:
            assert_degraded(await every_route(http))
            assert (await http.get("/readyz")).status_code == 503
        finally:
            stack.start_postgres()

        await wait_ready(http, timeout=20)
        got = await http.get(f"/v1/players/{player}", headers=AUTH)
        assert got.status_code == 200, got.text
        credit = await http.post(
            f"/v1/players/{player}/adjustments",
            json={"amount": 100, "reason": "after the outage"},
            headers={**AUTH, "idempotency-key": secrets.token_hex(8)},
        )
        assert credit.status_code == 201, credit.text
        assert (await http.get("/v1/ledger/check", headers=AUTH)).json() == {"ok": True}


async def test_no_pool_connection_in_time_is_503(settings: Settings) -> None:
    own = replace(settings, db_pool_min=1, db_pool_max=3, db_acquire_timeout_ms=300)
    async with AsyncExitStack() as exits:
        app = await start_app(own, exits)
        http = await _client(app, exits)
        pool = app.state["wallet"].pool  # type: ignore[attr-defined]
        held = [await pool.acquire() for _ in range(own.db_pool_max)]
        try:
            answers = await asyncio.wait_for(every_route(http), timeout=30)
        finally:
            for conn in held:
                await pool.release(conn)
        assert_degraded(answers)
        assert (await http.get("/v1/providers", headers=AUTH)).status_code == 200
