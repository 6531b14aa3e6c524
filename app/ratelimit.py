"""Rate limits per provider and per operator API key, shared by every process through Redis.

A fixed one-second window per subject: ``INCR wallet:rate:<subject>:<window>`` and an expiry, in
whatever pipeline is going to Redis anyway, so a limit costs no round trip of its own on the
seamless hot path. Only callers who have proven who they are are counted (an envelope that opened,
a valid API key): otherwise anyone could use up a provider's budget by sending junk in its name.

Fixed windows let a caller send up to twice the limit across a window boundary; for a guard against
a runaway client that is enough, and it is one counter per subject per second instead of a sorted
set of timestamps.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

WINDOW_MS = 1000


@dataclass(frozen=True, slots=True)
class Window:
    """The counter of one subject in the current window."""

    key: str
    ends_at_ms: int

    @classmethod
    def now(cls, subject: str) -> Window:
        window = int(time.time() * 1000) // WINDOW_MS
        return cls(f"wallet:rate:{subject}:{window}", (window + 1) * WINDOW_MS)

    def count(self, pipe: Pipeline) -> None:
        """Queue the increment; its reply is the count including this call (two replies: the
        count, then the expiry's)."""
        pipe.incr(self.key)
        pipe.pexpire(self.key, 2 * WINDOW_MS)

    def count_command(self, sha: str) -> tuple[str | int, ...]:
        """The increment as one scripted command (see ``app.locks``); one reply, the count."""
        return ("EVALSHA", sha, 1, self.key, 2 * WINDOW_MS)

    def retry_after(self) -> int:
        """Whole seconds until this window ends (at least 1), for ``Retry-After``."""
        return max(1, math.ceil((self.ends_at_ms - time.time() * 1000) / 1000))


class Limiter:
    """Counts requests per subject and says when one is over its limit (0 means no limit)."""

    def __init__(self, redis: Redis, *, per_second: int) -> None:
        self.redis = redis
        self.per_second = per_second

    def over(self, count: int) -> bool:
        return self.per_second > 0 and count > self.per_second

    async def check(self, subject: str) -> int | None:
        """Count one request of ``subject``; seconds to wait when it is over the limit, else None.

        Fails open: when Redis cannot count, the request goes on (this guards capacity, not money).
        """
        if self.per_second <= 0:
            return None
        window = Window.now(subject)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                window.count(pipe)
                count, _ = await pipe.execute()
        except RedisError as exc:
            log.warning("rate limit not checked: %s", exc)
            return None
        return window.retry_after() if self.over(int(count)) else None
