"""Group commit: the postings of concurrent requests share one round trip and one commit.

Each request hands its event to :meth:`GroupCommit.post` and waits. Up to ``max_inflight``
batches are in Postgres at once; whatever arrives meanwhile waits for the next batch, which takes
up to ``max_batch`` events. Nothing is held back on purpose: a lone event goes at once as a batch
of one, and batches grow only when the database is the bottleneck, which is when sharing a commit
pays. A sender keeps one pool connection for as long as it has batches to send, instead of taking
one from the pool and giving it back per batch.

A batch is one call of ``seamless_batch`` (sql/007): one transaction, each event run by its own
function in order, sorted by player id so that two batches lock player rows in the same order.
When the batch raises for what its events hold (a unique violation because another player used
the same transaction id at the same moment, a row held elsewhere for longer than the batch's lock
timeout, a rule's own error), nothing of it committed: each event is then posted again alone, so
that one event's failure never becomes another's. When the server or the connection fails, every
event of the batch gets the error; none of them committed, or all did and a resend is answered
as a duplicate.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NamedTuple

import asyncpg

log = logging.getLogger(__name__)

# SQLSTATE classes that come from the events a batch holds rather than from the server or the
# connection: data exceptions, integrity violations, transaction rollbacks (deadlock,
# serialization), a row lock not had in time (55P03), and errors raised by PL/pgSQL. Posting the
# events one by one sorts them out.
_EVENT_ERROR_CLASSES = frozenset({"22", "23", "40", "55", "P0"})

# How long a batch waits for any row lock before its events are posted one by one instead, each
# on a connection of its own and without a timeout. Batches hold player rows for milliseconds; a
# row held longer belongs to something else (an operator's transaction, a stuck client), and
# only its own player should wait for it, not the batch nor the batches behind it. This applies
# to a batch of one event as well: it is the sender's time that must not be held.
BATCH_LOCK_TIMEOUT_MS = 100


class Posting(NamedTuple):
    """One event's arguments to ``seamless_batch``; a field the event does not have is None."""

    event: str
    provider: str
    player_id: str
    transaction_id: str | None
    ref_transaction_id: str | None
    round_id: str | None
    game_id: str | None
    amount: int | None
    currency: str | None
    token_hash: bytes | None
    round_closed: bool | None
    request_id: str | None


BatchObserver = Callable[[int], None]
"""Told the size of every batch sent."""


def _caused_by_events(exc: BaseException) -> bool:
    sqlstate = getattr(exc, "sqlstate", None)
    return isinstance(exc, asyncpg.PostgresError) and str(sqlstate)[:2] in _EVENT_ERROR_CLASSES


