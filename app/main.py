"""The application factory: routes, middleware, error handlers, and the lifespan that owns the
Postgres pool, the Redis client and the call-history writer."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from app import db, gauges, health, logs, openapi, tracing
from app.admin import site as admin_site
from app.config import ConfigError, Settings
from app.locks import PlayerLocks
from app.metrics import Metrics
from app.metrics_files import forget_dead_processes
from app.operator import (
    adjustments,
    api_keys,
    free_rounds,
    players,
    postings,
    providers,
    reports,
    rounds,
)
from app.operator import reconciliation as provider_reconciliation
from app.payments import deposits, events, reconciliation, webhook, withdrawals
from app.payments.outbox import Outbox
from app.payments.psp import build_psps
from app.payments.service import Payments
from app.ratelimit import Limiter
from app.redis_client import create_redis
from app.redis_mux import RedisMux
from app.seamless import endpoints as seamless_endpoints
from app.seamless.calls import CallLog
from app.seamless.keys import KeyRing
from app.seamless.replay import Gate
from app.seamless.service import SeamlessService
from app.secrets import master_key_bytes
from app.state import Wallet
from app.web import docs, error_docs, http, routing
from app.web.errors import DatabaseUnavailable, InvalidRequest, NotFound, WalletError

log = logging.getLogger(__name__)

# The documented routes, domain by domain: what the document and the role matrix describe (the
# health routes, the PSP webhook, the document and its page among them are public). Only the
# seamless webhook, served ahead of routing (WalletApp), is not among them.
API_ROUTES: list[BaseRoute] = [
    *providers.routes,
    *players.routes,
    *adjustments.routes,
    *free_rounds.routes,
    *postings.routes,
    *reports.routes,
    *provider_reconciliation.routes,
    *api_keys.routes,
    *rounds.routes,
    *health.routes,
    *deposits.routes,
    *withdrawals.routes,
    *events.routes,
    *reconciliation.routes,
    *webhook.routes,
    *openapi.routes,
    *docs.routes,
    *error_docs.routes,
]
# Who may call each (method, path) of API_ROUTES: the roles each route declares.
PERMISSIONS = routing.permissions(API_ROUTES)

# What the API's handlers raise when Postgres is unreachable or cannot serve them now: the
# connection refused or lost (OSError, asyncpg's connection errors and the internal error it
# raises on a connection the server terminated), no pool connection in time (TimeoutError, an
# OSError), the server shutting down, starting up, cancelling the statement, or out of
# connections. Answered 503 route_degraded; any other database error is a bug, and a 500.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.InternalClientError,
    # What asyncpg raises on a connection the server terminated mid-transaction ("connection has
    # been released back to the pool"); app.db.CONNECTION_ERRORS counts it as a connection
    # failure too. Nothing of the transaction committed.
    asyncpg.InterfaceError,
)


async def _schema_is_current(pool: Any) -> None:
    latest = max(m.version for m in db.migrations())
    async with pool.acquire() as conn:
        exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        applied = (
            await conn.fetchval("SELECT max(version) FROM schema_migrations") if exists else None
        )
    if applied != latest:
        raise RuntimeError(
            f"database schema is at migration {applied}, code expects {latest}; "
            "run `wallet migrate`"
        )
    async with pool.acquire() as conn:
        stale = await db.pending(conn)
    if stale:
        raise RuntimeError(
            f"database functions differ from this code's ({', '.join(stale)}); run `wallet migrate`"
        )


class WalletApp(Starlette):
    """The Starlette app behind one pure-ASGI dispatcher. Every HTTP request gets its correlation
    id and metrics here (:func:`app.web.http.tracked`); a seamless delivery then goes straight to
    its handler, skipping routing and middleware (see :mod:`app.seamless.endpoints`), and
    everything else to Starlette."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
        elif seamless_endpoints.provider_of(scope) is not None:
            await http.tracked(
                scope, receive, send, seamless_endpoints.webhook, seamless_endpoints.ROUTE
            )
        else:
            await http.tracked(scope, receive, send, super().__call__)


