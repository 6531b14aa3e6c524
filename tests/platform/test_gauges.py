"""The metrics operators alert on (app/gauges.py, app/metrics.py, app/payments/metering.py): each
one moved by what it reports, read back from the exposition."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from prometheus_client import generate_latest
from redis.asyncio import Redis

from app import db, gauges
from app.config import Settings
from app.db import Queries
from app.dev.devstack import free_port
from app.ledger import service as ledger
from app.metrics import BREAKER_VALUES, Metrics
from app.payments import metering, models, outbox, reconciliation
from app.payments.metering import PSP_OPERATIONS, PSP_OUTCOMES
from app.payments.psp import PspError, SettlementLine
from app.payments.routing import BREAKER_STATES, Breaker
from app.payments.service import PaymentRequest, Payments
from app.redis_client import create_redis
from app.redis_mux import RedisMux
from tests.fixtures.app import Operator
from tests.payments.psps import K, ScriptedPsp, timeout
from tests.platform.test_observability import value
from tests.support.cli import wallet_cli


def text_of(metrics: Metrics) -> str:
    return metrics.render().decode()


@dataclass
class Probe:
    """Sources for the gauges over the session's servers, with metrics of their own."""

    sources: gauges.Sources

    @property
    def metrics(self) -> Metrics:
        return self.sources.metrics

    async def count(self) -> str:
        await gauges.count(self.sources)
        return text_of(self.metrics)