class GroupCommit:
    """Posts :class:`Posting` rows in batches; see the module's docstring."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        query: str,
        *,
        max_batch: int = 32,
        max_inflight: int = 1,
        acquire_timeout: float = 2.0,
        observe: BatchObserver | None = None,
    ) -> None:
        if max_batch < 1 or max_inflight < 1:
            raise ValueError("max_batch and max_inflight must be at least 1")
        self.pool = pool
        self.query = query
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self.acquire_timeout = acquire_timeout
        self.observe = observe
        self._waiting: deque[tuple[Posting, asyncio.Future[asyncpg.Record]]] = deque()
        self._senders = 0  # sender tasks alive
        self._starting = False  # a sender was started and has not taken its first batch yet
        self._tasks: set[asyncio.Task[None]] = set()

    async def post(self, posting: Posting) -> asyncpg.Record:
        """The event's ``wallet_outcome`` row once its batch committed.

        Raises what the database raised: the caller answers a retryable R1.
        """
        future: asyncio.Future[asyncpg.Record] = asyncio.get_running_loop().create_future()
        self._waiting.append((posting, future))
        if not self._starting and self._senders < self.max_inflight:
            # The new sender runs on the loop's next turn, so it takes every event that the
            # requests being served on this turn add meanwhile.
            self._starting = True
            self._senders += 1
            self._spawn(self._send(), "group-commit")
        return await future

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self) -> None:
        """Send batches while events are waiting, on one pool connection held meanwhile."""
        conn: asyncpg.Connection | None = None
        try:
            while self._waiting:
                self._starting = False
                batch = [
                    self._waiting.popleft() for _ in range(min(self.max_batch, len(self._waiting)))
                ]
                # Cancelled requests (a client gone, a shutdown) are not posted.
                batch = [item for item in batch if not item[1].done()]
                if not batch:
                    continue
                batch.sort(key=lambda item: item[0].player_id)  # stable: arrival order kept
                if self.observe is not None:
                    self.observe(len(batch))
                try:
                    if conn is None:
                        conn = await self.pool.acquire(timeout=self.acquire_timeout)
                    postings = [posting for posting, _ in batch]
                    rows = await _fetch(conn, self.query, postings, BATCH_LOCK_TIMEOUT_MS)
                except Exception as exc:  # noqa: BLE001 - handed to the batch's requests
                    if conn is not None:
                        # Whatever failed, the next batch starts on a connection known to work.
                        await self._release(conn)
                        conn = None
                    await self._failed(batch, exc)
                    continue
                for (_, future), row in zip(batch, rows, strict=True):
                    if not future.done():
                        future.set_result(row)
        finally:
            self._starting = False
            self._senders -= 1
            if conn is not None:
                await self._release(conn)

    async def _release(self, conn: asyncpg.Connection) -> None:
        try:
            await self.pool.release(conn)
        except Exception as exc:  # noqa: BLE001 - the pool drops a broken connection by itself
            log.warning("connection not given back to the pool: %r", exc)

    async def _failed(
        self, batch: list[tuple[Posting, asyncio.Future[asyncpg.Record]]], exc: Exception
    ) -> None:
        if not _caused_by_events(exc):
            for _, future in batch:
                _fail(future, exc)
            return
        log.info("batch of %d refused (%s): posting its events one by one", len(batch), exc)
        # Concurrently and off this sender, without the lock timeout: an event stuck on a row
        # lock then holds up no one but itself, and the next batch goes meanwhile.
        self._spawn(self._post_each(batch, exc), "group-commit-each")

    async def _post_each(
        self, batch: list[tuple[Posting, asyncio.Future[asyncpg.Record]]], exc: Exception
    ) -> None:
        # A unique violation of a batch of one already was the first try of its event.
        retry_unique = len(batch) > 1 or not isinstance(exc, asyncpg.UniqueViolationError)
        await asyncio.gather(*(self._post_alone(p, f, retry_unique=retry_unique) for p, f in batch))

    async def _post_alone(
        self,
        posting: Posting,
        future: asyncio.Future[asyncpg.Record],
        *,
        retry_unique: bool = True,
    ) -> None:
        if future.done():
            return
        try:
            try:
                row = await self._fetch_alone(posting)
            except asyncpg.UniqueViolationError:
                if not retry_unique:
                    raise
                # Another player posted the same provider transaction_id at the same moment; run
                # again to answer duplicate or idempotency_conflict from the committed row.
                row = await self._fetch_alone(posting)
        except Exception as exc:  # noqa: BLE001 - handed to the waiting request
            _fail(future, exc)
            return
        if not future.done():
            future.set_result(row)

    async def _fetch_alone(self, posting: Posting) -> asyncpg.Record:
        rows: list[asyncpg.Record] | None = None
        try:
            async with self.pool.acquire(timeout=self.acquire_timeout) as conn:
                rows = await _fetch(conn, self.query, [posting], lock_timeout_ms=0)
        except Exception as exc:
            if rows is None:
                raise
            # The row came back (the posting committed): only giving the connection back to
            # the pool failed, which must not turn a committed posting into an error.
            log.warning("connection lost after a posting was answered: %r", exc)
        assert rows is not None
        return rows[0]

    async def close(self) -> None:
        """Wait for the batches in flight (their requests are still being answered)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def _fetch(
    conn: asyncpg.Connection, query: str, postings: Sequence[Posting], lock_timeout_ms: int
) -> list[asyncpg.Record]:
    """One call of ``seamless_batch``: a row per posting, in order."""
    columns = [list(column) for column in zip(*postings, strict=True)]
    rows: list[asyncpg.Record] = await conn.fetch(query, *columns, lock_timeout_ms)
    if len(rows) != len(postings):
        raise RuntimeError(f"seamless_batch answered {len(rows)} rows for {len(postings)}")
    return rows


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
