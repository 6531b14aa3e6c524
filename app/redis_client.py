"""The one factory for Redis clients: explicit timeouts, one quick retry, no surprises."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE


class HiredisPackingConnection(Connection):
    """redis-py's asyncio connection packs every command in Python, while its synchronous client
    already packs with hiredis when it is installed (it is: ``redis[hiredis]``). Same bytes on
    the wire, packed in C (measured: about a tenth less client CPU per admission and finish)."""

    # Untyped in some redis-py releases (8.2), typed in others: one ignore serves both.
    _serializer = HiredisRespSerializer()  # type: ignore[no-untyped-call,unused-ignore]

    def pack_command(self, *args: Any) -> list[bytes]:
        packed: list[bytes] = self._serializer.pack(*args)
        return packed


def create_redis(url: str, *, timeout_ms: int) -> Redis:
    """A client that fails within about two timeouts when Redis is away, instead of hanging.

    One retry absorbs a dropped idle connection; more would only delay the R1 that the seamless
    endpoint answers when Redis is really gone.
    """
    timeout = timeout_ms / 1000
    options: dict[str, Any] = {}
    if url.startswith("redis://") and HIREDIS_AVAILABLE:
        # Plain TCP only: rediss:// and unix:// keep the connection classes they need.
        options["connection_class"] = HiredisPackingConnection
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(ExponentialBackoff(cap=0.05, base=0.005), retries=1),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=30,
        max_connections=256,
        **options,
    )