@pytest.fixture
async def probe(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[Probe]:
    assert settings.redis_url is not None
    redis = create_redis(settings.redis_url, timeout_ms=1000)
    mux = RedisMux(settings.redis_url, timeout=1.0)
    try:
        yield Probe(gauges.Sources(pool, Queries.load(), redis, mux, Metrics(), 0))
    finally:
        await mux.aclose()
        await redis.aclose()


# --- PSP calls and breakers --------------------------------------------------------------------


def psp_calls(text: str, route: str, operation: str, outcome: str) -> float:
    return value(
        text,
        f'wallet_psp_calls_total{{operation="{operation}",outcome="{outcome}",route="{route}"}}',
    )


async def test_psp_calls_are_counted_by_route_operation_and_outcome(
    pool: asyncpg.Pool, operator: Operator
) -> None:
    metrics = Metrics()
    flaky = ScriptedPsp("psp-flaky", [PspError("http_503", retryable=True), timeout(), timeout()])
    refusing = ScriptedPsp("psp-refusing", [PspError("declined", retryable=False)])
    payments = Payments(
        pool, Queries.load(), [flaky, refusing], webhook_base="https://w/v1", metrics=metrics
    )
    player = await operator.player(10_000)

    async def deposit() -> dict[str, Any]:
        return await payments.create_deposit(
            PaymentRequest(player, 100, "EUR", "card"), K + secrets.token_hex(4)
        )

    # 503 on the first route, then the second declines: the payment fails.
    assert (await deposit())["status"] == "failed"
    # Two timeouts (asked again under the same key) on the first, then the second answers.
    assert (await deposit())["status"] == "awaiting_method"
    text = text_of(metrics)
    assert psp_calls(text, "psp-flaky", "start", "error") == 1
    assert psp_calls(text, "psp-flaky", "start", "timeout") == 2
    assert psp_calls(text, "psp-refusing", "start", "declined") == 1
    assert psp_calls(text, "psp-refusing", "start", "ok") == 1
    series = 'wallet_psp_call_seconds_count{operation="start",route="psp-flaky"}'
    assert value(text, series) == 3

    # Polling asks the route the payment is at for its status.
    payout_route = ScriptedPsp("psp-payout")
    payments.psps = [payout_route]
    created = await payments.create_withdrawal(
        PaymentRequest(player, 500, "EUR", "card"), K + secrets.token_hex(4)
    )
    assert created["status"] != "failed"
    assert psp_calls(text_of(metrics), "psp-payout", "payout", "ok") == 1


class ReportingPsp(ScriptedPsp):
    """A route with a settlement report: empty, or unavailable."""

    down: bool = False

    async def settlement(self, day: dt.date) -> list[SettlementLine]:
        if self.down:
            raise PspError("http_503", retryable=True)
        return []


async def test_polls_and_settlement_reports_are_counted(
    pool: asyncpg.Pool, operator: Operator
) -> None:
    metrics = Metrics()
    route = ReportingPsp("psp-polled-" + secrets.token_hex(3))
    q = Queries.load()
    payments = Payments(pool, q, [route], webhook_base="https://w/v1", metrics=metrics)
    player = await operator.player()
    await payments.create_deposit(
        PaymentRequest(player, 100, "EUR", "card"), K + secrets.token_hex(4)
    )
    await payments.poll_once(quiet_seconds=0, batch=100_000)
    assert psp_calls(text_of(metrics), route.name, "status", "ok") == 1
    day = dt.datetime.now(dt.UTC).date()
    async with pool.acquire() as conn:
        await reconciliation.report(conn, q, route, day, metrics)
        route.down = True
        with pytest.raises(PspError):
            await reconciliation.report(conn, q, route, day, metrics)
    text = text_of(metrics)
    assert psp_calls(text, route.name, "settlement_report", "ok") == 1
    assert psp_calls(text, route.name, "settlement_report", "error") == 1


def test_outcomes_are_a_fixed_set() -> None:
    errors = [timeout(), PspError("x", retryable=True), PspError("x", retryable=False), OSError()]
    assert {metering.outcome_of(e) for e in [None, *errors]} == set(PSP_OUTCOMES)
    assert metering.outcome_of(None) == "ok"
    assert metering.outcome_of(timeout()) == "timeout"
    assert metering.outcome_of(PspError("unreachable", retryable=True, not_sent=True)) == "error"
    assert metering.outcome_of(PspError("rate_limited", retryable=True)) == "error"
    assert metering.outcome_of(PspError("declined", retryable=False)) == "declined"
    assert metering.outcome_of(ValueError("a bug")) == "error"


async def test_a_call_that_fails_is_counted_and_raised() -> None:
    metrics = Metrics()

    async def broken() -> None:
        raise PspError("http_502", retryable=True)

    with pytest.raises(PspError):
        await metering.metered(metrics, "psp-x", "status", broken())
    assert psp_calls(text_of(metrics), "psp-x", "status", "error") == 1
    assert await metering.metered(None, "psp-x", "status", asyncio.sleep(0, "fine")) == "fine"


async def test_the_breaker_state_is_a_gauge_per_route(
    pool: asyncpg.Pool, operator: Operator
) -> None:
    metrics = Metrics()
    failing = ScriptedPsp("psp-down", [PspError("http_503", retryable=True)] * 3)
    payments = Payments(
        pool,
        Queries.load(),
        [failing, ScriptedPsp("psp-up")],
        webhook_base="https://w/v1",
        metrics=metrics,
    )
    metrics.watch_breakers(payments.breaker_states)
    now = [0.0]
    payments.breakers["psp-down"] = Breaker(min_calls=3, cooldown=10, clock=lambda: now[0])
    text = text_of(metrics)
    assert value(text, 'wallet_psp_breaker_state{route="psp-down"}') == 0
    assert 'wallet_psp_breaker_state{route="psp-up"} 0.0' in text  # not called yet: closed
    player = await operator.player()
    for _ in range(3):
        await payments.create_deposit(
            PaymentRequest(player, 100, "EUR", "card"), K + secrets.token_hex(4)
        )
    assert value(text_of(metrics), 'wallet_psp_breaker_state{route="psp-down"}') == 2  # open
    now[0] += 10
    assert payments.breakers["psp-down"].allow()  # the probe: half-open
    assert value(text_of(metrics), 'wallet_psp_breaker_state{route="psp-down"}') == 1


# --- counted by a query ------------------------------------------------------------------------

PENDING = 'wallet_outbox_events{state="pending"}'
DEAD = 'wallet_outbox_events{state="dead"}'


async def test_outbox_pending_and_dead_events_are_counted(
    pool: asyncpg.Pool, operator: Operator, probe: Probe
) -> None:
    failing = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(503)))
    box = outbox.Outbox(pool, Queries.load(), failing, "http://operator.test/e", b"secret")
    payments = Payments(pool, Queries.load(), [ScriptedPsp("psp-a")], webhook_base="https://w")
    before = await probe.count()
    player = await operator.player()
    created = await payments.create_deposit(
        PaymentRequest(player, 1_000, "EUR", "card"), K + secrets.token_hex(4)
    )
    (event_id,) = [
        r["id"]
        for r in await pool.fetch(
            "SELECT id FROM operator_events WHERE payment_id = $1", created["id"]
        )
    ]
    text = await probe.count()
    assert value(text, PENDING) == value(before, PENDING) + 1
    assert value(text, DEAD) == value(before, DEAD)
    try:
        for attempt in range(1, outbox.MAX_ATTEMPTS + 1):  # each answered 503: a dead letter
            # Due first of all the session's events, and alone in its batch: the others are
            # not this test's to move.
            await pool.execute(
                "UPDATE operator_events SET next_attempt_at = now() - interval '10 years' "
                "WHERE id = $1",
                event_id,
            )
            last = attempt == outbox.MAX_ATTEMPTS
            assert (await box.deliver_due(batch=1))["dead" if last else "retrying"] == 1
    finally:
        await failing.aclose()
    assert await pool.fetchval("SELECT dead_at FROM operator_events WHERE id = $1", event_id)
    text = await probe.count()
    assert value(text, PENDING) == value(before, PENDING)
    assert value(text, DEAD) == value(before, DEAD) + 1
    assert "# TYPE wallet_outbox_events gauge" in text


