"""Group commit: the postings of concurrent requests share one round trip and one commit.

Each request hands its event to :meth:`GroupCommit.post` and waits. Up to ``max_inflight``
batches are in Postgres at once; whatever arrives meanwhile waits for the next batch, which takes
up to ``max_batch`` events. Nothing is held back on purpose: a lone event goes at once as a batch
of one, and batches grow only when the database is the bottleneck, which is when sharing a commit
pays. A sender keeps one pool connection for as long as it has batches to send, instead of taking
one from the pool and giving it back per batch.

A batch is one call of ``seamless_batch`` (sql/functions/seamless.sql), its events one array of
``seamless_event`` rows: one transaction, each event run by its own function in order, sorted by
player id so that two batches lock player rows in the same order.
When the batch raises for what its events hold (a unique violation because another player used
the same transaction id at the same moment, a row held elsewhere for longer than the batch's lock
timeout, a rule's own error), nothing of it committed: each event is then posted again alone, so
that one event's failure never becomes another's. When the server or the connection fails, every
event of the batch gets the error; none of them committed, or all did and a resend is answered
as a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Sequence
from math import inf
from typing import Any, NamedTuple

import asyncpg
from opentelemetry.trace import Span

from app import tracing
from app.db import Query

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

# How long, after one of them waited long alone, the events of a player skip batches.
HELD_SECONDS = 1.0


class Posting(NamedTuple):
    """One event as ``seamless_batch`` takes it: a row of the SQL type ``seamless_event``
    (sql/migrations/015), whose fields are these in this order; a field the event does not have
    is None. asyncpg encodes a list of them as ``seamless_event[]``."""

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
    request_id: str
    event_hash: bytes  # app.seamless.events.digest(): a reused request_id is told from a replay
    result_kind: str | None = None  # sql/migrations/016 added these three
    free_round_id: str | None = None
    promo_id: str | None = None


_Pending = tuple[Posting, "asyncio.Future[asyncpg.Record]"]
_Waiting = tuple[Posting, "asyncio.Future[asyncpg.Record]", float]  # and when it was queued

BatchObserver = Callable[[int], None]
"""Told the size of every batch sent."""


def _caused_by_events(exc: BaseException, size: int) -> bool:
    """Whether posting the ``size`` events of a failed batch one by one may settle them."""
    if not isinstance(exc, asyncpg.PostgresError):
        return False
    sqlstate = str(getattr(exc, "sqlstate", ""))
    # The statement timeout bounds one event's work when it runs alone; a batch of several that
    # reaches it (players with limits over long histories) gives each its own allowance again.
    return sqlstate[:2] in _EVENT_ERROR_CLASSES or (size > 1 and sqlstate == "57014")


class GroupCommit:
    """Posts :class:`Posting` rows in batches; see the module's docstring."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        query: Query,
        *,
        replay_seconds: int = 600,
        max_batch: int = 32,
        max_inflight: int = 1,
        acquire_timeout: float = 2.0,
        fetch_timeout: float = 30.0,
        observe: BatchObserver | None = None,
    ) -> None:
        if max_batch < 1 or max_inflight < 1:
            raise ValueError("max_batch and max_inflight must be at least 1")
        self.pool = pool
        self.query = query
        self.replay_seconds = replay_seconds
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self.acquire_timeout = acquire_timeout
        self.observe = observe
        # The database's own statement timeout ends a batch first; this bounds a connection
        # that went silent (half-open) without closing.
        self.fetch_timeout = fetch_timeout
        self._waiting: deque[_Waiting] = deque()
        self._senders = 0  # sender tasks alive
        self._starting = False  # a sender was started and has not taken its first batch yet
        self._tasks: set[asyncio.Task[None]] = set()
        # Players whose row was found held elsewhere, until when their events skip batches.
        self._held: dict[str, float] = {}
        # When tracing: the span of each waiting event's request, for its batch to link to.
        self._spans: dict[asyncio.Future[asyncpg.Record], Span | None] = {}

    async def post(self, posting: Posting) -> asyncpg.Record:
        """The event's ``wallet_outcome`` row once its batch committed.

        Raises what the database raised: the caller answers a retryable R1.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[asyncpg.Record] = loop.create_future()
        self._waiting.append((posting, future, loop.time()))
        if not self._starting and self._senders < self.max_inflight:
            # The new sender runs on the loop's next turn, so it takes every event that the
            # requests being served on this turn add meanwhile.
            self._starting = True
            self._senders += 1
            self._spawn(self._send(), "group-commit")
        if not tracing.ON:
            return await future
        self._spans[future] = tracing.current()
        try:
            return await future
        finally:
            del self._spans[future]

    @contextlib.contextmanager
    def _traced(self, batch: Sequence[_Pending], *, alone: bool) -> Iterator[None]:
        """The batch's span, when tracing: a root span of its own (a batch serves many
        requests, it is none's child) linked to the span of each event's request, and each of
        those records the batch it went in (``wallet.batch.*``)."""
        if not tracing.ON:
            yield
            return
        events = [self._spans.get(future) for _, future in batch]
        attributes = {"wallet.batch.size": len(batch), "wallet.batch.alone": alone}
        with tracing.span("seamless.batch", attributes, tracing.link(events)) as span:
            if span is not None:
                context = span.get_span_context()
                for event in events:
                    if event is not None:
                        event.set_attributes(
                            {
                                "wallet.batch.trace_id": format(context.trace_id, "032x"),
                                "wallet.batch.span_id": format(context.span_id, "016x"),
                                "wallet.batch.size": len(batch),
                            }
                        )
            yield

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        # A context of its own: not the log context (correlation id) of the request that
        # happened to start it, which its log lines are not about.
        task = asyncio.get_running_loop().create_task(
            coroutine, name=name, context=contextvars.Context()
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self) -> None:
        """Send batches while events are waiting, on one pool connection held meanwhile."""
        conn: asyncpg.Connection | None = None
        batch: list[_Pending] = []
        try:
            while self._waiting:
                self._starting = False
                batch = self._take()
                if not batch:
                    continue
                try:
                    if self.observe is not None:
                        self.observe(len(batch))
                    with self._traced(batch, alone=False):
                        if conn is None:
                            conn = await self.pool.acquire(timeout=self.acquire_timeout)
                        rows = await _fetch(
                            conn,
                            self.query,
                            [posting for posting, _ in batch],
                            BATCH_LOCK_TIMEOUT_MS,
                            self.replay_seconds,
                            self.fetch_timeout,
                        )
                except Exception as exc:  # noqa: BLE001 - handed to the batch's requests
                    if conn is not None:
                        # Whatever failed, the next batch starts on a connection known to work.
                        await self._release(conn)
                        conn = None
                    await self._failed(batch, exc)
                    batch = []
                    continue
                for (_, future), row in zip(batch, rows, strict=True):
                    if not future.done():
                        future.set_result(row)
                batch = []
        finally:
            self._starting = False
            self._senders -= 1
            # Only when this task itself was cancelled (a shutdown cut short): the requests of
            # the batch under way must not wait for ever. Nothing of it is known to be committed.
            for _, future in batch:
                _fail(future, ConnectionError("posting interrupted"))
            if conn is not None:
                await self._release(conn)

    def _take(self) -> list[_Pending]:
        """The next batch off the queue, sorted by player. Events of requests gone (a client
        disconnected, a shutdown) are dropped; events that waited longer than a request waits
        for a connection get a timeout (R1); events of players whose row is held elsewhere
        are posted alone at once."""
        now = asyncio.get_running_loop().time()
        batch: list[_Pending] = []
        alone: list[_Pending] = []
        while self._waiting and len(batch) < self.max_batch:
            posting, future, queued_at = self._waiting.popleft()
            if future.done():
                continue
            if now - queued_at > self.acquire_timeout:
                _fail(future, TimeoutError("no batch had room for the event in time"))
            elif self._held and self._is_held(posting.player_id, now):
                alone.append((posting, future))
            else:
                batch.append((posting, future))
        if alone:
            self._spawn(self._post_each(alone, None), "group-commit-held")
        batch.sort(key=lambda item: item[0].player_id)  # stable: arrival order within a player
        return batch

    def _is_held(self, player_id: str, now: float) -> bool:
        until = self._held.get(player_id)
        if until is None:
            return False
        if until > now:
            return True
        del self._held[player_id]
        return False

    async def _release(self, conn: asyncpg.Connection) -> None:
        try:
            await self.pool.release(conn)
        except Exception as exc:  # noqa: BLE001 - the pool drops a broken connection by itself
            log.warning("connection not given back to the pool: %r", exc)

    async def _failed(self, batch: list[_Pending], exc: Exception) -> None:
        if not _caused_by_events(exc, len(batch)):
            for _, future in batch:
                _fail(future, exc)
            return
        log.info("batch of %d refused (%s): posting its events one by one", len(batch), exc)
        # Concurrently and off this sender, without the lock timeout: an event stuck on a row
        # lock then holds up no one but itself, and the next batch goes meanwhile.
        self._spawn(self._post_each(batch, exc), "group-commit-each")

    async def _post_each(self, batch: list[_Pending], exc: Exception | None) -> None:
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
        loop = asyncio.get_running_loop()
        player = posting.player_id
        # Still waiting after a batch's lock timeout: most likely the player's row is held
        # elsewhere. Until shortly after this posting is done, their next events go alone, so
        # that they do not cost a batch (and everyone behind it) the lock timeout each.
        marker = loop.call_later(BATCH_LOCK_TIMEOUT_MS / 1000, self._held.__setitem__, player, inf)
        try:
            try:
                with self._traced([(posting, future)], alone=True):
                    row = await self._fetch_alone(posting)
            except asyncpg.UniqueViolationError:
                if not retry_unique:
                    raise
                # Another player posted the same provider transaction_id at the same moment; run
                # again to answer duplicate or idempotency_conflict from the committed row.
                with self._traced([(posting, future)], alone=True):
                    row = await self._fetch_alone(posting)
        except Exception as exc:  # noqa: BLE001 - handed to the waiting request
            _fail(future, exc)
            return
        finally:
            marker.cancel()
            if self._held.get(player) == inf:
                self._held[player] = loop.time() + HELD_SECONDS
        if not future.done():
            future.set_result(row)

    async def _fetch_alone(self, posting: Posting) -> asyncpg.Record:
        rows: list[asyncpg.Record] | None = None
        try:
            async with self.pool.acquire(timeout=self.acquire_timeout) as conn:
                rows = await _fetch(
                    conn, self.query, [posting], 0, self.replay_seconds, self.fetch_timeout
                )
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
    conn: asyncpg.Connection,
    query: Query,
    postings: Sequence[Posting],
    lock_timeout_ms: int,
    replay_seconds: int,
    timeout: float,
) -> list[asyncpg.Record]:
    """One call of ``seamless_batch``: a row per posting, in order."""
    rows: list[asyncpg.Record] = await conn.fetch(
        *query(events=postings, lock_timeout_ms=lock_timeout_ms, replay_seconds=replay_seconds),
        timeout=timeout,
    )
    if len(rows) != len(postings):
        raise RuntimeError(f"seamless_batch answered {len(rows)} rows for {len(postings)}")
    return rows


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
