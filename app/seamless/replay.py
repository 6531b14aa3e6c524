"""Request-id replay protection and the player lock, in as few Redis round trips as possible.

Both pipelines go through :class:`app.redis_mux.RedisMux`, which also writes the pipelines of
concurrent requests together.

A delivery is *admitted* with one pipeline: claim ``request_id`` with ``SET NX`` (value
``pending:<token>``), try the player's lock, and read the claim's current value. The outcome is
then stored under the claim and the lock released with a second pipeline.

- The claim carries a token of its own, so that a ``SET NX`` re-sent by the client's retry after
  a timed-out first attempt that did land is recognised as ours, not as a concurrent delivery.
- When admission fails after the claim was taken (Redis failing half-way), the claim is released
  again if it is still ours, so the provider's resend is not told ``request_in_progress``.

- ``pending`` lives only ``PENDING_MS``: should the outcome never be stored (Redis down after the
  posting, worker killed), the provider's resend is processed again after that and, being
  idempotent by transaction_id, gets the first posting back.
- An R1 ``internal_error`` is not stored: it is retryable, and the provider's resend of the same
  bytes must be processed again rather than get the failure back for ten minutes.
- Both the claim and the stored outcome carry the event's digest
  (:func:`app.seamless.events.digest`), so that a request_id reused for another event is refused
  as a conflict instead of being answered with the first event's outcome.

Redis only saves work here. Every delivery that reaches the ledger also records its outcome in
Postgres, in its posting transaction (``seamless_requests``, sql/012), and the posting function
answers from that record when Redis has forgotten the request (a restart with nothing on disk):
no delivery within the replay window is processed twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import cast

from redis.exceptions import NoScriptError, RedisError

from app.locks import PlayerLocks, lock_key, new_token
from app.ratelimit import Window
from app.redis_mux import Command, RedisMux

PENDING = b"pending:"
PENDING_MS = 30_000
# Values: ``pending:<digest hex>:<token>`` while claimed, ``<digest hex>:<response JSON>`` once
# answered.
_DIGEST = 32  # hex characters of a 16-byte digest
_SEP = b":"


def replay_key(provider: str, request_id: str) -> str:
    digest = hashlib.blake2b(f"{provider}\x00{request_id}".encode(), digest_size=16).hexdigest()
    return f"wallet:replay:{digest}"


@dataclass(slots=True)
class Admission:
    """The result of :meth:`Gate.admit`."""

    key: str
    claim: bytes  # our pending value, to release the claim only while it is ours
    fresh: bool  # True: first delivery of this request_id, to be processed
    stored: bytes | None  # the first delivery's outcome (or PENDING) when not fresh
    player_id: str
    lock_token: str | None  # set when we hold the player's lock
    rate_count: int = 0  # requests counted in the rate window, this one included (0: not counted)
    digest: bytes = b""  # hex digest of this delivery's event

    def _stored_digest(self) -> bytes | None:
        stored = self.stored
        if stored is None:
            return None
        start = len(PENDING) if stored.startswith(PENDING) else 0
        end = start + _DIGEST
        # Values written before digests were stored have none; they expire within the window.
        return stored[start:end] if stored[end : end + 1] == _SEP else None

    def conflicts(self) -> bool:
        """Whether the request_id is held, or was answered, for another event."""
        digest = self._stored_digest()
        return digest is not None and digest != self.digest

    def first_outcome(self) -> bytes | None:
        """The first delivery's stored response object (JSON); None while it is in progress."""
        stored = self.stored
        if stored is None or stored.startswith(PENDING):
            return None
        if self._stored_digest() is None:
            return stored
        return stored[_DIGEST + 1 :]


class Gate:
    """Replay claims and player locks for the seamless endpoint."""

    def __init__(self, mux: RedisMux, locks: PlayerLocks, *, replay_ms: int) -> None:
        self.mux = mux
        self.locks = locks
        self.replay_ms = replay_ms

    async def admit(
        self,
        provider: str,
        request_id: str,
        player_id: str,
        event_digest: bytes,
        *,
        lock: bool,
        rate: Window | None = None,
    ) -> Admission:
        """Claim the request id for the event with ``event_digest``, take the lock (when
        ``lock``), and count the request in the ``rate`` window, all in one pipeline."""
        key = replay_key(provider, request_id)
        token = new_token()
        digest = event_digest.hex().encode()
        claim = PENDING + digest + _SEP + token.encode()
        try:
            replies = await self._admission_pipeline(key, claim, player_id, token, lock, rate)
        except NoScriptError:
            # Redis restarted and forgot the scripts: no claim was taken, but the lock may have
            # been; give it back, load the scripts again and admit once more.
            if lock:
                await self.locks.release(player_id, token)
            await self.locks.load_scripts()
            replies = await self._admission_pipeline(key, claim, player_id, token, lock, rate)
        rate_count = 0
        if rate is not None:
            rate_count, replies = int(cast(int, replies[0])), replies[1:]
        stored = cast(bytes | None, replies[0])
        fresh = stored == claim
        locked = lock and bool(replies[1])
        admission = Admission(
            key,
            claim,
            fresh,
            None if fresh else stored,
            player_id,
            token if locked else None,
            rate_count,
            digest,
        )
        if not fresh:
            if locked:
                await self.locks.release(player_id, token)
                admission.lock_token = None
            return admission
        if lock and not locked:
            try:
                if await self.locks.wait(player_id, token):
                    admission.lock_token = token
            except RedisError:
                await self._drop_claim(admission)
                raise
        # Not acquired in time: go on without it; the posting's row lock keeps money right.
        return admission

    async def _admission_pipeline(
        self,
        key: str,
        claim: bytes,
        player_id: str,
        token: str,
        lock: bool,
        rate: Window | None,
    ) -> list[object]:
        """Replies: [rate count], the claim's value, [lock taken] (bracketed ones when asked)."""
        # Every command touches one key, so each can be routed to its own node on a cluster.
        commands: list[Command] = []
        if rate is not None:
            commands.append(rate.count_command(self.locks.count_sha))
        commands.append(("EVALSHA", self.locks.claim_sha, 1, key, claim, PENDING_MS))
        if lock:
            commands.append(("SET", lock_key(player_id), token, "NX", "PX", self.locks.ttl_ms))
        return await self.mux.execute(*commands)

    async def _drop_claim(self, admission: Admission) -> None:
        """Release our pending claim, best effort (Redis may be failing right now)."""
        try:
            await self.mux.execute(self._release(admission.key, admission.claim))
        except RedisError:
            pass  # it expires after PENDING_MS anyway

    def _release(self, key: str, value: str | bytes) -> Command:
        return ("EVALSHA", self.locks.release_sha, 1, key, value)

    async def finish(self, admission: Admission, outcome: bytes | None) -> None:
        """Store the outcome (or drop our claim when ``None``) and release the lock."""
        commands: list[Command] = [
            self._release(admission.key, admission.claim)
            if outcome is None
            else ("SET", admission.key, admission.digest + _SEP + outcome, "PX", self.replay_ms)
        ]
        if admission.lock_token is not None:
            commands.append(self._release(lock_key(admission.player_id), admission.lock_token))
        try:
            await self.mux.execute(*commands)
        except NoScriptError:
            # Redis restarted and forgot the script: load it and finish the releases.
            await self.locks.load_scripts()
            if outcome is None:
                await self._drop_claim(admission)
            if admission.lock_token is not None:
                await self.locks.release(admission.player_id, admission.lock_token)