HELD = 'wallet_payments_attention{attention="held_for_review",kind="withdrawal"}'


async def test_a_held_withdrawal_needs_attention(
    pool: asyncpg.Pool, operator: Operator, probe: Probe
) -> None:
    payments = Payments(
        pool,
        Queries.load(),
        [ScriptedPsp("psp-a")],
        webhook_base="https://w",
        review_threshold=100,
    )
    before = await probe.count()
    player = await operator.player(5_000)
    held = await payments.create_withdrawal(
        PaymentRequest(player, 2_000, "EUR", "card"), K + secrets.token_hex(4)
    )
    assert held["status"] == "held" and held["attention"] == "held_for_review"
    assert value(await probe.count(), HELD) == value(before, HELD) + 1
    await pool.execute("SELECT payment_transition($1, 'rejected', 'operator')", held["id"])
    assert value(await probe.count(), HELD) == value(before, HELD)


async def test_every_declared_kind_and_reason_is_written_zero_when_none(probe: Probe) -> None:
    """A pair left out would keep the value its last writer left (multiprocess files)."""
    text = await probe.count()
    for kind in models.KINDS:
        for reason in models.ATTENTION:
            series = f'wallet_payments_attention{{attention="{reason}",kind="{kind}"}}'
            assert value(text, series) >= 0


async def test_the_attention_rule_is_one_sql_function_mirrored_by_the_answer(
    pool: asyncpg.Pool,
) -> None:
    for kind, statuses in models.KINDS.items():
        for status in statuses:
            for flagged in (None, *models.ATTENTION):
                row = {"kind": kind, "status": status, "flagged": flagged}
                in_sql = await pool.fetchval(
                    "SELECT payment_attention($1, $2, $3)", kind, status, flagged
                )
                assert in_sql == models._attention(row), row


async def test_a_final_payment_flag_is_open_for_a_day_a_moving_one_until_it_moves(
    pool: asyncpg.Pool,
) -> None:
    async def open_(kind: str, status: str, age: str) -> bool:
        sql = "SELECT payment_attention_open($1, $2, now() - $3::text::interval)"
        return bool(await pool.fetchval(sql, kind, status, age))

    assert await open_("deposit", "expired", "1 hour")  # succeeded_after_expiry, just now
    assert not await open_("deposit", "expired", "2 days")  # its permanent record only
    assert not await open_("withdrawal", "paid", "2 days")
    assert await open_("withdrawal", "processing", "30 days")  # resolvable: open until resolved
    assert await open_("withdrawal", "held", "30 days")


async def test_an_old_final_flagged_payment_leaves_the_gauge_and_stays_listed(
    pool: asyncpg.Pool, operator: Operator, probe: Probe
) -> None:
    payments = Payments(pool, Queries.load(), [ScriptedPsp("psp-a")], webhook_base="https://w")
    player = await operator.player(5_000)
    paid = await payments.create_withdrawal(
        PaymentRequest(player, 100, "EUR", "card"), K + secrets.token_hex(4)
    )
    series = 'wallet_payments_attention{attention="failed_after_paid",kind="withdrawal"}'
    before = value(await probe.count(), series)
    await pool.execute("SELECT payment_transition($1, 'paid', 'operator')", paid["id"])
    flag = "UPDATE payments SET flagged = 'failed_after_paid' WHERE id = $1"
    await pool.execute(flag, paid["id"])
    assert value(await probe.count(), series) == before + 1
    await pool.execute(
        "UPDATE payments SET updated_at = now() - interval '2 days' WHERE id = $1", paid["id"]
    )
    assert value(await probe.count(), series) == before
    listed = await payments.needing_attention("withdrawal", 500, None)
    assert paid["id"] in [p["id"] for p in listed["data"]]