class TracedWalletApp(WalletApp):
    """The wallet app behind OpenTelemetry's HTTP server span (:mod:`app.tracing`): made
    instead of :class:`WalletApp` only when tracing is on, so that an untraced app's requests do
    not pass the middleware at all."""

    def __init__(self, traced: tracing.Tracing, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tracing = traced
        self._traced = traced.wrap(super().__call__)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._traced(scope, receive, send)


def create_app(settings: Settings | None = None) -> Starlette:
    """The wallet ASGI app. Database and Redis URLs must be known (see ``app.dev.local``)."""
    settings = settings or Settings.from_env()
    if settings.database_url is None or settings.redis_url is None:
        raise ConfigError("WALLET_DATABASE_URL and WALLET_REDIS_URL must be set to create the app")
    database_url, redis_url = settings.database_url, settings.redis_url
    logs.ensure_configured()
    if settings.admin_api_key is not None:
        logs.register_secret(str(settings.admin_api_key))
    # Here, in the factory: with --workers N it runs in each worker, never in the supervisor.
    traced = tracing.for_app(settings.tracing)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        pool = await db.create_pool(
            database_url,
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            statement_timeout_ms=settings.db_statement_timeout_ms,
            statement_cache_size=settings.db_statement_cache_size,
        )
        redis = create_redis(redis_url, timeout_ms=settings.redis_timeout_ms)
        mux = RedisMux(redis_url, timeout=settings.redis_timeout_ms / 1000)
        psp_http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=3.0))
        calls = CallLog(pool)
        poller: asyncio.Task[None] | None = None
        deliverer: asyncio.Task[None] | None = None
        pruner: asyncio.Task[None] | None = None
        stale_counter: asyncio.Task[None] | None = None
        refresher: asyncio.Task[None] | None = None
        ledger_checker: asyncio.Task[None] | None = None
        seamless: SeamlessService | None = None
        forget_dead_processes()  # workers the supervisor replaced, in multiprocess mode
        metrics = Metrics()
        metrics.watch_pool(pool)
        metrics.watch_call_log(calls)
        metrics.watch_mux(mux.queued)
        try:
            if traced is not None:
                traced.start(psp_http)
            await _schema_is_current(pool)
            queries = db.Queries.load()
            locks = PlayerLocks(
                redis,
                ttl_ms=settings.lock_ttl_ms,
                wait_ms=settings.lock_wait_ms,
                observe=metrics.lock_waited,
            )
            await locks.load_scripts()
            keys = KeyRing(
                pool,
                queries,
                settings.key_cache_seconds,
                master_key=master_key_bytes(str(settings.master_key))
                if settings.master_key is not None
                else None,
            )
            gate = Gate(mux, locks, replay_ms=settings.replay_seconds * 1000)
            seamless = SeamlessService(
                pool,
                queries,
                keys,
                gate,
                calls,
                freshness_seconds=settings.freshness_seconds,
                acquire_timeout=settings.db_acquire_timeout_ms / 1000,
                metrics=metrics,
                provider_limit=settings.rate_limit_provider,
                batch_max=settings.db_batch_max,
                batches_in_flight=settings.db_batches_in_flight,
                # Past the server's own statement timeout: only a connection gone silent.
                post_timeout=(settings.db_statement_timeout_ms or 25_000) / 1000 + 5,
                replay_seconds=settings.replay_seconds,
            )
            public_url = settings.public_url or f"http://{settings.host}:{settings.port}"
            payments = Payments(
                pool,
                queries,
                build_psps(settings.psps, psp_http),
                webhook_base=f"{public_url.rstrip('/')}/v1/psp",
                review_threshold=settings.withdrawal_review_threshold,
                kyc_tiers=settings.kyc_method_tiers,
                metrics=metrics,
            )
            metrics.watch_breakers(payments.breaker_states)
            calls.start()
            pruner = asyncio.get_running_loop().create_task(
                seamless.prune_forever(60.0), name="replay-pruner"
            )
            stale_counter = asyncio.get_running_loop().create_task(
                rounds.count_stale_forever(
                    pool, queries, metrics, settings.round_stale_seconds, rounds.STALE_GAUGE_SECONDS
                ),
                name="stale-rounds",
            )
            sources = gauges.Sources(
                pool, queries, redis, mux, metrics, settings.ledger_check_seconds
            )
            refresher = asyncio.get_running_loop().create_task(
                gauges.refresh_forever(sources), name="gauges"
            )
            if settings.ledger_check_seconds > 0:
                ledger_checker = asyncio.get_running_loop().create_task(
                    gauges.check_ledger_forever(sources), name="ledger-check"
                )
            # Late or unverifiable webhooks are not waited for forever: ask the PSPs.
            poller = (
                asyncio.get_running_loop().create_task(
                    payments.poll_forever(settings.payments_poll_seconds, quiet_seconds=60),
                    name="payments-poller",
                )
                if payments.psps
                else None
            )
            # Events to the operator's platform, delivered from the outbox table.
            if settings.operator_webhook_url and settings.operator_webhook_secret:
                outbox = Outbox(
                    pool,
                    queries,
                    psp_http,
                    settings.operator_webhook_url,
                    str(settings.operator_webhook_secret).encode(),
                )
                deliverer = asyncio.get_running_loop().create_task(
                    outbox.run_forever(5.0), name="operator-events"
                )
            _tune_garbage_collection()
            yield {
                "wallet": Wallet(
                    settings=settings,
                    pool=pool,
                    redis=redis,
                    queries=queries,
                    keys=keys,
                    calls=calls,
                    seamless=seamless,
                    metrics=metrics,
                    payments=payments,
                    limiter=Limiter(redis, per_second=settings.rate_limit_api_key),
                )
            }
        finally:
            for task in (poller, deliverer, pruner, stale_counter, refresher, ledger_checker):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if seamless is not None:
                await seamless.postings.close()
            await calls.close()
            await psp_http.aclose()
            await mux.aclose()
            await redis.aclose()
            await pool.close()
            metrics.close()
            if traced is not None:
                traced.stop()  # last: flushes the spans of the shutdown too

    app_args: dict[str, Any] = dict(
        routes=[
            *seamless_endpoints.routes,
            *API_ROUTES,
            *admin_site.routes,  # the back office: pages, not part of the document
        ],
        exception_handlers={
            WalletError: _wallet_error,
            HTTPException: _http_error,
            **dict.fromkeys(DATABASE_UNAVAILABLE, _database_unavailable),
            Exception: _unexpected_error,
        },
        lifespan=lifespan,
    )
    if traced is not None:
        return TracedWalletApp(traced, **app_args)
    return WalletApp(**app_args)


