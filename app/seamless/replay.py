"""Request-id replay protection and the player lock, in as few Redis round trips as possible.

A delivery is *admitted* with one pipeline: claim ``request_id`` with ``SET NX`` (value
``pending``), try the player's lock, and read the claim's current value. The outcome is then
stored under the claim and the lock released with a second pipeline.

- ``pending`` lives only ``PENDING_MS``: should the outcome never be stored (Redis down after the
  posting, worker killed), the provider's resend is processed again after that and, being
  idempotent by transaction_id, gets the first posting back.
- An R1 ``internal_error`` is not stored: it is retryable, and the provider's resend of the same
  bytes must be processed again rather than get the failure back for ten minutes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from app.locks import PlayerLocks, lock_key, new_token

PENDING = b"pending"
PENDING_MS = 30_000


def replay_key(provider: str, request_id: str) -> str:
    digest = hashlib.blake2b(f"{provider}\x00{request_id}".encode(), digest_size=16).hexdigest()
    return f"wallet:replay:{digest}"


@dataclass(slots=True)
class Admission:
    """The result of :meth:`Gate.admit`."""

    key: str
    fresh: bool  # True: first delivery of this request_id, to be processed
    stored: bytes | None  # the first delivery's outcome (or PENDING) when not fresh
    player_id: str
    lock_token: str | None  # set when we hold the player's lock


class Gate:
    """Replay claims and player locks for the seamless endpoint."""

    def __init__(self, redis: Redis, locks: PlayerLocks, *, replay_ms: int) -> None:
        self.redis = redis
        self.locks = locks
        self.replay_ms = replay_ms

    async def admit(
        self, provider: str, request_id: str, player_id: str, *, lock: bool
    ) -> Admission:
        key = replay_key(provider, request_id)
        token = new_token() if lock else None
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(key, PENDING, nx=True, px=PENDING_MS)
            if token is not None:
                pipe.set(lock_key(player_id), token, nx=True, px=self.locks.ttl_ms)
            pipe.get(key)
            replies = await pipe.execute()
        fresh = bool(replies[0])
        locked = token is not None and bool(replies[1])
        admission = Admission(
            key, fresh, None if fresh else replies[-1], player_id, token if locked else None
        )
        if not fresh:
            if locked:
                await self.locks.release(player_id, token)  # type: ignore[arg-type]
                admission.lock_token = None
            return admission
        if token is not None and not locked and await self.locks.wait(player_id, token):
            admission.lock_token = token
        # Not acquired in time: go on without it; the posting's row lock keeps money right.
        return admission

    async def finish(self, admission: Admission, outcome: bytes | None) -> None:
        """Store the outcome (or drop the claim when ``None``) and release the lock."""
        async with self.redis.pipeline(transaction=False) as pipe:
            if outcome is None:
                pipe.delete(admission.key)
            else:
                pipe.set(admission.key, outcome, px=self.replay_ms)
            if admission.lock_token is not None:
                pipe.evalsha(
                    self.locks.release_sha, 1, lock_key(admission.player_id), admission.lock_token
                )
            try:
                await pipe.execute()
            except NoScriptError:
                await self.locks.load_scripts()
                if admission.lock_token is not None:
                    await self.locks.release(admission.player_id, admission.lock_token)
