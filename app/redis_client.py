"""The one factory for Redis clients: explicit timeouts, one quick retry, no surprises."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


def create_redis(url: str, *, timeout_ms: int) -> Redis:
    """A client that fails within about two timeouts when Redis is away, instead of hanging.

    One retry absorbs a dropped idle connection; more would only delay the R1 that the seamless
    endpoint answers when Redis is really gone.
    """
    timeout = timeout_ms / 1000
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(ExponentialBackoff(cap=0.05, base=0.005), retries=1),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=30,
        max_connections=256,
    )
