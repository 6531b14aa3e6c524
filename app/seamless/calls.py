"""The seamless call history, written in batches off the hot path.

Every call is appended to an in-memory buffer and a background task copies the buffer into
``seamless_calls`` with one COPY every ``interval`` seconds. The money itself never depends on this
table: each posting carries its provider, transaction_id and request_id in ``ledger_transactions``,
written atomically with the entries. What a crash can lose is at most the last interval of
call-history rows; a graceful shutdown flushes them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from datetime import datetime
from typing import NamedTuple

import asyncpg

from app.db import CONNECTION_ERRORS

log = logging.getLogger(__name__)


class CallRecord(NamedTuple):
    """One row of ``seamless_calls``; a tuple already, so COPY takes it as it is."""

    provider: str
    event: str | None
    request_id: str | None
    player_id: str | None
    transaction_id: str | None
    code: str
    reason: str
    wallet_transaction_id: int | None
    duplicate: bool
    replayed: bool
    latency_us: int
    created_at: datetime


COLUMNS = list(CallRecord._fields)

# How long a flush waits for a pool connection, and shutdown for the writer's last flush.
ACQUIRE_SECONDS = 5.0
CLOSE_SECONDS = 10.0


class CallLog:
    """Buffered writer of :class:`CallRecord` rows."""

    def __init__(self, pool: asyncpg.Pool, *, interval: float = 0.2, max_buffer: int = 100_000):
        self._pool = pool
        self._interval = interval
        self._buffer: deque[CallRecord] = deque(maxlen=max_buffer)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.dropped = 0

    @property
    def buffered(self) -> int:
        """Rows waiting to be written."""
        return len(self._buffer)

    def record(self, call: CallRecord) -> None:
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1  # the oldest row falls out: Postgres has been down for long
        self._buffer.append(call)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="call-log")

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), self._interval)
            except TimeoutError:
                pass
            await self.flush()

    async def flush(self) -> None:
        """Write what is buffered; on failure keep it (newest first) for the next try."""
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, deque(maxlen=self._buffer.maxlen)
        try:
            async with self._pool.acquire(timeout=ACQUIRE_SECONDS) as conn:
                await conn.copy_records_to_table("seamless_calls", records=batch, columns=COLUMNS)
        except CONNECTION_ERRORS as exc:
            # Kept for the next try: an escaped error would end this writer until a restart.
            log.warning("call history not written yet (%d rows kept): %s", len(batch), exc)
            batch.extend(self._buffer)
            self._buffer = batch

    async def close(self) -> None:
        """Write what is left. The writer is asked to stop between flushes, never cancelled in
        the middle of one: a COPY cut off half-way would lose its whole batch."""
        if self._task is not None:
            self._stopping.set()
            try:
                await asyncio.wait_for(self._task, CLOSE_SECONDS)
            except TimeoutError:
                log.warning("call history writer did not stop in %s s", CLOSE_SECONDS)
        await self.flush()
