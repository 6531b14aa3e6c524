"""The hot path's multiplexed Redis client (app/redis_mux.py), against a real Redis."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.config import Settings
from app.dev.devstack import free_port
from app.redis_mux import RedisMux, _Target


def key() -> str:
    return "test:mux:" + secrets.token_hex(6)


@pytest.fixture
async def redis(settings: Settings) -> Redis:
    assert settings.redis_url is not None
    client = Redis.from_url(settings.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def mux(settings: Settings) -> RedisMux:
    assert settings.redis_url is not None
    client = RedisMux(settings.redis_url, timeout=2.0)
    yield client
    await client.aclose()


async def test_pipelines_of_concurrent_callers_are_written_together_and_answered_in_order(
    mux: RedisMux,
) -> None:
    k = key()
    await mux.execute(("SET", k, 0))  # connect first, so the writes below can be counted
    protocol = mux._protocol
    assert protocol is not None and protocol.transport is not None
    writes = 0
    write = protocol.transport.write

    def counting(data: bytes) -> None:
        nonlocal writes
        writes += 1
        write(data)

    protocol.transport.write = counting  # type: ignore[method-assign]
    replies = await asyncio.gather(
        *(mux.execute(("INCR", k), ("GET", k), ("ECHO", f"caller {i}")) for i in range(50))
    )
    assert writes == 1
    for i, (count, value, echo) in enumerate(replies):
        assert count == i + 1  # Redis ran the pipelines in the order they were made
        assert value == str(i + 1).encode()
        assert echo == f"caller {i}".encode()


async def test_error_replies_raise_after_the_whole_pipeline_ran(
    mux: RedisMux, redis: Redis
) -> None:
    k = key()
    with pytest.raises(ResponseError, match="wrong number of arguments"):
        await mux.execute(("SET", k, "before"), ("GET",), ("SET", k + ":after", "yes"))
    assert await redis.get(k) == b"before"
    assert await redis.get(k + ":after") == b"yes"
    with pytest.raises(NoScriptError):
        await mux.execute(("EVALSHA", "0" * 40, 1, k))
    # Still in step after the errors: the next reply is this command's.
    assert await mux.execute(("ECHO", "next")) == [b"next"]


async def test_nil_integers_and_status_replies(mux: RedisMux) -> None:
    k = key()
    assert await mux.execute(
        ("SET", k, "v", "NX", "PX", 10_000),
        ("SET", k, "w", "NX", "PX", 10_000),
        ("PTTL", k),
        ("GET", k + ":missing"),
    ) == [b"OK", None, pytest.approx(10_000, abs=1_000), None]
    assert await mux.execute() == []


async def test_a_slow_redis_times_out_and_the_client_recovers(
    settings: Settings, redis: Redis
) -> None:
    assert settings.redis_url is not None
    mux = RedisMux(settings.redis_url, timeout=0.2)
    try:
        assert await mux.execute(("PING",)) == [b"PONG"]
        await redis.execute_command("CLIENT", "PAUSE", 600, "ALL")
        with pytest.raises(RedisTimeoutError):
            await mux.execute(("PING",))
        await asyncio.sleep(0.6)
        assert await mux.execute(("PING",)) == [b"PONG"]  # a new connection
    finally:
        await redis.execute_command("CLIENT", "UNPAUSE")
        await mux.aclose()


async def test_a_killed_connection_fails_its_waiters_and_is_made_again(
    mux: RedisMux, redis: Redis
) -> None:
    [client_id] = await mux.execute(("CLIENT", "ID"))
    # A blocking command is in flight when the connection is killed.
    waiting = asyncio.create_task(mux.execute(("BLPOP", key(), 5)))
    await asyncio.sleep(0.1)
    assert await redis.execute_command("CLIENT", "KILL", "ID", client_id) == 1
    with pytest.raises(RedisConnectionError):
        await waiting
    assert await mux.execute(("PING",)) == [b"PONG"]


async def test_no_redis_is_a_connection_error() -> None:
    mux = RedisMux(f"redis://127.0.0.1:{free_port()}/0", timeout=1.0)
    for _ in range(2):  # and again: a failed connect leaves nothing behind
        with pytest.raises(RedisConnectionError):
            await mux.execute(("PING",))


async def test_concurrent_first_calls_share_one_connection(settings: Settings) -> None:
    assert settings.redis_url is not None
    mux = RedisMux(settings.redis_url, timeout=2.0)
    try:
        ids = await asyncio.gather(*(mux.execute(("CLIENT", "ID")) for _ in range(20)))
        assert len({reply[0] for reply in ids}) == 1
    finally:
        await mux.aclose()


async def test_the_database_number_of_the_url_is_selected(settings: Settings, redis: Redis) -> None:
    assert settings.redis_url is not None
    base = settings.redis_url.rsplit("/", 1)[0]
    mux = RedisMux(f"{base}/5", timeout=2.0)
    other = Redis.from_url(f"{base}/5")
    try:
        k = key()
        await mux.execute(("SET", k, "in five"))
        assert await other.get(k) == b"in five"
        assert await redis.get(k) is None
    finally:
        await mux.aclose()
        await other.aclose()


def test_urls_are_read_as_redis_py_reads_them() -> None:
    t = _Target("redis://user:p%40ss@cache.example:6380/2")
    assert (t.host, t.port, t.username, t.password, t.db, t.tls, t.path) == (
        "cache.example", 6380, "user", "p@ss", 2, False, None,
    )  # fmt: skip
    t = _Target("rediss://:secret@cache.example")
    assert (t.port, t.username, t.password, t.db, t.tls) == (6379, None, "secret", 0, True)
    t = _Target("unix:///run/redis.sock?db=3")
    assert (t.path, t.db) == ("/run/redis.sock", 3)
    with pytest.raises(ValueError, match="scheme"):
        _Target("http://cache.example")


async def test_a_command_that_cannot_be_packed_leaves_the_connection_in_step(
    mux: RedisMux,
) -> None:
    k = key()
    with pytest.raises(TypeError):
        await mux.execute(("SET", k, "written?"), ("SET", k, None))
    # Nothing of that pipeline went out, and the next reply is this command's own.
    assert await mux.execute(("GET", k), ("ECHO", "after")) == [None, b"after"]


async def test_a_cancelled_caller_does_not_cancel_the_connection_of_the_others(
    settings: Settings,
) -> None:
    assert settings.redis_url is not None
    mux = RedisMux(settings.redis_url, timeout=2.0)
    try:
        first = asyncio.create_task(mux.execute(("PING",)))
        others = [asyncio.create_task(mux.execute(("ECHO", str(i)))) for i in range(3)]
        await asyncio.sleep(0)  # all of them wait for the one connection being made
        first.cancel()
        assert await asyncio.gather(*others) == [[b"0"], [b"1"], [b"2"]]
        with pytest.raises(asyncio.CancelledError):
            await first
    finally:
        await mux.aclose()


def test_url_options_it_does_not_apply_are_refused() -> None:
    with pytest.raises(ValueError, match="ssl_cert_reqs"):
        RedisMux("rediss://cache.example:6380/0?ssl_cert_reqs=none", timeout=1.0)
