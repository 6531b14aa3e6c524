"""Prometheus metrics of one app instance, exposed on ``GET /metrics``.

Each app owns its own :class:`~prometheus_client.CollectorRegistry` rather than the library's
global one, so that several apps in one process (the tests start a few) never collide over metric
names. Gauges of the database pool and the call history are read when scraped, not kept up to
date on the hot path.

Counts are per process: with ``wallet serve --workers N`` each scrape sees the one worker that
answered it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.seamless.calls import CallLog

# The classic text format, which is what generate_latest writes (whatever the library's newest).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# From 1 ms (a cached replay) to 2 s (the default longest lock wait, or a struggling database).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)

# Methods outside this set are counted as "other": a label must not take any value a client sends.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

UNMATCHED_ROUTE = "unmatched"

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
        self.db_pool_size = Gauge(
            "wallet_db_pool_size", "Open connections of the Postgres pool", registry=r
        )
        self.db_pool_idle = Gauge(
            "wallet_db_pool_idle", "Idle connections of the Postgres pool", registry=r
        )
        self.db_pool_max = Gauge(
            "wallet_db_pool_max", "Largest size of the Postgres pool", registry=r
        )

        # Stale rounds per provider, as last counted (app/operator/rounds.py, every 60 s).
        self.stale_rounds: dict[str, int] = {}
        self.registry.register(_StaleRoundsCollector(self))

    def stale_rounds_counted(self, counts: dict[str, int]) -> None:
        """The stale rounds per provider, as just counted: a provider with none drops out."""
        self.stale_rounds = dict(counts)

    def watch_pool(self, pool: asyncpg.Pool) -> None:
        """Read the pool's gauges from ``pool`` at every scrape."""
        self.db_pool_size.set_function(lambda: float(pool.get_size()))
        self.db_pool_idle.set_function(lambda: float(pool.get_idle_size()))
        self.db_pool_max.set_function(lambda: float(pool.get_max_size()))

    def watch_call_log(self, calls: CallLog) -> None:
        """Read the call history's buffer and drop count from ``calls`` at every scrape."""
        self.registry.register(_CallLogCollector(calls))

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
        """Every metric in the Prometheus text exposition format."""
        return generate_latest(self.registry)


class _CallLogCollector(Collector):
    """The call history's counts, read from the :class:`CallLog` itself when scraped."""

    def __init__(self, calls: CallLog) -> None:
        self.calls = calls

    def collect(self) -> Iterable[Metric]:
        yield CounterMetricFamily(
            "wallet_call_log_dropped",
            "Call-history rows dropped because the buffer was full",
            value=self.calls.dropped,
        )
        yield GaugeMetricFamily(
            "wallet_call_log_buffered",
            "Call-history rows waiting to be written",
            value=self.calls.buffered,
        )


class _StaleRoundsCollector(Collector):
    """``wallet_rounds_stale`` from the last count: a scrape runs no query."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "wallet_rounds_stale",
            "Stale rounds (open, a bet not cancelled, older than WALLET_ROUND_STALE_SECONDS) "
            "per provider, counted every 60 s by each process",
            labels=["provider"],
        )
        for provider, count in sorted(self.metrics.stale_rounds.items()):
            family.add_metric([provider], count)
        yield family
