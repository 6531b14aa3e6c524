"""Group commit: the postings of concurrent requests share one round trip and one commit.

Each request hands its event to :meth:`GroupCommit.post` and waits. Up to ``max_inflight``
batches are in Postgres at once; whatever arrives meanwhile waits for the next batch, which takes
up to ``max_batch`` events. Nothing is held back on purpose: a lone event goes at once as a batch
of one, and batches grow only when the database is the bottleneck, which is when sharing a commit
pays.

A batch is one call of ``seamless_batch`` (sql/007): one transaction, each event run by its own
function in order, sorted by player id so that two batches lock player rows in the same order.
When the batch raises for what its events hold (a unique violation because another player used
the same transaction id at the same moment, a deadlock on transaction-id locks, a rule's own
error), nothing of it committed: each event is then posted again alone, so that one event's
failure never becomes another's. When the server or the connection fails, every event of the
batch gets the error; none of them committed, or all did and a resend is answered as a duplicate.
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

# How long a batch of several events waits for any row lock before it is posted event by event
# instead. Batches hold player rows for milliseconds; a row held longer belongs to something
# else (an operator's transaction, a stuck client), and only its own player should wait for it.
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
        max_inflight: int = 2,
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
        try:
            while self._waiting:
                self._starting = False
                batch = [
                    self._waiting.popleft() for _ in range(min(self.max_batch, len(self._waiting)))
                ]
                # Cancelled requests (a client gone, a shutdown) are not posted.
                batch = [item for item in batch if not item[1].done()]
                if batch:
                    await self._post_batch(batch)
        finally:
            self._starting = False
            self._senders -= 1

    async def _post_batch(
        self, batch: list[tuple[Posting, asyncio.Future[asyncpg.Record]]]
    ) -> None:
        batch.sort(key=lambda item: item[0].player_id)  # stable: arrival order within a player
        if self.observe is not None:
            self.observe(len(batch))
        try:
            rows = await self._fetch([posting for posting, _ in batch])
        except Exception as exc:  # noqa: BLE001 - handed to every waiting request
            if len(batch) > 1 and _caused_by_events(exc):
                log.info("batch of %d refused (%s): posting its events one by one", len(batch), exc)
                # Concurrently and off this sender: an event stuck on a row lock then holds up
                # no one but itself, and the next batch goes meanwhile.
                self._spawn(self._post_each(batch), "group-commit-each")
                return
            if isinstance(exc, asyncpg.UniqueViolationError):
                # A batch of one: this is the one retry that _post_alone would have made.
                await self._post_alone(*batch[0], retry_unique=False)
                return
            for _, future in batch:
                _fail(future, exc)
            return
        for (_, future), row in zip(batch, rows, strict=True):
            if not future.done():
                future.set_result(row)

    async def _post_each(self, batch: list[tuple[Posting, asyncio.Future[asyncpg.Record]]]) -> None:
        await asyncio.gather(*(self._post_alone(posting, future) for posting, future in batch))

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
                rows = await self._fetch([posting])
            except asyncpg.UniqueViolationError:
                if not retry_unique:
                    raise
                # Another player posted the same provider transaction_id at the same moment; run
                # again to answer duplicate or idempotency_conflict from the committed row.
                rows = await self._fetch([posting])
        except Exception as exc:  # noqa: BLE001 - handed to the waiting request
            _fail(future, exc)
            return
        if not future.done():
            future.set_result(rows[0])

    async def _fetch(self, postings: Sequence[Posting]) -> list[asyncpg.Record]:
        columns = [list(column) for column in zip(*postings, strict=True)]
        lock_timeout = BATCH_LOCK_TIMEOUT_MS if len(postings) > 1 else 0
        rows: list[asyncpg.Record] | None = None
        try:
            async with self.pool.acquire(timeout=self.acquire_timeout) as conn:
                rows = await conn.fetch(self.query, *columns, lock_timeout)
        except Exception as exc:
            if rows is None:
                raise
            # The rows came back (the batch committed): only giving the connection back to the
            # pool failed, which must not turn committed postings into errors.
            log.warning("connection lost after a batch was answered: %r", exc)
        assert rows is not None
        if len(rows) != len(postings):
            raise RuntimeError(f"seamless_batch answered {len(rows)} rows for {len(postings)}")
        return rows

    async def close(self) -> None:
        """Wait for the batches in flight (their requests are still being answered)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
