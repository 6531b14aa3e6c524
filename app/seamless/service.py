"""The seamless webhook's rules, from an encrypted body to an outcome.

The way of one delivery:

1. open the envelope with the provider's keys (R2 when it cannot be authenticated);
2. decode and parse the event (R3 naming the field), check freshness (R2 stale_request);
3. admit it in Redis: claim the request_id and take the player's lock in one pipeline; a repeated
   request_id gets the first delivery's outcome (or R1 request_in_progress);
4. one Postgres round trip, shared with the events of concurrent requests (group commit,
   :mod:`app.seamless.batch`): a PL/pgSQL function applies each event's rules and posts;
5. store the outcome under the request_id and release the lock in one pipeline.

Redis unreachable at step 3 fails closed with R1 internal_error before any money moves: without
the replay claim the wallet could not tell a replay from a new delivery, and R1 is retryable.
Redis failing at step 5 is logged and ignored: the posting is committed, and the pending claim
expires on its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from redis.exceptions import RedisError

from app import strict_json, tracing
from app.db import CONNECTION_ERRORS, Queries
from app.metrics import Metrics
from app.ratelimit import Window
from app.seamless import envelope, events
from app.seamless.batch import GroupCommit, Posting
from app.seamless.calls import CallLog, CallRecord, safe_text
from app.seamless.keys import KeyRing, KeyUnavailable
from app.seamless.outcome import Outcome, Reason, Refusal
from app.seamless.replay import Gate
from app.secrets import token_hash

log = logging.getLogger(__name__)

# Failures of the database or its connection (or no connection in time): the posting either
# committed whole or not at all, so the answer is a retryable R1.
DATABASE_ERRORS: tuple[type[Exception], ...] = (*CONNECTION_ERRORS, asyncio.TimeoutError)

REQUEST_ID_REUSED = "request_id was already used for another event"

# The values the metrics' ``event`` label may take: a label must not take any value a caller sends.
EVENT_LABELS = frozenset(events.MODELS)


@dataclass(slots=True)
class Reply:
    """A response object and the key to seal it with (None: send it plain)."""

    obj: dict[str, Any]
    key: bytes | None


class SeamlessService:
    """Turns one webhook body into one reply; never raises for anything a caller sends."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        queries: Queries,
        keys: KeyRing,
        gate: Gate,
        calls: CallLog,
        *,
        freshness_seconds: int,
        acquire_timeout: float = 2.0,
        metrics: Metrics | None = None,
        provider_limit: int = 0,
        batch_max: int = 32,
        batches_in_flight: int = 1,
        post_timeout: float = 30.0,
        replay_seconds: int = 600,
    ) -> None:
        self.pool = pool
        self.q = queries
        self.keys = keys
        self.gate = gate
        self.calls = calls
        self.freshness_seconds = freshness_seconds
        # Well below the 30 s pending claim: a request stuck waiting for a connection must give
        # up (R1, retryable) before a resend could be processed next to it.
        self.acquire_timeout = acquire_timeout
        self.metrics = metrics
        # Authenticated events per second per provider, counted in the admission pipeline.
        self.provider_limit = provider_limit
        self.replay_seconds = replay_seconds
        self.postings = GroupCommit(
            pool,
            queries.seamless_batch,
            replay_seconds=replay_seconds,
            max_batch=batch_max,
            max_inflight=batches_in_flight,
            acquire_timeout=acquire_timeout,
            fetch_timeout=post_timeout,
            observe=metrics.batch_posted if metrics is not None else None,
        )

    async def handle(self, provider: str, key_id: str | None, body: bytes) -> Reply:
        """The reply to one webhook body; every call is recorded in the call history."""
        started = time.perf_counter()
        key: bytes | None = None
        event: events.Event | None = None
        data: dict[str, Any] | None = None
        request_id = player_id = None
        label = "unknown"
        replayed = False
        try:
            with tracing.span("seamless.envelope"):
                key, plaintext = await self._open(provider, key_id, body)
            data = events.decode(plaintext)
            request_id = events.readable(data, "request_id")
            player_id = events.readable(data, "player_id")
            name = data.get("event")
            if isinstance(name, str) and name in EVENT_LABELS:
                label = name
            event = events.parse(data)
            if abs(time.time() - event.timestamp) > self.freshness_seconds:
                raise Refusal(Reason.STALE_REQUEST)
            outcome, replayed = await self._admitted(provider, event)
        except Refusal as refusal:
            outcome = Outcome.refused(refusal, request_id)
            if outcome.code != "R2" and key is not None and player_id is not None:
                await self._add_balance(outcome, provider, player_id)
        obj = outcome.to_object()
        if tracing.ON:
            # On the delivery's HTTP server span: what a trace is searched by; never the token,
            # the key or the payload.
            tracing.annotate(
                {
                    "wallet.provider": provider[:64],
                    "wallet.event": label,
                    "wallet.code": outcome.code,
                    "wallet.reason": outcome.reason,
                    "wallet.provider_request_id": request_id,
                    "wallet.replayed": replayed,
                    "wallet.duplicate": outcome.duplicate,
                }
            )
        seconds = time.perf_counter() - started
        self._record(provider, event, data, request_id, player_id, outcome, replayed, seconds)
        if self.metrics is not None:
            self.metrics.seamless(
                label,
                outcome.code,
                outcome.reason,
                seconds,
                duplicate=outcome.duplicate,
                replayed=replayed,
            )
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s from %s answered %s %s in %.1f ms",
                label,
                provider[:64],
                outcome.code,
                outcome.reason,
                seconds * 1000,
                extra={"provider_request_id": request_id, "replayed": replayed},
            )
        return Reply(obj, None if outcome.code == "R2" else key)

    async def _open(self, provider: str, key_id: str | None, body: bytes) -> tuple[bytes, bytes]:
        if not events.IDENTIFIER.fullmatch(provider):
            raise Refusal(Reason.UNKNOWN_PROVIDER)
        try:
            wrapper = strict_json.loads(body)
        except strict_json.StrictJsonError as exc:
            raise Refusal(Reason.BAD_SIGNATURE, f"body refused: {exc}") from None
        except ValueError:
            raise Refusal(Reason.BAD_SIGNATURE, "body is not JSON") from None
        payload = wrapper.get("payload") if isinstance(wrapper, dict) else None
        if not isinstance(payload, str):
            raise Refusal(Reason.BAD_SIGNATURE, 'body must be {"payload": "<base64>"}')
        try:
            raw = envelope.decode(payload)
        except envelope.EnvelopeError as exc:
            raise Refusal(Reason.BAD_SIGNATURE, str(exc)) from None
        try:
            for refresh in (False, True):
                keys = await self.keys.keys(provider, refresh=refresh)
                for candidate in keys:
                    if key_id is not None and candidate.key_id != key_id:
                        continue
                    plaintext = envelope.open_with(candidate.secret, provider, raw)
                    if plaintext is not None:
                        return candidate.secret, plaintext
        except DATABASE_ERRORS as exc:
            log.error("provider keys unavailable: %s", exc)
            raise Refusal(Reason.INTERNAL_ERROR) from None
        except KeyUnavailable as exc:
            log.error("provider %s has no key this process can open: %s", provider, exc)
            raise Refusal(Reason.INTERNAL_ERROR) from None
        if not keys:
            raise Refusal(Reason.UNKNOWN_PROVIDER)
        raise Refusal(Reason.BAD_SIGNATURE)

    async def _admitted(self, provider: str, event: events.Event) -> tuple[Outcome, bool]:
        """Process a fresh delivery, or answer a repeated request_id; (outcome, replayed)."""
        event_hash = events.digest(event)
        rate = Window.now(f"provider:{provider}") if self.provider_limit > 0 else None
        try:
            with tracing.span("seamless.admission"):
                admission = await self.gate.admit(
                    provider,
                    event.request_id,
                    event.player_id,
                    event_hash,
                    lock=event.event in events.MONEY_EVENTS,
                    rate=rate,
                )
            if rate is not None and admission.rate_count > self.provider_limit:
                if admission.fresh:
                    await self.gate.finish(admission, None)  # nothing processed: free the claim
                if self.metrics is not None:
                    self.metrics.rate_limited.labels("provider").inc()
                raise Refusal(
                    Reason.INTERNAL_ERROR,
                    f"more than {self.provider_limit} events per second from this provider: "
                    f"send it again in {rate.retry_after()} s",
                )
        except RedisError as exc:
            log.error(
                "redis unavailable, refusing %s: %s",
                event.event,
                exc,
                extra={"provider_request_id": event.request_id},
            )
            raise Refusal(Reason.INTERNAL_ERROR) from None
        if not admission.fresh:
            if admission.conflicts():
                raise Refusal(Reason.IDEMPOTENCY_CONFLICT, REQUEST_ID_REUSED)
            first = admission.first_outcome()
            if first is None:
                raise Refusal(Reason.REQUEST_IN_PROGRESS)
            return _replayed(orjson.loads(first)), True
        outcome = Outcome(Reason.INTERNAL_ERROR, Reason.INTERNAL_ERROR.message, event.request_id)
        processed = replayed = False
        try:
            outcome, processed, replayed = await self._apply(provider, event, event_hash)
        finally:
            # Also on an unexpected error or a cancelled request: never leave the lock held.
            # Only what ran now is stored: an answer from the durable record (Redis had
            # forgotten the first delivery) leaves Redis as it found it, with no claim.
            stored = (
                orjson.dumps(outcome.to_object())
                if processed and outcome.reason != "internal_error"
                else None
            )
            try:
                await self.gate.finish(admission, stored)
            except RedisError as exc:
                log.warning(
                    "outcome of %s not stored in redis: %s",
                    event.event,
                    exc,
                    extra={"provider_request_id": event.request_id},
                )
        if not (processed or replayed) and outcome.reason == "idempotency_conflict":
            # The durable record holds this request_id for another event: a refusal like the
            # one Redis gives, with the player's balance added the same way.
            raise Refusal(Reason.IDEMPOTENCY_CONFLICT, REQUEST_ID_REUSED)
        return outcome, replayed

    async def _apply(
        self, provider: str, event: events.Event, event_hash: bytes
    ) -> tuple[Outcome, bool, bool]:
        """Post the event; (outcome, processed now, answered from an earlier delivery)."""
        try:
            # The event's part of its batch; the batch's own span links to it (batch.py).
            with tracing.span("seamless.post"):
                row = await self.postings.post(_posting(provider, event, event_hash))
        except DATABASE_ERRORS as exc:
            log.error(
                "posting %s failed: %r",
                event.event,
                exc,
                extra={"provider_request_id": event.request_id},
            )
            failed = Outcome(Reason.INTERNAL_ERROR, Reason.INTERNAL_ERROR.message, event.request_id)
            return failed, False, False
        reason = Reason.named(row["reason"])
        kind = row["credit_kind"]
        if kind is not None and self.metrics is not None and row["processed"]:
            amount = event.amount if isinstance(event, events.Result | events.PromoWin) else 0
            self.metrics.credit(kind, row["currency"], amount)
        outcome = Outcome(
            reason=reason,
            message=row["detail"] or reason.message,
            request_id=event.request_id,
            player_id=event.player_id,
            balance=row["balance"],
            currency=row["currency"],
            transaction_id=row["wallet_transaction_id"],
            duplicate=row["duplicate"],
        )
        return outcome, row["processed"], row["replayed"]

    async def prune_requests(self, batch: int = 10_000) -> int:
        """Delete the durable replay records past the replay window; how many went. In bounded
        statements, so that no one delete holds many rows or runs long."""
        total = 0
        while True:
            async with self.pool.acquire(timeout=self.acquire_timeout) as conn:
                status = await conn.execute(
                    *self.q.prune_seamless_requests(
                        replay_seconds=float(self.replay_seconds), limit=batch
                    )
                )
            deleted = int(status.rsplit(" ", 1)[-1])
            total += deleted
            if deleted < batch:
                return total

    async def prune_forever(self, interval: float) -> None:
        """The pruning job, run by the app's lifespan until it is cancelled. Every worker runs
        one: deleting rows another worker deleted already costs nothing."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.prune_requests()
            except DATABASE_ERRORS as exc:
                log.warning("pruning replay records failed this round: %s", exc)

    async def _add_balance(self, outcome: Outcome, provider: str, player_id: str) -> None:
        """Fill in the player's balance on a refusal, as every answer about an existing player
        carries it (only a player in the provider's scope: any other is unknown to it); best
        effort, since the refusal may be there because Postgres is away."""
        try:
            async with self.pool.acquire(timeout=self.acquire_timeout) as conn:
                row = await conn.fetchrow(
                    *self.q.seamless_balance(provider=provider, player_id=player_id)
                )
        except DATABASE_ERRORS:
            return
        if row["reason"] == "ok":
            outcome.player_id = player_id
            outcome.balance = row["balance"]
            outcome.currency = row["currency"]

    def _record(
        self,
        provider: str,
        event: events.Event | None,
        data: dict[str, Any] | None,
        request_id: str | None,
        player_id: str | None,
        outcome: Outcome,
        replayed: bool,
        seconds: float,
    ) -> None:
        """Append the call to the history, with what could be read of a refused one (contract
        2: support finds a player's failed calls by event and player_id)."""
        if event is not None:
            name: str | None = event.event
            transaction_id = getattr(event, "transaction_id", None)
        elif data is not None:
            # Refused before it parsed: its fields only where they are valid identifiers.
            name = events.readable(data, "event")
            transaction_id = events.readable(data, "transaction_id")
        else:
            name = transaction_id = None
        self.calls.record(
            CallRecord(
                # The one value recorded unchecked: the path, as the caller sent it.
                provider=safe_text(provider),
                event=name,
                request_id=request_id,
                player_id=player_id,
                transaction_id=transaction_id,
                code=outcome.code,
                reason=outcome.reason,
                wallet_transaction_id=outcome.transaction_id,
                duplicate=outcome.duplicate,
                replayed=replayed,
                latency_us=int(seconds * 1_000_000),
                created_at=datetime.now(UTC),
            )
        )


def _posting(provider: str, e: events.Event, event_hash: bytes) -> Posting:
    """The event as one row of a group-committed batch."""
    match e:
        case events.Bet():
            return Posting(
                "bet", provider, e.player_id, e.transaction_id, None, e.round_id, e.game_id,
                e.amount, e.currency, token_hash(e.session_token), None, e.request_id,
                event_hash, free_round_id=e.free_round_id,
            )  # fmt: skip
        case events.Cancel():
            return Posting(
                "cancel", provider, e.player_id, e.transaction_id, e.ref_transaction_id,
                e.round_id, None, e.amount, e.currency, None, None, e.request_id, event_hash,
            )  # fmt: skip
        case events.Result():
            return Posting(
                "result", provider, e.player_id, e.transaction_id, None, e.round_id, e.game_id,
                e.amount, e.currency, None, e.round_closed, e.request_id, event_hash,
                result_kind=e.kind,
            )  # fmt: skip
        case events.ResultChange():
            return Posting(
                "result_change", provider, e.player_id, e.transaction_id, e.ref_transaction_id,
                e.round_id, None, e.amount, e.currency, None, None, e.request_id, event_hash,
            )  # fmt: skip
        case events.PromoWin():
            return Posting(
                "promo_win", provider, e.player_id, e.transaction_id, None, e.round_id,
                e.game_id, e.amount, e.currency, None, None, e.request_id, event_hash,
                promo_id=e.promo_id,
            )  # fmt: skip
        case events.EndRound():
            return Posting(
                "end_round", provider, e.player_id, None, None, e.round_id, e.game_id, None,
                None, None, None, e.request_id, event_hash,
            )  # fmt: skip
        case events.Login() | events.Logout():
            return Posting(
                e.event, provider, e.player_id, None, None, None, None, None, None,
                token_hash(e.session_token), None, e.request_id, event_hash,
            )  # fmt: skip
        case events.Balance():
            return Posting(
                "balance", provider, e.player_id, None, None, None, None, None, None, None, None,
                e.request_id, event_hash,
            )  # fmt: skip
    raise AssertionError(f"no posting for {e.event}")


def _replayed(obj: dict[str, Any]) -> Outcome:
    """The stored response object of the first delivery, as an outcome (its code follows from
    its reason)."""
    tx = obj.get("transaction_id")
    return Outcome(
        reason=Reason.named(obj["reason"]),
        message=obj["message"],
        request_id=obj.get("request_id"),
        player_id=obj.get("player_id"),
        balance=obj.get("balance"),
        currency=obj.get("currency"),
        transaction_id=int(tx) if tx is not None else None,
        duplicate=bool(obj.get("duplicate", False)),
    )