def test_every_breaker_state_has_a_gauge_value_and_every_psp_name_is_documented() -> None:
    assert set(BREAKER_VALUES) == set(BREAKER_STATES)
    metrics = Metrics()
    for word in (*PSP_OPERATIONS, *PSP_OUTCOMES):
        assert word in metrics.psp_calls._documentation


# --- dependencies ------------------------------------------------------------------------------


def up(text: str, dependency: str) -> float | None:
    series = f'wallet_dependency_up{{dependency="{dependency}"}}'
    return value(text, series) if series + " " in text else None


async def test_dependencies_are_up_when_they_answer(probe: Probe) -> None:
    assert await gauges.check_dependencies(probe.sources)
    text = text_of(probe.metrics)
    assert up(text, "postgres") == 1 and up(text, "redis") == 1


async def test_a_dependency_not_answering_is_down(probe: Probe, settings: Settings) -> None:
    closed = f"127.0.0.1:{free_port()}"
    assert settings.database_url is not None
    dead_pool = await asyncpg.create_pool(
        settings.database_url.replace(settings.database_url.split("@")[1].split("/")[0], closed),
        min_size=0,
    )
    dead_redis = Redis.from_url(f"redis://{closed}/0", socket_timeout=1, socket_connect_timeout=1)
    dead_mux = RedisMux(f"redis://{closed}/0", timeout=1.0)
    try:
        metrics = Metrics()
        sources = gauges.Sources(dead_pool, Queries.load(), dead_redis, dead_mux, metrics, 900)
        await gauges.refresh(sources)  # no count either: Postgres is down
        text = text_of(metrics)
        assert up(text, "postgres") == 0 and up(text, "redis") == 0
        assert PENDING not in text
        # Redis alone down.
        half = gauges.Sources(probe.sources.pool, Queries.load(), dead_redis, dead_mux, metrics, 0)
        await gauges.refresh(half)
        text = text_of(metrics)
        assert up(text, "postgres") == 1 and up(text, "redis") == 0
        assert PENDING in text
    finally:
        await dead_mux.aclose()
        await dead_redis.aclose()
        await dead_pool.close()


# --- the ledger check --------------------------------------------------------------------------


async def test_the_ledger_check_runs_once_per_period_over_all_processes(
    pool: asyncpg.Pool, probe: Probe
) -> None:
    q = Queries.load()
    await pool.execute("DELETE FROM ledger_check_last")
    first, second = Metrics(), Metrics()
    async with pool.acquire() as a, pool.acquire() as b:
        timeout_before = await a.fetchval("SHOW statement_timeout")
        assert await gauges.check_ledger_if_due(a, q, first, 3600)  # none yet: due
        # Its longer statement timeout was the check's transaction's only.
        assert await a.fetchval("SHOW statement_timeout") == timeout_before
        assert not await gauges.check_ledger_if_due(b, q, second, 3600)  # just run: not due
        expected = gauges.problems_of(await ledger.check(a, q))
        # Another process holding the lock (running it now): skipped, whatever the period.
        async with a.transaction():
            assert await a.fetchval(*q.ledger_check_lock())
            assert not await gauges.check_ledger_if_due(b, q, second, 0)
    text = text_of(first)
    assert value(text, "wallet_ledger_check_problems") == expected
    assert value(text, "wallet_ledger_check_timestamp_seconds") > 1.7e9
    # Every process shows the last result, read at its next count.
    assert "wallet_ledger_check_timestamp_seconds 0.0" in text_of(second)
    text = await probe.count()
    assert value(text, "wallet_ledger_check_timestamp_seconds") == value(
        text_of(first), "wallet_ledger_check_timestamp_seconds"
    )


# The ledger check's own lock (a bigint key: its halves in classid and objid): other tests and the
# session's app take advisory locks of their own meanwhile.
ADVISORY = """
SELECT count(*) FROM pg_locks
 WHERE locktype = 'advisory' AND objsubid = 1
   AND ((classid::bigint << 32) | objid::bigint) = hashtextextended('wallet-ledger-check', 0)
"""


