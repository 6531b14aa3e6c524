"""Per-player Redis lock: ``SET key token NX PX ttl``, released only by its owner (Lua).

The lock keeps a player's concurrent money events from each holding a Postgres connection while
they queue on the player's account row. It is an optimisation, not a guard: the row lock inside
the posting function is what serialises money, so a lock that expired, was lost with a Redis
restart, or could not be had in time never lets money move twice or below zero.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from app.ids import unique_hex

# Delete the key only if it still holds our token: a holder whose TTL ran out must not release
# the lock that the next holder has since taken. Also releases replay claims the same way.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


# Take a replay claim, or read what holds it: one command where SET NX and GET were two. The
# reply is the key's value after the call, so it equals our claim exactly when the claim is ours.
_CLAIM = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return ARGV[1]
end
return redis.call('get', KEYS[1])
"""

# Count one request in a rate window, giving the window its expiry on its first count.
_COUNT = """
local n = redis.call('incr', KEYS[1])
if n == 1 then
    redis.call('pexpire', KEYS[1], ARGV[1])
end
return n
"""


def lock_key(player_id: str) -> str:
    # The braces are a Redis Cluster hash tag: every key of one player lands on one shard.
    return f"wallet:{{p:{player_id}}}:lock"


def new_token() -> str:
    return unique_hex(16)


LockObserver = Callable[[float, bool], None]
"""Told of every :meth:`PlayerLocks.wait`: seconds waited, and whether the lock was had."""


class PlayerLocks:
    """Acquire and release per-player locks on one Redis client."""

    def __init__(
        self,
        redis: Redis,
        *,
        ttl_ms: int,
        wait_ms: int,
        observe: LockObserver | None = None,
    ) -> None:
        self.redis = redis
        self.ttl_ms = ttl_ms
        self.wait_ms = wait_ms
        self.observe = observe
        self._shas: dict[str, str] = {}

    async def load_scripts(self) -> None:
        """Load the scripts of the hot path once, so that it can call them by hash (each touches
        one key only, so they also run on Redis Cluster)."""
        for name, script in (("release", _RELEASE), ("claim", _CLAIM), ("count", _COUNT)):
            self._shas[name] = await self.redis.script_load(script)

    def _sha(self, name: str) -> str:
        try:
            return self._shas[name]
        except KeyError:
            raise RuntimeError("PlayerLocks.load_scripts() was not awaited at start-up") from None

    @property
    def release_sha(self) -> str:
        return self._sha("release")

    @property
    def claim_sha(self) -> str:
        return self._sha("claim")

    @property
    def count_sha(self) -> str:
        return self._sha("count")

    async def wait(self, player_id: str, token: str) -> bool:
        """Retry the lock until it is ours or ``wait_ms`` passed; True when acquired.

        Polling with a short, jittered, growing pause: a player's events hold the lock for a few
        milliseconds, so waiters rarely sleep more than a couple of rounds.
        """
        started = time.monotonic()
        deadline = started + self.wait_ms / 1000
        pause = 0.002
        key = lock_key(player_id)
        while True:
            if await self.redis.set(key, token, nx=True, px=self.ttl_ms):
                self._observe(started, True)
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._observe(started, False)
                return False
            await asyncio.sleep(min(remaining, pause * random.uniform(0.5, 1.5)))
            pause = min(pause * 2, 0.05)

    def _observe(self, started: float, acquired: bool) -> None:
        if self.observe is not None:
            self.observe(time.monotonic() - started, acquired)

    async def release(self, player_id: str, token: str) -> None:
        """Release the lock if we still own it."""
        try:
            await self.redis.evalsha(self.release_sha, 1, lock_key(player_id), token)
        except NoScriptError:
            # Redis restarted and forgot the script: load it again and retry once.
            await self.load_scripts()
            await self.redis.evalsha(self.release_sha, 1, lock_key(player_id), token)
