"""`wallet serve --demo` as `make run` starts it: a real process, real HTTP, no URLs given, so it
starts its own local Postgres and Redis in the data folder."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest

from app.client import ProviderClient
from app.dev.devstack import free_port
from tests.support.processes import demo_serving

pytestmark = pytest.mark.slow


async def test_serve_demo_on_embedded_servers(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    env.update(WALLET_DATA_DIR=str(tmp_path / "data"), WALLET_PORT=str(port))
    log = tmp_path / "serve.log"
    with demo_serving(env, log, port) as (proc, base, printed):
        key = re.search(r"provider key\s+(\S+)", printed)
        token = re.search(r"demo-alice\s+session_token (\S+)", printed)
        admin = re.search(r"admin key\s+(\S+)", printed)
        assert key and token and admin, printed
        client = ProviderClient(base, "demo", key.group(1))
        try:
            bet = await client.send(
                "bet",
                player_id="demo-alice",
                session_token=token.group(1),
                transaction_id="serve-1",
                round_id="r1",
                game_id="demo-slot",
                amount=250,
                currency="EUR",
            )
        finally:
            await client.aclose()
        assert bet["code"] == "R0" and bet["balance"] == 100_000 - 250
        check = httpx.get(
            f"{base}/v1/ledger/check", headers={"authorization": f"Bearer {admin.group(1)}"}
        )
        assert check.json() == {"ok": True}
    assert proc.returncode == 0, log.read_text()
    # The local servers it started stopped with it, leaving their data for the next run.
    assert (tmp_path / "data" / "pg" / "PG_VERSION").exists()
    assert not (tmp_path / "data" / "pg" / "postmaster.pid").exists()
