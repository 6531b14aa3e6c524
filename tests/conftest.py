"""Test session: real Postgres and real Redis, started once, migrations applied once.

With ``WALLET_DATABASE_URL`` / ``WALLET_REDIS_URL`` unset (the default, and CI), the session starts
its own embedded servers in a temporary folder on free ports. With them set, it creates a fresh
database on that server and leaves the operator's own data alone.

Each test is isolated by making its own provider and players with random codes.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

# Set before the app is imported anywhere: settings are read from the environment once.
ADMIN_KEY = "test-admin-key-" + secrets.token_hex(8)
os.environ["WALLET_ADMIN_API_KEY"] = ADMIN_KEY
os.environ["WALLET_MASTER_KEY"] = MASTER_KEY = base64.b64encode(secrets.token_bytes(32)).decode()

from app import db, logs  # noqa: E402
from app.client import ProviderClient  # noqa: E402
from app.config import Settings  # noqa: E402
from app.devstack import EmbeddedPostgres, EmbeddedRedis  # noqa: E402
from app.main import create_app  # noqa: E402


@dataclass(frozen=True)
class Services:
    database_url: str
    redis_url: str
    data_dir: Path


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    data_dir = tmp_path_factory.mktemp("servers")
    database_url = os.environ.get("WALLET_DATABASE_URL")
    redis_url = os.environ.get("WALLET_REDIS_URL")
    pg = redis = None
    try:
        if database_url is None:
            pg = EmbeddedPostgres(data_dir / "pg", durable=False)
            database_url = pg.start()
        if redis_url is None:
            redis = EmbeddedRedis(data_dir / "redis")
            redis_url = redis.start()
        name = "wallet_test_" + secrets.token_hex(4)
        database_url = asyncio.run(db.ensure_database(database_url, name))
        asyncio.run(_migrate(database_url))
        yield Services(database_url, redis_url, data_dir)
    finally:
        if redis is not None:
            redis.stop()
        if pg is not None:
            pg.stop()


async def _migrate(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await db.migrate(conn)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def settings(services: Services) -> Settings:
    return replace(
        Settings.from_env(),
        database_url=services.database_url,
        redis_url=services.redis_url,
        data_dir=services.data_dir,
        # The suite drives the operator API far faster than any person; tests/test_rate_limits.py
        # starts apps of its own with low limits.
        rate_limit_api_key=0,
    )


class _WithState:
    """Hands the lifespan's state to every request, as an ASGI server would."""

    def __init__(self, app: ASGIApp, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["state"] = dict(self.state)
        await self.app(scope, receive, send)


async def start_app(settings: Settings, stack: AsyncExitStack) -> ASGIApp:
    """Create the app and run its lifespan on ``stack``; an ASGI app ready for requests."""
    app = create_app(settings)
    state = await stack.enter_async_context(app.router.lifespan_context(app))
    return _WithState(app, state or {})


@pytest.fixture(scope="session")
async def asgi(settings: Settings) -> AsyncIterator[ASGIApp]:
    async with AsyncExitStack() as stack:
        yield await start_app(settings, stack)


@pytest.fixture(scope="session")
async def http(asgi: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://wallet.test") as client:
        yield client


@pytest.fixture(scope="session")
async def pool(services: Services) -> AsyncIterator[asyncpg.Pool]:
    """A separate pool for tests to look at the database directly."""
    p = await db.create_pool(services.database_url, min_size=1, max_size=4)
    yield p
    await p.close()


class Operator:
    """The operator API, authenticated as the bootstrap admin."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.headers = {"authorization": f"Bearer {ADMIN_KEY}"}

    async def call(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        expect: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        response = await self.http.request(
            method, path, json=json, headers={**self.headers, **(headers or {})}
        )
        if expect is not None:
            assert response.status_code == expect, response.text
        return response.json()

    async def provider(self) -> dict[str, Any]:
        code = "prov-" + secrets.token_hex(4)
        return await self.call(  # type: ignore[no-any-return]
            "POST", "/v1/providers", {"code": code, "name": "Test provider"}, expect=201
        )

    async def player(self, balance: int = 0, currency: str = "EUR") -> str:
        player_id = "pl-" + secrets.token_hex(5)
        await self.call(
            "POST", "/v1/players", {"player_id": player_id, "currency": currency}, expect=201
        )
        if balance:
            await self.fund(player_id, balance)
        return player_id

    async def fund(self, player_id: str, amount: int) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "POST",
            f"/v1/players/{player_id}/adjustments",
            {"amount": amount, "reason": "test funding"},
            headers={"idempotency-key": secrets.token_hex(8)},
            expect=201,
        )

    async def session(self, player_id: str, provider: str, game_id: str = "slot-1") -> str:
        issued = await self.call(
            "POST",
            f"/v1/players/{player_id}/sessions",
            {"provider": provider, "game_id": game_id},
            expect=201,
        )
        return issued["session_token"]  # type: ignore[no-any-return]

    async def balance(self, player_id: str) -> int:
        player = await self.call("GET", f"/v1/players/{player_id}", expect=200)
        return player["balance"]  # type: ignore[no-any-return]


@pytest.fixture
def operator(http: httpx.AsyncClient) -> Operator:
    return Operator(http)


@dataclass
class Table:
    """One provider and one funded player with a live session: the usual test setting."""

    operator: Operator
    client: ProviderClient
    provider: str
    player_id: str
    token: str

    async def bet(
        self, amount: int, *, round_id: str = "r1", txn: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        fields = dict(
            player_id=self.player_id,
            session_token=self.token,
            round_id=round_id,
            game_id="slot-1",
            amount=amount,
            currency="EUR",
            transaction_id=txn or "bet-" + secrets.token_hex(6),
        )
        fields.update(extra)
        return await self.client.send("bet", **fields)

    async def result(
        self, amount: int, *, round_id: str = "r1", txn: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        fields = dict(
            player_id=self.player_id,
            round_id=round_id,
            game_id="slot-1",
            amount=amount,
            currency="EUR",
            transaction_id=txn or "res-" + secrets.token_hex(6),
        )
        fields.update(extra)
        return await self.client.send("result", **fields)

    async def cancel(
        self, ref: str, *, round_id: str = "r1", txn: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        fields = dict(
            player_id=self.player_id,
            round_id=round_id,
            currency="EUR",
            ref_transaction_id=ref,
            transaction_id=txn or "can-" + secrets.token_hex(6),
        )
        fields.update(extra)
        return await self.client.send("cancel", **fields)

    async def balance(self) -> int:
        return await self.operator.balance(self.player_id)


TableFactory = Callable[..., Awaitable[Table]]


@pytest.fixture
def table_factory(operator: Operator, http: httpx.AsyncClient) -> TableFactory:
    async def make(balance: int = 10_000, currency: str = "EUR") -> Table:
        provider = await operator.provider()
        key = provider["keys"][0]
        client = ProviderClient("http://wallet.test", provider["code"], key["key"], http=http)
        player_id = await operator.player(balance, currency)
        token = await operator.session(player_id, provider["code"])
        return Table(operator, client, provider["code"], player_id, token)

    return make


@pytest.fixture
async def table(table_factory: TableFactory) -> Table:
    return await table_factory()


def now() -> int:
    return int(time.time())


SANDBOX_API_KEY = "sandbox-api-key"
SANDBOX_SECRET = "sandbox-webhook-secret"


@dataclass
class SandboxRoutes:
    """The session app's payments, routed to an in-process sandbox PSP (two routes, a and b)."""

    sandbox: Any
    http: httpx.AsyncClient  # to the sandbox, as a person or a test would call it

    async def settle(self) -> None:
        await self.sandbox.state.sandbox.idle()

    async def complete(self, psp_payment_id: str, outcome: str = "approve") -> None:
        response = await self.http.post(
            f"/v1/sandbox/payments/{psp_payment_id}/complete",
            json={"outcome": outcome},
            headers={"authorization": f"Bearer {SANDBOX_API_KEY}"},
        )
        assert response.status_code == 200, response.text
        await self.settle()


@dataclass
class InProcessSandbox:
    """A sandbox PSP app, a client to it, and wallet route adapters that call it."""

    app: Any
    http: httpx.AsyncClient
    routes: list[Any]


@asynccontextmanager
async def in_process_sandbox(
    webhooks_to: ASGIApp, names: tuple[str, ...]
) -> AsyncIterator[InProcessSandbox]:
    """A sandbox PSP in this process with fast timings; its webhooks go to ``webhooks_to``, and
    one route adapter per name reaches it."""
    from app.payments.psp import SandboxPsp
    from app.payments.sandbox import SandboxConfig, create_sandbox_app

    to_wallet = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=webhooks_to), base_url="http://wallet.test"
    )
    sandbox = create_sandbox_app(
        SandboxConfig(
            api_key=SANDBOX_API_KEY,
            webhook_secret=SANDBOX_SECRET,
            public_base_url="http://sandbox.test",
            http=to_wallet,
            webhook_delay=0.05,
            retry_backoff=0.01,
            burst=1,
            payout_delay=0.02,
        )
    )
    to_sandbox = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox), base_url="http://sandbox.test"
    )
    routes = [
        SandboxPsp(
            name, "http://sandbox.test", SANDBOX_API_KEY, SANDBOX_SECRET.encode(), to_sandbox
        )
        for name in names
    ]
    try:
        yield InProcessSandbox(sandbox, to_sandbox, routes)
    finally:
        await sandbox.state.sandbox.aclose()
        await to_sandbox.aclose()
        await to_wallet.aclose()


