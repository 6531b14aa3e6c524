"""The seamless call history, written in batches off the hot path.

Every call is appended to an in-memory buffer and a background task copies the buffer into
``seamless_calls`` with one COPY every ``interval`` seconds. The money itself never depends on this
table: each posting carries its provider, transaction_id and request_id in ``ledger_transactions``,
written atomically with the entries. What a crash can lose is at most the last interval of
call-history rows; a graceful shutdown flushes them.

No value a caller sends can stop the history. What the service records from a call is either an
identifier it validated or passed through :func:`safe_text`. Should a row still be refused (by
Postgres, or by asyncpg before it is sent), the batch is split until that row is alone, the rest is
written as it was, and the refused row is stored in its safe form (:func:`safe_row`). Rows wait
in the buffer only while the database cannot be reached.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from datetime import datetime
from typing import NamedTuple

import asyncpg

from app.db import CONNECTION_ERRORS
from app.fields import IDENTIFIER

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

# Characters of a caller's value kept in the history, and the mark of a value cut there: a
# character no identifier has, so a cut value is never mistaken for a real code or id.
SHOWN = 64
CUT = "\N{HORIZONTAL ELLIPSIS}"
MAX_LATENCY_US = 2**31 - 1  # latency_us is an integer column

# What a COPY raises for what a row holds, as opposed to the database being away: Postgres
# refusing a value (U+0000 in text, a number out of range, a NULL in a NOT NULL column), and
# asyncpg refusing to encode one (a lone surrogate, an int past the column, a wrong type).
ROW_REFUSED: tuple[type[Exception], ...] = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    ValueError,  # UnicodeEncodeError, and asyncpg's own client-side DataError
    TypeError,
    ArithmeticError,  # OverflowError
)


def safe_text(value: str) -> str:
    """``value`` as the history can always store it: an identifier as it is; anything else
    escaped to printable ASCII (``\\x00``, ``\\ud800``) and cut after :data:`SHOWN` characters
    (marked :data:`CUT`). Such a form always holds a character that identifiers never have."""
    if IDENTIFIER.fullmatch(value):
        return value
    shown = value[:SHOWN].encode("unicode_escape").decode("ascii")
    return shown + CUT if len(value) > SHOWN else shown


def safe_row(call: CallRecord) -> CallRecord:
    """The row with every text in its safe form and every number within its column."""

    def text(value: object) -> str | None:
        return None if value is None else safe_text(str(value))

    return call._replace(
        provider=text(call.provider) or "",
        event=text(call.event),
        request_id=text(call.request_id),
        player_id=text(call.player_id),
        transaction_id=text(call.transaction_id),
        code=text(call.code) or "",
        reason=text(call.reason) or "",
        latency_us=min(max(int(call.latency_us), 0), MAX_LATENCY_US),
    )


class CallLog:
    """Buffered writer of :class:`CallRecord` rows."""

    def __init__(self, pool: asyncpg.Pool, *, interval: float = 0.2, max_buffer: int = 100_000):
        self._pool = pool
        self._interval = interval
        self._buffer: deque[CallRecord] = deque(maxlen=max_buffer)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.dropped = 0
        # Rows refused even in their safe form: logged and left out, never retried forever.
        self.unwritable = 0

    @property
    def buffered(self) -> int:
        """Rows waiting to be written."""
        return len(self._buffer)

    def record(self, call: CallRecord) -> None:
        """Queue one row for the next flush."""
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1  # the oldest row falls out: Postgres has been down for long
        self._buffer.append(call)

    def start(self) -> None:
        """Start the background writer."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="call-log")

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), self._interval)
            except TimeoutError:
                pass
            await self._flush_logged()

    async def _flush_logged(self) -> None:
        try:
            await self.flush()
        except Exception:  # noqa: BLE001 - the writer must outlive any one failure; rows are kept
            log.exception("call history flush failed")

    async def flush(self) -> None:
        """Write what is buffered. Rows not written because the database is away are kept, ahead
        of newer ones, for the next try; a row the database refuses never holds up the others."""
        if not self._buffer:
            return
        # Parts still to write, the next one last; written parts leave it.
        todo = [list(self._buffer)]
        self._buffer = deque(maxlen=self._buffer.maxlen)
        try:
            async with self._pool.acquire(timeout=ACQUIRE_SECONDS) as conn:
                while todo:
                    part = todo[-1]
                    try:
                        await conn.copy_records_to_table(
                            "seamless_calls", records=part, columns=COLUMNS
                        )
                    except ROW_REFUSED as exc:
                        todo.pop()
                        self._split(todo, part, exc)
                    else:
                        todo.pop()
        except CONNECTION_ERRORS as exc:
            # Kept for the next try: an escaped error would end this writer until a restart.
            log.warning(
                "call history not written yet (%d rows kept): %r",
                sum(map(len, todo)),
                exc,
            )
        finally:
            # Whatever ended the flush, what was not written goes back: in order, oldest first.
            self._keep([row for part in reversed(todo) for row in part])

    def _split(self, todo: list[list[CallRecord]], part: list[CallRecord], exc: Exception) -> None:
        """Queue a refused part again: halved, or, when it is one row, in its safe form."""
        if len(part) > 1:
            half = len(part) // 2
            todo += [part[half:], part[:half]]
            return
        row = part[0]
        safe = safe_row(row)
        if safe != row:
            # The error's name only: its text may quote the value, which is the trouble.
            log.warning(
                "call history row of %s stored in a safe form (%s)",
                safe.provider,
                type(exc).__name__,
            )
            todo.append([safe])
        else:
            self.unwritable += 1
            log.error(
                "call history row of %s cannot be stored (%s)", safe.provider, type(exc).__name__
            )

    def _keep(self, rows: list[CallRecord]) -> None:
        """Put unwritten rows back ahead of the ones recorded meanwhile."""
        if not rows:
            return
        newer = self._buffer
        self._buffer = deque(rows, maxlen=newer.maxlen)
        self._buffer.extend(newer)
        self.dropped += len(rows) + len(newer) - len(self._buffer)  # the oldest, past the cap

    async def close(self) -> None:
        """Write what is left. The writer is asked to stop between flushes, never cancelled in
        the middle of one: a COPY cut off half-way would lose its whole batch."""
        if self._task is not None:
            self._stopping.set()
            try:
                await asyncio.wait_for(self._task, CLOSE_SECONDS)
            except TimeoutError:
                log.warning("call history writer did not stop in %s s", CLOSE_SECONDS)
        await self._flush_logged()
