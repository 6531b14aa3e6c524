"""Prometheus metrics of one app instance, exposed on ``GET /metrics``.

Each app owns its own :class:`~prometheus_client.CollectorRegistry` rather than the library's
global one, so that several apps in one process (the tests start a few) never collide over metric
names.

With several workers (``wallet serve --workers N``, or ``PROMETHEUS_MULTIPROC_DIR`` set by hand)
prometheus-client's multiprocess mode is on: every process writes its values to memory-mapped
files in that directory and a scrape of any worker reads them all (docs/deployment.md, Metrics).
The mode is chosen once, when prometheus-client is imported, from that environment variable;
without it values stay in memory, as the tests want (several apps in one process).

Nothing gauged is read when scraped by a custom collector or ``set_function``: those would report
only the scraped worker. Per-process quantities (the pool, the call-history buffer, the Redis
multiplexer's queue, the breakers) are copied into plain gauges by :meth:`Metrics.refresh_live`,
at each scrape and every few seconds (:mod:`app.gauges`), and summed (``livesum``) or maxed
(``livemax``) over live workers. What every worker counts alike with a query (stale rounds, the
outbox, payments needing attention, the ledger check) is written when counted and reported as
the most recent count (``mostrecent``), never summed N times; every label set is written at each
count, so none keeps a value its last writer left. ``wallet_dependency_up`` is each worker's own
probe, reported as the lowest of the live workers (``livemin``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import asyncpg
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from app.payments.metering import PSP_OPERATIONS, PSP_OUTCOMES, PspOperation, PspOutcome
from app.payments.routing import BreakerState
from app.seamless.calls import CallLog

# No `<name>_created` series: each counter would carry a second one, which nobody graphs, that
# multiprocess exposition lacks anyway. Process-wide, like the value class below.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Multiprocess mode, as prometheus-client decided it at import (PROMETHEUS_MULTIPROC_DIR set).
MULTIPROCESS = values.ValueClass is not values.MutexValue

# The classic text format, which is what generate_latest writes (whatever the library's newest).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# From 1 ms (a cached replay) to 2 s (the default longest lock wait, or a struggling database).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)

# Methods outside this set are counted as "other": a label must not take any value a client sends.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

UNMATCHED_ROUTE = "unmatched"

# A breaker's state as a number: the worst of several workers is the max.
BREAKER_VALUES: dict[BreakerState, int] = {"closed": 0, "half_open": 1, "open": 2}
# From a fast answer to a PSP's 10 s timeout.
PSP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_Pair = tuple[Counter, Histogram]


class Metrics:
    """The wallet's counters, histograms and gauges, and their exposition."""

    def __init__(self) -> None:
        self._pairs: dict[tuple[object, ...], _Pair] = {}
        self.registry = CollectorRegistry()
        r = self.registry
        self.seamless_requests = Counter(
            "wallet_seamless_requests",
            "Seamless webhook deliveries answered, by event and R-code",
            ["event", "code", "reason"],
            registry=r,
        )
        self.seamless_seconds = Histogram(
            "wallet_seamless_request_seconds",
            "Time to process one seamless delivery, from body to outcome",
            ["event"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.duplicates = Counter(
            "wallet_seamless_duplicates",
            "Deliveries of an already posted transaction_id answered as duplicates",
            ["event"],
            registry=r,
        )
        self.idempotency_conflicts = Counter(
            "wallet_seamless_idempotency_conflicts",
            "Deliveries reusing a transaction_id with different fields",
            ["event"],
            registry=r,
        )
        self.credits = Counter(
            "wallet_seamless_credits",
            "Credits posted by game providers, by kind: win, jackpot, bonus, free_round (results "
            "and their corrections) and promo_win",
            ["kind"],
            registry=r,
        )
        self.credited = Counter(
            "wallet_seamless_credited_minor_units",
            "Minor units credited by results and promo wins, by kind and currency (corrections "
            "are counted in wallet_seamless_credits, not here: they may take money back)",
            ["kind", "currency"],
            registry=r,
        )
        self.replays = Counter(
            "wallet_seamless_replays",
            "Deliveries answered from the request_id replay cache",
            registry=r,
        )
        self.rate_limited = Counter(
            "wallet_rate_limited",
            "Requests refused for going over a rate limit, by whose limit (provider, api_key)",
            ["limit"],
            registry=r,
        )
        self.lock_wait_seconds = Histogram(
            "wallet_lock_wait_seconds",
            "Time spent waiting for a player's lock after the first attempt failed",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.lock_timeouts = Counter(
            "wallet_lock_timeouts",
            "Player lock waits given up; the event went on without the lock",
            registry=r,
        )
        self.http_requests = Counter(
            "wallet_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "wallet_http_request_seconds",
            "Time to answer one HTTP request, by route template",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.db_batch_size = Histogram(
            "wallet_db_batch_size",
            "Seamless events posted together in one transaction (group commit)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        # Per process, summed over the live workers.
        self.db_pool_size = _live_gauge(
            r, "wallet_db_pool_size", "Open connections of the Postgres pool"
        )
        self.db_pool_idle = _live_gauge(
            r, "wallet_db_pool_idle", "Idle connections of the Postgres pool"
        )
        self.db_pool_max = _live_gauge(r, "wallet_db_pool_max", "Largest size of the Postgres pool")
        self.call_log_buffered = _live_gauge(
            r, "wallet_call_log_buffered", "Call-history rows waiting to be written"
        )
        self.call_log_dropped = Counter(
            "wallet_call_log_dropped",
            "Call-history rows dropped because the buffer was full",
            registry=r,
        )
        self.redis_mux_queued = _live_gauge(
            r,
            "wallet_redis_mux_queued",
            "Commands sent on the hot path's Redis connection and not answered yet",
        )
        self.psp_calls = Counter(
            "wallet_psp_calls",
            f"Calls to a PSP route, by route, operation ({', '.join(PSP_OPERATIONS)}) and "
            f"outcome ({', '.join(PSP_OUTCOMES)})",
            ["route", "operation", "outcome"],
            registry=r,
        )
        self.psp_seconds = Histogram(
            "wallet_psp_call_seconds",
            "Time of one call to a PSP route, whatever its outcome",
            ["route", "operation"],
            buckets=PSP_BUCKETS,
            registry=r,
        )
        self.psp_breaker_state = Gauge(
            "wallet_psp_breaker_state",
            "A PSP route's circuit breaker: "
            + ", ".join(f"{n} {state}" for state, n in BREAKER_VALUES.items())
            + " (the worst worker's)",
            ["route"],
            multiprocess_mode="livemax",
            registry=r,
        )
        # Counted by a query, alike in every worker: the most recent count is the answer.
        self.stale_rounds = _counted_gauge(
            r,
            "wallet_rounds_stale",
            "Stale rounds (open, a bet not cancelled, older than WALLET_ROUND_STALE_SECONDS) "
            "per provider, counted every 60 s",
            ["provider"],
        )
        self.outbox_events = _counted_gauge(
            r,
            "wallet_outbox_events",
            "Operator events not delivered, by state: pending (due or retrying) and dead "
            "(dead letters)",
            ["state"],
        )
        self.payments_attention = _counted_gauge(
            r,
            "wallet_payments_attention",
            "Payments waiting for an operator, by kind and attention reason",
            ["kind", "attention"],
        )
        # Not alike in every worker (each probes with its own pool and Redis connection): the
        # worst live worker's, so one worker that cannot reach a dependency shows 0, steadily.
        self.dependency_up = Gauge(
            "wallet_dependency_up",
            "1 if the last check (every 15 s) of every live worker reached the dependency "
            "(postgres, redis), else 0",
            ["dependency"],
            multiprocess_mode="livemin",
            registry=r,
        )
        self.ledger_check_problems = _counted_gauge(
            r,
            "wallet_ledger_check_problems",
            "Offending rows the last ledger check found (up to 100 per invariant; 0 when sound)",
        )
        self.ledger_check_timestamp = _counted_gauge(
            r,
            "wallet_ledger_check_timestamp_seconds",
            "Unix time the last ledger check completed",
        )
        self._live: list[Callable[[], None]] = []
        self._dropped_seen = 0

    def stale_rounds_counted(self, counts: Mapping[str, int]) -> None:
        """The stale rounds per provider, as just counted: every registered provider, 0 when it
        has none. Writing every label set each time is what makes a series go back to 0 in
        every mode: in multiprocess mode a series stays in its writer's files after that writer
        is gone, so only a newer write of the same labels replaces it."""
        for provider, stale in counts.items():
            self.stale_rounds.labels(provider).set(stale)

    def outbox_counted(self, pending: int, dead: int) -> None:
        self.outbox_events.labels("pending").set(pending)
        self.outbox_events.labels("dead").set(dead)

    def attention_counted(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Payments needing attention by (kind, attention), as just counted: every declared pair,
        0 when none (see :meth:`stale_rounds_counted` for why every one)."""
        for (kind, attention), payments in counts.items():
            self.payments_attention.labels(kind, attention).set(payments)

    def dependency_checked(self, dependency: str, up: bool) -> None:
        self.dependency_up.labels(dependency).set(1 if up else 0)

    def ledger_checked(self, problems: int, finished_at: float) -> None:
        self.ledger_check_problems.set(problems)
        self.ledger_check_timestamp.set(finished_at)

    def psp_call(
        self, route: str, operation: PspOperation, outcome: PspOutcome, seconds: float
    ) -> None:
        """Count one call to a PSP route (:mod:`app.payments.metering`)."""
        self.psp_calls.labels(route, operation, outcome).inc()
        self.psp_seconds.labels(route, operation).observe(seconds)

    def watch_pool(self, pool: asyncpg.Pool) -> None:
        """Copy the pool's sizes into its gauges at each :meth:`refresh_live`."""

        def read() -> None:
            self.db_pool_size.set(pool.get_size())
            self.db_pool_idle.set(pool.get_idle_size())
            self.db_pool_max.set(pool.get_max_size())

        self._live.append(read)

    def watch_call_log(self, calls: CallLog) -> None:
        """Copy the call history's buffer and drop count at each :meth:`refresh_live`."""

        def read() -> None:
            self.call_log_buffered.set(calls.buffered)
            # The log counts its drops itself; the counter takes what is new since last time.
            dropped = calls.dropped
            if dropped > self._dropped_seen:
                self.call_log_dropped.inc(dropped - self._dropped_seen)
                self._dropped_seen = dropped

        self._live.append(read)

    def watch_mux(self, queued: Callable[[], int]) -> None:
        """Copy the Redis multiplexer's queue length at each :meth:`refresh_live`."""
        self._live.append(lambda: self.redis_mux_queued.set(queued()))

    def watch_breakers(self, states: Callable[[], Mapping[str, BreakerState]]) -> None:
        """Copy each PSP route's breaker state (``closed``, ``half_open``, ``open``)."""

        def read() -> None:
            for route, state in states().items():
                self.psp_breaker_state.labels(route).set(BREAKER_VALUES[state])

        self._live.append(read)

    def refresh_live(self) -> None:
        """Write this process's live quantities into their gauges: at each scrape of this worker,
        and periodically (:mod:`app.gauges`) so a scrape of another worker sees them fresh."""
        for read in self._live:
            read()

    def seamless(
        self,
        event: str,
        code: str,
        reason: str,
        seconds: float,
        *,
        duplicate: bool,
        replayed: bool,
    ) -> None:
        """Count one answered seamless delivery.

        A replayed answer counts as a request and a replay, not again as a duplicate or a
        conflict: it repeats what the first delivery was told.
        """
        counter, histogram = self._children(
            ("seamless", event, code, reason),
            lambda: (
                self.seamless_requests.labels(event, code, reason),
                self.seamless_seconds.labels(event),
            ),
        )
        counter.inc()
        histogram.observe(seconds)
        if replayed:
            self.replays.inc()
        elif duplicate:
            self.duplicates.labels(event).inc()
        elif reason == "idempotency_conflict":
            self.idempotency_conflicts.labels(event).inc()

    def credit(self, kind: str, currency: str, amount: int) -> None:
        """Count one credit posted now, of ``kind`` (as the ledger stored it); ``amount`` is
        what it credited, 0 for a correction."""
        self.credits.labels(kind).inc()
        if amount > 0:
            self.credited.labels(kind, currency).inc(amount)

    def lock_waited(self, seconds: float, acquired: bool) -> None:
        """Record one wait for a player's lock (see :class:`app.locks.PlayerLocks`)."""
        self.lock_wait_seconds.observe(seconds)
        if not acquired:
            self.lock_timeouts.inc()

    def batch_posted(self, size: int) -> None:
        """Record the size of one group-committed batch (see :mod:`app.seamless.batch`)."""
        self.db_batch_size.observe(size)

    def http_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered HTTP request; ``route`` is a path template, never a raw path."""
        method = method if method in HTTP_METHODS else "other"
        counter, histogram = self._children(
            ("http", route, method, status),
            lambda: (
                self.http_requests.labels(route, method, str(status)),
                self.http_seconds.labels(route),
            ),
        )
        counter.inc()
        histogram.observe(seconds)

    def _children(self, labels: tuple[object, ...], make: Callable[[], _Pair]) -> _Pair:
        """The labelled counter and histogram for ``labels``, looked up once: ``labels()``
        validates and locks on every call, a measurable share of a request on the hot path.
        Label values are bounded sets (routes, events, codes), so the cache is too."""
        pair = self._pairs.get(labels)
        if pair is None:
            pair = self._pairs[labels] = make()
        return pair

    def render(self) -> bytes:
        """Every metric in the Prometheus text exposition format: of every worker in
        multiprocess mode, read from their files."""
        self.refresh_live()
        if not MULTIPROCESS:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def close(self) -> None:
        """This process is going away: its live gauges leave the multiprocess totals."""
        if MULTIPROCESS:
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def _live_gauge(registry: CollectorRegistry, name: str, documentation: str) -> Gauge:
    """A per-process quantity, summed over the live workers."""
    return Gauge(name, documentation, multiprocess_mode="livesum", registry=registry)


def _counted_gauge(
    registry: CollectorRegistry, name: str, documentation: str, labels: Sequence[str] = ()
) -> Gauge:
    """A count every worker makes alike (a query): the most recent one written is reported, and
    it survives the worker that wrote it."""
    return Gauge(
        name, documentation, list(labels), multiprocess_mode="mostrecent", registry=registry
    )