async def test_the_check_lock_is_its_transaction_and_skips_a_second_process(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    q = Queries.load()
    await pool.execute("DELETE FROM ledger_check_last")
    started, finish = asyncio.Event(), asyncio.Event()
    real = ledger.check

    async def slow(conn: asyncpg.Connection, queries: Queries) -> dict[str, Any]:
        started.set()
        await finish.wait()
        return await real(conn, queries)

    monkeypatch.setattr(gauges.ledger, "check", slow)
    async with pool.acquire() as a, pool.acquire() as b:
        first = asyncio.ensure_future(gauges.check_ledger_if_due(a, q, Metrics(), 0))
        await asyncio.wait_for(started.wait(), 10)
        assert await pool.fetchval(ADVISORY) == 1
        assert not await gauges.check_ledger_if_due(b, q, Metrics(), 0)  # running elsewhere
        finish.set()
        assert await first
        # Gone with the transaction: no unlock needed, none left on the connection either.
        assert await pool.fetchval(ADVISORY) == 0
        assert await gauges.check_ledger_if_due(b, q, Metrics(), 0)
        # Transaction-scoped: taken outside one, it is held by no server connection after its
        # statement (a session lock would stay with whichever connection PgBouncer lent).
        assert await a.fetchval(*q.ledger_check_lock())
        assert await pool.fetchval(ADVISORY) == 0


async def test_the_gauges_keep_refreshing_while_a_slow_check_runs(
    probe: Probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    await probe.sources.pool.execute("DELETE FROM ledger_check_last")
    started, finish = asyncio.Event(), asyncio.Event()

    async def slow(conn: asyncpg.Connection, queries: Queries) -> dict[str, Any]:
        started.set()
        await finish.wait()
        return {"ok": True}

    monkeypatch.setattr(gauges.ledger, "check", slow)
    ticks: list[int] = []
    probe.metrics.watch_mux(lambda: ticks.append(1) or 0)  # type: ignore[func-returns-value]
    sources = dataclasses.replace(probe.sources, ledger_check_seconds=3600)
    checker = asyncio.ensure_future(gauges.check_ledger_forever(sources))
    refresher = asyncio.ensure_future(
        gauges.refresh_forever(sources, live_seconds=0.01, count_seconds=0.01)
    )
    try:
        await asyncio.wait_for(started.wait(), 10)
        probe.metrics.dependency_checked("postgres", False)
        seen = len(ticks)
        for _ in range(200):
            await asyncio.sleep(0.01)
            if len(ticks) >= seen + 3 and up(text_of(probe.metrics), "postgres") == 1:
                break
        # Live gauges and dependency probes went on while the check was still running.
        assert len(ticks) >= seen + 3 and started.is_set() is not False and not finish.is_set()
        assert up(text_of(probe.metrics), "postgres") == 1
    finally:
        finish.set()
        for task in (checker, refresher):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_a_failing_live_gauge_does_not_end_the_refresher(probe: Probe) -> None:
    probe.metrics.watch_breakers(lambda: {"psp-x": "ajar"})  # type: ignore[dict-item]
    ticks: list[int] = []
    probe.metrics.watch_mux(lambda: ticks.append(1) or 0)  # type: ignore[func-returns-value]
    task = asyncio.ensure_future(
        gauges.refresh_forever(probe.sources, live_seconds=0.01, count_seconds=0.01)
    )
    try:
        for _ in range(100):
            await asyncio.sleep(0.01)
            if up(text_of_safely(probe.metrics), "postgres") == 1:
                break
        await asyncio.sleep(0.05)
        assert not task.done()
        # The counted gauges still came, though every live round raised (KeyError).
        assert up(text_of_safely(probe.metrics), "postgres") == 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def text_of_safely(metrics: Metrics) -> str:
    """The exposition without the live round (render runs it, and it raises here)."""
    return generate_latest(metrics.registry).decode()


async def test_a_sound_or_broken_ledger_is_counted_in_offending_rows() -> None:
    assert gauges.problems_of({"ok": True}) == 0
    assert gauges.problems_of({"ok": False, "problems": {"a": [{}, {}], "b": [{}]}}) == 3


async def test_the_api_check_sets_the_gauges(http: httpx.AsyncClient, operator: Operator) -> None:
    answer = await operator.call("GET", "/v1/ledger/check", expect=200)
    text = (await http.get("/metrics")).text
    assert value(text, "wallet_ledger_check_problems") == gauges.problems_of(answer)
    assert value(text, "wallet_ledger_check_timestamp_seconds") > 1.7e9


def test_the_period_is_a_setting() -> None:
    assert Settings.from_env({}).ledger_check_seconds == 900
    assert Settings.from_env({"WALLET_LEDGER_CHECK_SECONDS": "0"}).ledger_check_seconds == 0
    with pytest.raises(Exception, match="WALLET_LEDGER_CHECK_SECONDS"):
        Settings.from_env({"WALLET_LEDGER_CHECK_SECONDS": "-1"})


# --- per-process quantities --------------------------------------------------------------------


async def test_the_mux_queue_counts_commands_awaiting_a_reply() -> None:
    """A 'Redis' that accepts and never answers: the commands sent stay queued."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(1024):
                pass
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    mux = RedisMux(f"redis://127.0.0.1:{port}/0", timeout=30.0)
    metrics = Metrics()
    metrics.watch_mux(mux.queued)
    try:
        assert value(text_of(metrics), "wallet_redis_mux_queued") == 0
        waiting = [asyncio.ensure_future(mux.execute(("GET", "a"), ("GET", "b"))) for _ in range(3)]
        for _ in range(50):
            await asyncio.sleep(0.01)
            if mux.queued() == 6:
                break
        assert value(text_of(metrics), "wallet_redis_mux_queued") == 6
        for task in waiting:
            task.cancel()
    finally:
        await mux.aclose()
        await asyncio.gather(*waiting, return_exceptions=True)
        server.close()
        await server.wait_closed()
    assert mux.queued() == 0


class FakeCalls:
    buffered = 0
    dropped = 0


def test_call_history_drops_are_a_counter_that_follows_the_log() -> None:
    metrics = Metrics()
    calls = FakeCalls()
    metrics.watch_call_log(calls)  # type: ignore[arg-type]
    calls.buffered, calls.dropped = 7, 3
    text = text_of(metrics)
    assert value(text, "wallet_call_log_buffered") == 7
    assert value(text, "wallet_call_log_dropped_total") == 3
    calls.dropped = 5
    assert value(text_of(metrics), "wallet_call_log_dropped_total") == 5
    assert value(text_of(metrics), "wallet_call_log_dropped_total") == 5  # not counted twice
    assert "_created" not in text_of(metrics)


async def test_the_refresher_writes_the_live_gauges_and_survives_a_failed_round(
    probe: Probe,
) -> None:
    ticks = []
    probe.metrics.watch_mux(lambda: ticks.append(1) or 0)  # type: ignore[func-returns-value]
    broken = gauges.Sources(
        probe.sources.pool, db.Queries({}), probe.sources.redis, probe.sources.mux, probe.metrics, 0
    )
    task = asyncio.ensure_future(gauges.refresh_forever(broken, live_seconds=0.01))
    try:
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(ticks) >= 3:
                break
        assert len(ticks) >= 3 and not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # The round that failed (no queries loaded) still probed the dependencies first.
    assert up(text_of(probe.metrics), "postgres") == 1


async def test_the_command_line_check_is_kept_for_the_gauges(
    pool: asyncpg.Pool, settings: Settings, probe: Probe
) -> None:
    assert settings.database_url is not None and settings.redis_url is not None
    await pool.execute("DELETE FROM ledger_check_last")
    done = wallet_cli(settings.database_url, settings.redis_url, "ledger", "check")
    assert done.returncode == 0, done.stderr
    answer = orjson.loads(done.stdout)
    row = await pool.fetchrow("SELECT problems, finished_at FROM ledger_check_last")
    assert row is not None and row["problems"] == gauges.problems_of(answer)
    text = await probe.count()
    assert value(text, "wallet_ledger_check_timestamp_seconds") == row["finished_at"].timestamp()


# The names dashboards and alert rules (docker/) are written against: renaming one breaks them.
ALERTED = {
    "wallet_outbox_events": "gauge",
    "wallet_psp_calls_total": "counter",
    "wallet_psp_call_seconds": "histogram",
    "wallet_psp_breaker_state": "gauge",
    "wallet_payments_attention": "gauge",
    "wallet_rounds_stale": "gauge",
    "wallet_call_log_buffered": "gauge",
    "wallet_call_log_dropped_total": "counter",
    "wallet_redis_mux_queued": "gauge",
    "wallet_dependency_up": "gauge",
    "wallet_ledger_check_problems": "gauge",
    "wallet_ledger_check_timestamp_seconds": "gauge",
}


async def test_the_app_exposes_every_alerted_metric_by_its_fixed_name(
    http: httpx.AsyncClient,
) -> None:
    text = (await http.get("/metrics")).text
    for name, kind in ALERTED.items():
        assert f"# TYPE {name} {kind}" in text, name
    assert "_created" not in text
