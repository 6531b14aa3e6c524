"""The wallet against a sandbox PSP running as its own process, over real HTTP: timeouts that only
a real socket can show, and `wallet reconcile`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest

from app.dev.devstack import free_port

pytestmark = pytest.mark.slow
API_KEY = "cli-sandbox-key"


@pytest.fixture
def sandbox_process() -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "WALLET_SANDBOX_API_KEY": API_KEY,
        "WALLET_SANDBOX_WEBHOOK_SECRET": "cli-secret",
        "WALLET_SANDBOX_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "sandbox-psp", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


def reconcile(settings: Any, base: str) -> tuple[int, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    env.update(
        WALLET_DATABASE_URL=settings.database_url,
        WALLET_REDIS_URL=settings.redis_url,
        WALLET_PSPS=orjson.dumps(
            [
                {
                    "name": "cli-sandbox",
                    "kind": "sandbox",
                    "base_url": base,
                    "api_key": API_KEY,
                    "webhook_secret": "cli-secret",
                    "currencies": ["EUR"],
                    "methods": ["card"],
                }
            ]
        ).decode(),
    )
    today = datetime.now(UTC).date().isoformat()
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "reconcile", "--psp", "cli-sandbox", "--date", today],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode in (0, 3), done.stderr
    return done.returncode, orjson.loads(done.stdout)


async def test_reconcile_command_reports_and_signals_discrepancies(
    settings: Any, sandbox_process: str
) -> None:
    code, report = await asyncio.to_thread(reconcile, settings, sandbox_process)
    assert code == 0 and report["ok"] is True and report["psp"] == "cli-sandbox"
    planted = httpx.post(
        f"{sandbox_process}/v1/sandbox/settlement-extra",
        json={
            "line": {
                "psp_payment_id": "psp_x",
                "reference": "dep_x",
                "kind": "deposit",
                "amount": 700,
                "currency": "EUR",
            }
        },
        headers={"authorization": f"Bearer {API_KEY}"},
    )
    assert planted.status_code in (200, 201), planted.text
    code, report = await asyncio.to_thread(reconcile, settings, sandbox_process)
    assert code == 3 and report["ok"] is False
    assert [d["type"] for d in report["discrepancies"]] == ["missing_in_wallet"]
    assert report["psp_totals"]["EUR"]["gross"] == 700


async def test_a_timed_out_route_is_asked_again_and_gives_its_first_answer(
    pool: Any, operator: Any, sandbox_process: str
) -> None:
    """Route a times out after the PSP created the payment. The wallet asks route a again under
    the same idempotency key (our payment id) and gets that payment back at once: one payment
    at the PSP, not two, and no failover for an answer that was only late."""
    from app.db import Queries
    from app.payments.psp import SandboxPsp
    from app.payments.service import PaymentRequest, Payments

    async with httpx.AsyncClient() as http:
        routes = [
            SandboxPsp(name, sandbox_process, API_KEY, b"cli-secret", http, timeout=0.5)
            for name in ("slow-a", "slow-b")
        ]
        payments = Payments(pool, Queries.load(), routes, webhook_base="http://127.0.0.1:1/psp")
        player = await operator.player()
        started = time.monotonic()
        created = await payments.create_deposit(
            PaymentRequest(player, 1_200, "EUR", "card", metadata={"scenario": "timeout"}),
            "timeout-" + os.urandom(4).hex(),
        )
        elapsed = time.monotonic() - started
    assert created["status"] == "awaiting_method" and created["redirect_url"], created
    assert 0.5 <= elapsed < 3  # one timeout, then an immediate answer
    row = await pool.fetchrow(
        "SELECT psp, psp_payment_id FROM payments WHERE id = $1", created["id"]
    )
    assert row["psp"] == "slow-a"
    at_psp = httpx.get(
        f"{sandbox_process}/v1/payments/{row['psp_payment_id']}",
        headers={"authorization": f"Bearer {API_KEY}"},
    ).json()
    assert at_psp["reference"] == created["id"]
