"""A lean Redis client for the seamless hot path: one connection per process, shared by every
request, with the commands of concurrent requests written together (auto-pipelining).

redis-py spends most of its time per command on things the hot path does not need: a pool
checkout per pipeline, retry and observability hooks, a reply object per command. Here a pipeline
is packed by hiredis, appended to one output buffer that is written once per turn of the event
loop, and answered from a FIFO of waiters as hiredis parses the replies. Redis answers commands of
one connection in order, so the n-th reply belongs to the n-th command written.

Failures are redis-py's exceptions, so callers handle both clients alike:

- the connection cannot be made, or is lost with commands in flight: ``ConnectionError`` for
  each waiting pipeline (whether Redis ran them is unknown, as with any client); the next call
  connects again;
- no reply within ``timeout``: ``TimeoutError``; the connection is then closed, as redis-py does,
  since its replies can no longer be matched to anything waiting;
- an error reply: ``ResponseError`` (``NoScriptError`` for ``NOSCRIPT``), raised for the first
  failing command of the pipeline once all its replies are in.

Only the commands of the hot path go through here; everything else keeps redis-py.
"""

from __future__ import annotations

import asyncio
import contextvars
import ssl
import time
from collections import deque
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Command = tuple[Any, ...]


class _Waiter:
    """One pipeline waiting for its replies."""

    __slots__ = ("future", "expected", "replies", "sent_at")

    def __init__(self, future: asyncio.Future[list[Any]], expected: int, sent_at: float) -> None:
        self.future = future
        self.expected = expected
        self.replies: list[Any] = []
        self.sent_at = sent_at


class _Protocol(asyncio.Protocol):
    """One connection: buffers outgoing pipelines, matches replies to waiters in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.waiters: deque[_Waiter] = deque()
        self.out: list[bytes] = []
        self.flush_scheduled = False
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, commands: tuple[Command, ...]) -> asyncio.Future[list[Any]]:
        if self.closed:
            raise RedisConnectionError("connection to Redis closed")
        # Packed before anything is queued: a command that does not pack must not leave the
        # others written with no waiter, or every later reply would go to the wrong request.
        packed = [hiredis.pack_command(command) for command in commands]
        future: asyncio.Future[list[Any]] = self.loop.create_future()
        self.waiters.append(_Waiter(future, len(commands), time.monotonic()))
        self.out.extend(packed)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)
        if self.timer is None:
            self.timer = self.loop.call_at(self.loop.time() + self.timeout, self._check_timeout)
        return future

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.out and self.transport is not None and not self.closed:
            data, self.out = b"".join(self.out), []
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiters = self.waiters
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self._abort(RedisConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if not waiters:
                self._abort(RedisConnectionError("Redis sent a reply nobody asked for"))
                return
            waiter = waiters[0]
            waiter.replies.append(reply)
            if len(waiter.replies) == waiter.expected:
                waiters.popleft()
                if not waiter.future.done():
                    waiter.future.set_result(waiter.replies)

    def _check_timeout(self) -> None:
        self.timer = None
        if not self.waiters or self.closed:
            return
        waited = time.monotonic() - self.waiters[0].sent_at
        if waited >= self.timeout:
            self._abort(RedisTimeoutError(f"no reply from Redis in {self.timeout:.3f} s"))
            return
        self.timer = self.loop.call_at(
            self.loop.time() + self.timeout - waited, self._check_timeout
        )

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f": {exc}" if exc else ""
        self._fail(RedisConnectionError(f"connection to Redis lost{reason}"))

    def _abort(self, error: Exception) -> None:
        self._fail(error)
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, error: Exception) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(error)


class RedisMux:
    """See the module's docstring. ``url`` is ``redis://``, ``rediss://`` or ``unix://``, with
    optional user, password and database, as redis-py reads them."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._target = _Target(url)
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None

    async def execute(self, *commands: Command) -> list[Any]:
        """Send ``commands`` as one pipeline; their replies, in order."""
        if not commands:
            return []
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        replies = await protocol.send(commands)
        for reply in replies:
            if isinstance(reply, ResponseError):
                message = str(reply)
                raise NoScriptError(message) if message.startswith("NOSCRIPT") else reply
        return replies

    async def _connect(self) -> _Protocol:
        """The live connection, made once however many requests ask for it at the same time.

        The connection is made by a task of its own, which every asking request waits for: one
        of them cancelled (a client gone) must not cancel the others' connection too."""
        connecting = self._connecting
        if connecting is None:
            connecting = asyncio.get_running_loop().create_task(
                self._open(), name="redis-mux-connect", context=contextvars.Context()
            )
            self._connecting = connecting
            connecting.add_done_callback(self._connected)
        return await asyncio.shield(connecting)

    def _connected(self, task: asyncio.Task[_Protocol]) -> None:
        self._connecting = None
        if task.cancelled():
            return
        if task.exception() is None:  # also marks a failure as seen, should no one be waiting
            self._protocol = task.result()

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        target = self._target
        try:
            async with asyncio.timeout(self.timeout):
                if target.path is not None:
                    _, protocol = await loop.create_unix_connection(
                        lambda: _Protocol(loop, self.timeout), target.path
                    )
                else:
                    _, protocol = await loop.create_connection(
                        lambda: _Protocol(loop, self.timeout),
                        target.host,
                        target.port,
                        ssl=ssl.create_default_context() if target.tls else None,
                    )
                handshake: list[Command] = []
                if target.password is not None:
                    handshake.append(
                        ("AUTH", target.username, target.password)
                        if target.username
                        else ("AUTH", target.password)
                    )
                if target.db:
                    handshake.append(("SELECT", target.db))
                if handshake:
                    for reply in await protocol.send(tuple(handshake)):
                        if isinstance(reply, ResponseError):
                            protocol._abort(RedisConnectionError(str(reply)))
                            raise RedisConnectionError(f"Redis refused the connection: {reply}")
        except TimeoutError:
            raise RedisTimeoutError(f"no connection to Redis in {self.timeout:.3f} s") from None
        except OSError as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc}") from None
        return protocol

    def queued(self) -> int:
        """Commands written (or about to be) and not answered yet: the metrics' queue gauge."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            return 0
        return sum(w.expected - len(w.replies) for w in protocol.waiters)

    async def aclose(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol._fail(RedisConnectionError("client closed"))
            protocol.transport.close()


class _Target:
    __slots__ = ("host", "port", "path", "tls", "username", "password", "db")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r}")
        query = parse_qs(parts.query)
        unsupported = set(query) - {"db"}
        if unsupported:
            # Refused rather than ignored: an ignored TLS or timeout option would connect
            # differently from what the URL says.
            raise ValueError(
                f"Redis URL options not supported by the hot path's client: {sorted(unsupported)}"
            )
        self.tls = parts.scheme == "rediss"
        self.path = unquote(parts.path) if parts.scheme == "unix" else None
        self.host = parts.hostname or "localhost"
        self.port = parts.port or 6379
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password is not None else None
        db = query.get("db", [""])[0]
        if parts.scheme != "unix" and parts.path.strip("/"):
            db = parts.path.strip("/")
        self.db = int(db) if db else 0