@pytest.fixture
async def sandbox_routes(asgi: ASGIApp) -> AsyncIterator[SandboxRoutes]:
    """Sandbox PSP routes for the session app while one test runs; webhooks come back to the
    app's own /v1/psp/{psp}/webhook endpoint."""
    payments = asgi.state["wallet"].payments  # type: ignore[attr-defined]
    saved = (payments.psps, payments.webhook_base)
    async with in_process_sandbox(asgi, ("sandbox-a", "sandbox-b")) as sandbox:
        payments.psps = sandbox.routes
        payments.webhook_base = "http://wallet.test/v1/psp"
        try:
            yield SandboxRoutes(sandbox.app, sandbox.http)
        finally:
            payments.psps, payments.webhook_base = saved


# --- the command line ----------------------------------------------------------------------------


def wallet_cli(
    database_url: str, redis_url: str, *args: str, master: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``wallet <args>`` as a process of its own, with only these servers (and master key) from
    the environment's WALLET_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    env.update(WALLET_DATABASE_URL=database_url, WALLET_REDIS_URL=redis_url)
    if master is not None:
        env["WALLET_MASTER_KEY"] = master
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- log capture ---------------------------------------------------------------------------------


class RawRecords(logging.Handler):
    """Every record as logged, before any redaction (it runs first among the root's handlers)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        parts = [record.getMessage(), repr(record.args)]
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
        parts += [str(v) for v in record.__dict__.values()]
        self.texts.append("\n".join(parts))


@contextmanager
def every_log_line() -> Iterator[tuple[RawRecords, io.StringIO]]:
    """Every logger at DEBUG into the wallet's JSON handler (its lines in the stream), and a raw
    copy of each record; levels and handlers as they were afterwards."""
    stream = io.StringIO()
    handler = logs.make_handler(stream, json=True)
    raw = RawRecords()
    root = logging.getLogger()
    levels = {
        name: logger.level
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    root_level = root.level
    for name in levels:
        logging.getLogger(name).setLevel(logging.NOTSET)
    root.setLevel(logging.DEBUG)
    root.handlers.insert(0, raw)
    root.addHandler(handler)
    try:
        yield raw, stream
    finally:
        root.removeHandler(handler)
        root.removeHandler(raw)
        root.setLevel(root_level)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