def _tune_garbage_collection() -> None:
    """Fewer and shorter cyclic collections, once the app is up.

    What start-up made (modules, settings, pools, scripts) lives as long as the process: frozen,
    no collection walks it again. Requests free almost everything they make by reference count,
    so collections can run far less often than the default (every 700 net new containers);
    measured under ``make bench``, the oldest generation's collections took up to 25 ms, which
    every request in flight waited for.
    """
    gc.collect()  # what start-up left as garbage goes first, rather than being kept for good
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


async def _wallet_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WalletError)
    _log_error(request, exc)
    return http.error_response(exc, request)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error: WalletError
    if exc.status_code == 404:
        error = NotFound(f"no route for {request.url.path}")
    elif exc.status_code == 405:
        error = InvalidRequest(f"method {request.method} not allowed on {request.url.path}")
        error.http_status = 405
    else:
        error = WalletError(str(exc.detail))
        error.http_status = exc.status_code
    _log_error(request, error)
    return http.error_response(error, request)


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    # The class only: a connection error's text can name hosts and ports, not for callers.
    log.warning(
        "%s %s: database unavailable (%s)", request.method, request.url.path, type(exc).__name__
    )
    return http.error_response(DatabaseUnavailable(), request)


def _log_error(request: Request, exc: WalletError) -> None:
    # The message is the one the caller gets; it never holds a body, a token or a key.
    log.log(
        logging.WARNING if exc.http_status >= 500 else logging.INFO,
        "%s %s answered %d %s: %s",
        request.method,
        request.url.path,
        exc.http_status,
        exc.code,
        exc.message,
    )


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    # It leaves through app.web.http.tracked, which adds X-Request-Id as to every answer.
    return http.error_response(WalletError("internal error"), request)
