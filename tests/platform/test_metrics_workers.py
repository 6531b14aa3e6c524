"""``wallet serve --workers 2``: every scrape, whichever worker answers it, reports the totals of
both workers (prometheus-client's multiprocess mode, app/metrics_files.py), and the directory the
workers share their metrics through is gone once the server stops."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import time
from pathlib import Path

import httpx
import pytest

from app.client import ProviderClient
from app.config import Settings
from app.metrics_files import PREFIX
from tests.fixtures.app import Operator
from tests.platform.test_observability import BET_OK, value
from tests.support.processes import start_wallet, stop_wallet, wait_ready

pytestmark = pytest.mark.slow

WORKERS = 2
BATCH = 40  # bets sent at once, on as many connections: both workers take some
SCRAPES = 12


def per_worker(folder: Path, series: str) -> dict[int, float]:
    """``series`` as each worker's own files hold it: a copy of one pid's files read alone."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    found: dict[int, float] = {}
    pids = {
        int(m.group(1)) for f in folder.glob("*_*.db") if (m := re.search(r"_(\d+)\.db$", f.name))
    }
    for pid in pids:
        alone = folder.parent / f"alone-{pid}"
        alone.mkdir()
        try:
            for f in folder.glob(f"*_{pid}.db"):
                shutil.copy(f, alone / f.name)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=str(alone))  # type: ignore[no-untyped-call]
            found[pid] = value(generate_latest(registry).decode(), series)
        finally:
            shutil.rmtree(alone)
    return found


def wait_workers(folder: Path, n: int, besides: int | None = None, timeout: float = 60) -> None:
    """Until ``n`` workers (not ``besides``) have started: each writes its pool gauge as its
    lifespan starts."""
    deadline = time.monotonic() + timeout
    while True:
        sizes = per_worker(folder, "wallet_db_pool_max")
        if len([p for p, size in sizes.items() if p != besides and size > 0]) == n:
            return
        assert time.monotonic() < deadline, f"{n} workers not started in {timeout} s: {sizes}"
        time.sleep(0.2)


async def test_two_workers_report_the_same_totals_on_every_scrape(
    settings: Settings, operator: Operator, tmp_path: Path
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    # The server's temporary directory is the test's, so its metrics directory can be found.
    server = start_wallet(
        settings, tmp_path / "serve.log", workers=WORKERS, env={"TMPDIR": str(tmp)}
    )
    try:
        wait_ready(server)
        (folder,) = tmp.glob(PREFIX + "*")
        # /readyz was answered by one worker; the other may still be starting.
        wait_workers(folder, WORKERS)
        provider = await operator.provider()
        player = await operator.player(1_000_000)
        token = await operator.session(player, provider["code"])
        sent = 0
        # No connection kept: each bet is a new one, which the kernel hands to either worker.
        fresh = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.base, timeout=30, limits=fresh) as http:
            client = ProviderClient(
                server.base, provider["code"], provider["keys"][0]["key"], http=http
            )

            async def bet() -> None:
                answer = await client.send(
                    "bet",
                    player_id=player,
                    session_token=token,
                    round_id="r-" + secrets.token_hex(4),
                    game_id="slot-1",
                    amount=1,
                    currency="EUR",
                    transaction_id="t-" + secrets.token_hex(6),
                )
                assert answer["code"] == "R0", answer

            # Until both workers have answered some bets (so that a scrape of either one alone
            # would be short of the total), at most a few rounds.
            for _ in range(10):
                await asyncio.gather(*(bet() for _ in range(BATCH)))
                sent += BATCH
                counted = per_worker(folder, BET_OK)
                if len(counted) == WORKERS and all(counted.values()):
                    break
            assert len(counted) == WORKERS and all(counted.values()), counted
            assert sum(counted.values()) == sent

        texts = []
        for _ in range(SCRAPES):
            # A fresh connection each time: the kernel hands it to either worker.
            response = httpx.get(f"{server.base}/metrics", timeout=10)
            assert response.status_code == 200
            texts.append(response.text)
        for text in texts:
            assert value(text, BET_OK) == sent
            assert "_created" not in text
            # Per-process quantities are summed over the workers...
            assert value(text, "wallet_db_pool_max") == WORKERS * Settings().db_pool_max
            # ...what each worker counts alike is not.
            assert re.search(r'^wallet_dependency_up\{dependency="postgres"\} 1\.0$', text, re.M)

        # A worker killed (no shutdown of its own) is replaced by the supervisor; the new one
        # takes the dead one's live gauges out of the sums, and its counts stay counted.
        victim = min(counted)
        os.kill(victim, signal.SIGKILL)
        wait_workers(folder, WORKERS, besides=victim)
        for _ in range(SCRAPES):
            text = httpx.get(f"{server.base}/metrics", timeout=10).text
            assert value(text, BET_OK) == sent
            assert value(text, "wallet_db_pool_max") == WORKERS * Settings().db_pool_max
    finally:
        stop_wallet(server)
    assert not list(tmp.glob(PREFIX + "*")), "the metrics directory outlived the server"
