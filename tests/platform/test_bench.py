"""The benchmark itself, run briefly against the test session's servers: it must seed, serve with
several workers, drive bets and results, check the ledger and report, as `make bench` does.

Only that it works and what it reports is asserted here, never a speed: speed is read from
`make bench` on a quiet machine (docs/performance.md), not from a timed test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import asyncpg
import orjson
import pytest

from app import db
from tests.fixtures.servers import Services

pytestmark = pytest.mark.slow


def run_bench(services: Services, *args: str) -> tuple[dict[str, object], str]:
    """The run's one JSON line (its stdout), and its stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    env.update(
        WALLET_DATABASE_URL=db.with_database(services.database_url, "postgres"),
        WALLET_REDIS_URL=services.redis_url,
    )
    done = subprocess.run(
        [sys.executable, "-m", "loadtests.bench", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = done.stdout.strip().splitlines()  # progress goes to stderr, never here
    result: dict[str, object] = orjson.loads(line)
    return result, done.stderr


async def test_bench_reports_a_clean_run_with_history_and_pgbench(services: Services) -> None:
    result, stderr = run_bench(
        services,
        "--players=300",
        "--history-rows=3000",
        "--concurrency=8",
        "--warmup=1",
        "--duration=2",
        "--workers=2",
        "--pgbench-seconds=1",
        "--pgbench-scale=1",
        "--memory-every=1",
        "--progress",
    )
    assert re.search(r"^\[bench\] driving: measured \d+ events, \d+/s \(", stderr, re.M), stderr
    assert result["ledger_check"] == "ok"
    assert result["errors"] == {}
    events = result["events"]
    assert isinstance(events, int) and events > 0
    assert result["codes"] == {"R0": events}
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]  # type: ignore[operator]
    assert set(result["cpu_ms_per_event"]) == {"generator", "workers", "postgres"}  # type: ignore[arg-type]
    tps = result["pgbench_tps"]
    assert isinstance(tps, float) and tps > 0
    assert result["ratio_to_pgbench"] == round(result["events_per_s"] / tps, 3)  # type: ignore[operator]
    rss = result["worker_rss_mib"]
    assert isinstance(rss, dict) and all(len(sizes) == 2 for sizes in rss.values())

    # What was seeded is really there: the players, and the history as balanced postings.
    conn = await asyncpg.connect(db.with_database(services.database_url, "wallet_bench"))
    try:
        players = await conn.fetchval("SELECT count(*) FROM players")
        history = await conn.fetchval(
            "SELECT count(*) FROM ledger_transactions WHERE external_id LIKE 'bench-bet-%'"
        )
    finally:
        await conn.close()
    assert players == 300
    assert history == 3000 // 2  # half the postings are bets, half their results
