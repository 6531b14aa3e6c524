"""The session's final ledger check (tests/fixtures/ledger.py) really fails a run.

A pytest run of its own, in a subprocess on the session's servers, uses the same ``services``
fixture. Its one test makes a database of its own; in the planted run it also breaks that
database's ledger: a player's balance that no entry explains, which no API can write. The
planted run must fail, at teardown, naming the database and the finding; the same run without the
plant must pass.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.fixtures import ledger
from tests.fixtures.servers import Services

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

CONFTEST = """
import tests.support.keys  # noqa: F401

pytest_plugins = ["tests.fixtures.servers"]
"""

TEST = """
import asyncio
import os

from app import db


async def make_database(url: str) -> None:
    dsn = await db.ensure_database(url, os.environ["PLANTED_DATABASE"])
    conn = await db.connect(dsn)
    try:
        await db.migrate(conn)
        await conn.execute(*db.Queries.load().insert_player(player_id="pl-planted", currency="EUR"))
        if os.environ.get("PLANT") == "1":
            await conn.execute(
                "UPDATE accounts SET balance = 7 WHERE kind = 'player' AND owner = 'pl-planted'"
            )
    finally:
        await conn.close()


def test_makes_a_database(services):
    asyncio.run(make_database(services.database_url))
"""


@pytest.fixture
async def inner_run(services: Services, tmp_path: Path) -> AsyncIterator[Path]:
    """A folder with the inner run's files; every database the inner runs made is dropped
    after, so that this session's own final check does not see the planted one."""
    folder = tmp_path / "suite"
    folder.mkdir()
    (folder / "conftest.py").write_text(CONFTEST)
    (folder / "test_planted.py").write_text(TEST)
    (folder / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = session\n")
    before = await ledger.databases(services.database_url)
    yield folder
    conn = await asyncpg.connect(services.database_url)
    try:
        for name in await ledger.databases(services.database_url) - before:
            await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def run(folder: Path, services: Services, *, plant: bool) -> subprocess.CompletedProcess[str]:
    basetemp = str(folder.parent / f"basetemp-{int(plant)}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    env.update(
        WALLET_DATABASE_URL=services.database_url,
        WALLET_REDIS_URL=services.redis_url,
        PYTHONPATH=str(ROOT),
        PLANTED_DATABASE=f"wallet_planted_{int(plant)}_{os.getpid()}",
        PLANT="1" if plant else "0",
    )
    return subprocess.run(
        # A basetemp of its own: a default one would make /tmp/pytest-of-USER private again
        # (see tests.fixtures.servers.outside_basetemp).
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--basetemp", basetemp],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_an_unbalanced_ledger_fails_the_run_at_its_end(
    inner_run: Path, services: Services
) -> None:
    clean = run(inner_run, services, plant=False)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "1 passed" in clean.stdout and "error" not in clean.stdout.lower(), clean.stdout

    planted = run(inner_run, services, plant=True)
    assert planted.returncode == 1, planted.stdout + planted.stderr
    out = planted.stdout
    assert "1 passed, 1 error" in out, out
    assert "ERROR at teardown of test_makes_a_database" in out, out
    assert "the ledger does not balance after the session" in out, out
    assert f"wallet_planted_1_{os.getpid()}" in out and "player_balance_mismatches" in out, out
    assert f"wallet_planted_0_{os.getpid()}" not in out, out
