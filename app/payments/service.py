"""Deposits and withdrawals: idempotent creation, PSP routing with failover, state machines, and
money that moves only with a verified, final PSP event (or an operator decision).

Where each guarantee lives:
- one payment per Idempotency-Key: the payment row carries the key (UNIQUE (kind, key)) and a
  hash of the request body, so a retry after a crash finds the payment, not a new one;
- no double credit: each PSP event id is recorded once (psp_events primary key) in the same
  transaction as the transition it causes, and a deposit credits only on the edge into
  ``succeeded``, which exists once per payment;
- legal transitions only: payment_transition() refuses edges not in payment_state_edges;
- a crash between the PSP call and the database write: our payment id is the PSP's idempotency
  key, so the retry that takes the payment over initiates again and gets the same PSP payment;
- one start at a time: a start holds a Postgres advisory lock (a lease) while it talks to its
  PSP, released when it ends or when its session dies; a retry meanwhile gets 409;
- a payout stays with its PSP (contract 3 [1.1]): the route is written to the payment row before
  the request leaves, and only an answer that proves the PSP did not take it (no connection,
  429) lets another route have it. An unknown outcome waits, funds held, for that PSP's webhook,
  the polling job's question by reference, or an operator's audited resolve.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import asyncpg

from app import tracing
from app.audit import Actor, audit
from app.db import CONNECTION_ERRORS, Queries
from app.metrics import Metrics
from app.payments import signing
from app.payments.metering import metered
from app.payments.models import (
    CONTRADICTED,
    FAILED_AFTER_PAID,
    ID_PREFIX,
    MISMATCHES,
    OUTCOME_UNKNOWN,
    PAID_AFTER_RELEASE,
    RESOLUTIONS,
    SUCCEEDED_AFTER_EXPIRY,
    Payment,
    PaymentRequest,
)
from app.payments.psp import Initiated, Psp, PspError, PspEvent, now
from app.payments.routing import Breaker, BreakerState, retry_delay, serves
from app.web import pagination
from app.web.errors import (
    IdempotencyConflict,
    InProgress,
    InvalidRequest,
    MethodUnavailable,
    NotFound,
    PlayerLimitExceeded,
    RouteDegraded,
    WalletError,
)

log = logging.getLogger(__name__)

# Stored as the answer of a creation that found every route degraded.
DEGRADED = {"error": "route_degraded"}
DEGRADED_MESSAGE = "every payment route is unavailable; retry later with a new Idempotency-Key"
IN_PROGRESS = "a request with this Idempotency-Key is still in progress"
RESOLVABLE = ("approved", "processing")  # sent, or about to be, and not final


def view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A payment as the API shows it (:class:`Payment`), in the JSON form that is also stored as
    the first answer to its Idempotency-Key."""
    return Payment.of(row).model_dump(mode="json")


class Payments:
    """The payments rules over one pool and a list of PSP routes (in preference order)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        queries: Queries,
        psps: list[Psp],
        *,
        webhook_base: str,
        payment_ttl_seconds: int = 1800,
        review_threshold: int | None = None,
        kyc_tiers: Mapping[str, Mapping[str, int]] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.pool = pool
        self.q = queries
        self.psps = psps
        self.webhook_base = webhook_base.rstrip("/")
        self.payment_ttl = timedelta(seconds=payment_ttl_seconds)
        self.breakers: dict[str, Breaker] = {}
        self.same_route_retries = 1
        self.review_threshold = review_threshold
        self.kyc_tiers = kyc_tiers or {}
        self.metrics = metrics

    def breaker_states(self) -> dict[str, BreakerState]:
        """Each route's breaker state; a route not called yet is closed."""
        return {
            psp.name: b.state if (b := self.breakers.get(psp.name)) else "closed"
            for psp in self.psps
        }

    # --- deposits ------------------------------------------------------------------------------

    async def create_deposit(self, req: PaymentRequest, key: str) -> dict[str, Any]:
        """Create (or find again, by key) a deposit and start it at a PSP."""
        answer = await self._first_answer("deposit", key, req)
        if answer is not None:
            return answer
        payment_id = f"{ID_PREFIX['deposit']}_{secrets.token_hex(10)}"
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                player = await conn.fetchrow("SELECT * FROM wallet_lock_player($1)", req.player_id)
                if player["account_id"] is None:
                    raise NotFound(f"player {req.player_id!r} not found")
                if player["status"] != "active":
                    # Blocked and self-excluded players may withdraw what they have, never add.
                    raise PlayerLimitExceeded(f"the player is {player['status']}: no deposits")
                if player["currency"] != req.currency:
                    raise InvalidRequest(
                        "currency is not the player's wallet currency", field="currency"
                    )
                routes = self._routes(req)
                await self._check_kyc(conn, "deposit", req)
                await self._check_deposit_limits(conn, req)
                inserted = await conn.fetchval(
                    *self.q.insert_deposit(**self._new_row(payment_id, req, key))
                )
                if inserted is not None:
                    await conn.execute(*self.q.operator_event(payment_id=payment_id))
            if inserted is None:
                existing = await conn.fetchrow(
                    *self.q.payment_by_key(kind="deposit", idempotency_key=key)
                )
                answer = self._repeat(existing, req)
                if answer is not None:
                    return answer
                payment_id = existing["id"]  # an unfinished creation: take it over
        return await self._start(payment_id, routes, creation=True)

    def _new_row(self, payment_id: str, req: PaymentRequest, key: str) -> dict[str, Any]:
        """The columns of a new payment, as both creating statements take them."""
        return {
            "id": payment_id,
            "player_id": req.player_id,
            "amount": req.amount,
            "currency": req.currency,
            "method": req.method,
            "reference": req.reference,
            "metadata": req.metadata,
            "idempotency_key": key,
            "request_hash": req.digest(),
            "expires_at": datetime.now(UTC) + self.payment_ttl,
        }

    async def _check_kyc(self, conn: asyncpg.Connection, kind: str, req: PaymentRequest) -> None:
        """Refuse a method the player's KYC tier does not reach (422 method_unavailable)."""
        required = self.kyc_tiers.get(kind, {})
        need = required.get(req.method, required.get("*", 0))
        if need == 0:
            return
        tier = await conn.fetchval(*self.q.player_kyc_tier(player_id=req.player_id))
        if tier is not None and tier < need:
            raise MethodUnavailable(
                f"{kind}s by {req.method} need KYC tier {need}; the player has tier {tier}",
                field="method",
            )

    async def _check_deposit_limits(self, conn: asyncpg.Connection, req: PaymentRequest) -> None:
        for limit in await conn.fetch(*self.q.deposit_limits_in_force(player_id=req.player_id)):
            if limit["amount"] is None:
                continue
            used = await conn.fetchval(
                *self.q.deposits_in_window(player_id=req.player_id, period=limit["period"])
            )
            if used + req.amount > limit["amount"]:
                raise PlayerLimitExceeded(
                    f"the deposit would pass the player's {limit['period']} deposit limit "
                    f"({used} of {limit['amount']} used)"
                )

    async def _first_answer(
        self, kind: str, key: str, req: PaymentRequest
    ) -> dict[str, Any] | None:
        """A repeated key gets the first answer before any check runs again: the player's
        limits, KYC tier or the routes may have changed since, the answer has not."""
        async with self.pool.acquire() as conn:
            existing = await conn.fetchrow(*self.q.payment_by_key(kind=kind, idempotency_key=key))
        return None if existing is None else self._repeat(existing, req)

    def _repeat(self, existing: asyncpg.Record, req: PaymentRequest) -> dict[str, Any] | None:
        """The stored answer for a repeated key; None when the creation has none yet, and the
        caller takes it over (the start lease tells whether it still runs elsewhere)."""
        if bytes(existing["request_hash"]) != req.digest():
            raise IdempotencyConflict("Idempotency-Key was already used with another body")
        return _stored(existing["response"])

    # --- withdrawals ---------------------------------------------------------------------------

    async def create_withdrawal(self, req: PaymentRequest, key: str) -> dict[str, Any]:
        """Create a withdrawal, holding its funds at once; hold it for review or pay it out."""
        answer = await self._first_answer("withdrawal", key, req)
        if answer is not None:
            return answer
        routes = self._routes(req)
        payment_id = f"{ID_PREFIX['withdrawal']}_{secrets.token_hex(10)}"
        async with self.pool.acquire() as conn:
            await self._check_kyc(conn, "withdrawal", req)
            # One transaction from the hold to held-or-approved (and a held one's stored
            # answer): a retry racing this request never finds it half made.
            async with conn.transaction():
                row = await conn.fetchrow(
                    *self.q.create_withdrawal(**self._new_row(payment_id, req, key))
                )
                outcome = row["outcome"]
                if outcome == "ok":
                    await conn.execute(*self.q.operator_event(payment_id=payment_id))
                    if self._needs_review(req):
                        await conn.fetchval(
                            *self.q.transition(
                                id=payment_id,
                                to_status="held",
                                trigger="api",
                                detail={"reason": "review"},
                                failure_code=None,
                            )
                        )
                        return await self._finish(conn, payment_id)
                    await conn.fetchval(
                        *self.q.transition(
                            id=payment_id,
                            to_status="approved",
                            trigger="api",
                            detail=None,
                            failure_code=None,
                        )
                    )
            if outcome == "player_not_found":
                raise NotFound(f"player {req.player_id!r} not found")
            if outcome == "currency_mismatch":
                raise InvalidRequest(
                    "currency is not the player's wallet currency", field="currency"
                )
            if outcome == "insufficient_funds":
                raise InvalidRequest("the amount exceeds the player's balance", field="amount")
            if outcome in ("duplicate", "idempotency_conflict"):
                existing = await conn.fetchrow(*self.q.payment_by_id(id=row["payment_id"]))
                answer = self._repeat(existing, req)
                if answer is not None:
                    return answer
        return await self._start(row["payment_id"], routes, creation=True)

    def _needs_review(self, req: PaymentRequest) -> bool:
        threshold = self.review_threshold
        return threshold is not None and req.amount > threshold

    async def decide(self, payment_id: str, approve: bool, actor: Actor) -> dict[str, Any]:
        """An operator's audited decision on a held withdrawal."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(*self.q.payment_by_id(id=payment_id))
            if row is None or row["kind"] != "withdrawal":
                raise NotFound(f"withdrawal {payment_id!r} not found")
            target = "approved" if approve else "rejected"
            # Find a route before approving: an approval with nowhere to send the payout would
            # leave the funds held with nothing to move the withdrawal on.
            routes = self._routes(_request_of(row)) if approve else []
            # The decision and its audit entry commit together, before any payout starts.
            async with conn.transaction():
                moved = await conn.fetchval(
                    *self.q.transition(
                        id=payment_id,
                        to_status=target,
                        trigger="operator",
                        detail={"actor": actor.name},
                        failure_code=None,
                    )
                )
                if moved is None and approve and _startable(row) and row["psp"] is None:
                    # Approved before and never sent (the approving request died before its
                    # start): approving again sends it.
                    moved = "approved"
                if moved is None:
                    raise InvalidRequest(
                        f"a {row['status']} withdrawal cannot be {target}", field="status"
                    )
                await audit(
                    conn,
                    self.q,
                    actor,
                    "withdrawal.approve" if approve else "withdrawal.reject",
                    f"withdrawal:{payment_id}",
                    {"status": row["status"]},
                    {"status": moved},
                )
            if not approve:
                return view(await conn.fetchrow(*self.q.payment_by_id(id=payment_id)))
        return await self._start(payment_id, routes, creation=False)

    async def resolve(
        self, payment_id: str, outcome: str, reason: str, actor: Actor
    ) -> dict[str, Any]:
        """An operator's audited decision on a sent withdrawal whose PSP has not reported (after
        checking with that PSP): ``paid`` settles its hold, ``failed`` gives it back."""
        if outcome not in RESOLUTIONS:
            raise InvalidRequest(
                f"outcome must be one of {', '.join(RESOLUTIONS)}", field="outcome"
            )
        target = outcome
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(*self.q.payment_by_id(id=payment_id))
            if row is None or row["kind"] != "withdrawal":
                raise NotFound(f"withdrawal {payment_id!r} not found")
            if not await conn.fetchval(*self.q.lock_start_lease(payment_id=payment_id)):
                # A start is talking to the PSP right now: its answer comes first.
                raise InProgress(
                    "the withdrawal is being sent to its PSP right now; resolve it afterwards"
                )
            moved = None
            if row["status"] in RESOLVABLE:
                moved = await conn.fetchval(
                    *self.q.transition(
                        id=payment_id,
                        to_status=target,
                        trigger="operator",
                        detail={"actor": actor.name, "resolve": reason},
                        failure_code="resolved_failed" if target == "failed" else None,
                    ),
                )
            if moved is None:
                raise InvalidRequest(
                    f"a {row['status']} withdrawal cannot be resolved (only one sent to a PSP "
                    "and not final; approve or reject a held one)",
                    field="status",
                )
            await audit(
                conn,
                self.q,
                actor,
                "withdrawal.resolve",
                f"withdrawal:{payment_id}",
                {"status": row["status"], "attention": row["flagged"]},
                {"status": moved, "reason": reason},
            )
            return await self._finish(conn, payment_id)

    async def needing_attention(
        self, kind: str, size: int, after: list[Any] | None
    ) -> dict[str, Any]:
        """Payments of ``kind`` flagged for an operator (or held), newest first, cursor-paged."""
        at, last_id = (pagination.cursor_time(after[0]), str(after[1])) if after else (None, None)
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                *self.q.payments_needing_attention(
                    kind=kind, cursor_at=at, cursor_id=last_id, limit=size + 1
                )
            )
        return pagination.page(rows, size, lambda r: [r["created_at"].isoformat(), r["id"]], view)

    # --- the PSP leg ---------------------------------------------------------------------------

    def _routes(self, req: PaymentRequest) -> list[Psp]:
        country = req.metadata.get("country")
        routes = [p for p in self.psps if serves(p, req.currency, req.method, req.amount, country)]
        if not routes:
            raise MethodUnavailable(
                f"no payment route for method {req.method!r} in {req.currency}", field="method"
            )
        return routes

    @asynccontextmanager
    async def _lease(self, payment_id: str) -> AsyncIterator[asyncpg.Connection]:
        """A connection holding the payment's start lease; 409 while another start holds it."""
        async with self.pool.acquire() as conn:
            # Pooled connections are not reset on release (app.db): a lock this start may hold
            # must not stay with the connection. Whenever that is not known to be settled (the
            # answer to the lock was cut off, the unlock failed, this task was cancelled again
            # meanwhile), the connection is closed, which releases the lock with its session.
            held: bool | None = None  # None: asked, answer not had
            try:
                held = bool(await conn.fetchval(*self.q.try_start_lease(payment_id=payment_id)))
                if not held:
                    raise InProgress(IN_PROGRESS)
                yield conn
            finally:
                if held is not False:
                    try:
                        if held is None:
                            raise ConnectionError("the start lease's answer was cut off")
                        await conn.fetchval(*self.q.end_start_lease(payment_id=payment_id))
                    except BaseException as exc:  # noqa: BLE001 - re-raised unless an error
                        conn.terminate()
                        if not isinstance(exc, Exception):
                            raise

    async def _start(self, payment_id: str, routes: list[Psp], *, creation: bool) -> dict[str, Any]:
        """:meth:`_start_at`, in a span of its own when tracing (its PSP calls are its
        children)."""
        with tracing.span(
            "payments.start", {"wallet.payment_id": payment_id, "wallet.creation": creation}
        ):
            return await self._start_at(payment_id, routes, creation=creation)

    async def _start_at(
        self, payment_id: str, routes: list[Psp], *, creation: bool
    ) -> dict[str, Any]:
        """Initiate at the first route that answers, under the payment's start lease.

        Deposits fail over on any retryable error. A payout fails over only when the PSP
        provably did not take it (:attr:`PspError.not_sent`); after a timeout or a 5xx it is
        asked again at the same route under the same idempotency key, which gets the PSP's first
        answer if it acted, and if the outcome stays unknown the withdrawal stays approved with
        its funds held, flagged, and its 503 is the answer to its Idempotency-Key.
        """
        async with self._lease(payment_id) as conn:
            payment = dict(await conn.fetchrow(*self.q.payment_by_id(id=payment_id)))
            if not _startable(payment):
                # Another start got there first. A creation answers what that one answered,
                # or, while it has not, that it is in progress; an approval, where it stands.
                if not creation:
                    return view(payment)
                stored = _stored(payment["response"])
                if stored is None:
                    raise InProgress(IN_PROGRESS)
                return stored
            payout = payment["kind"] == "withdrawal"
            sent_before = payout and payment["psp"] is not None
            if sent_before:
                # Sent before and not answered (the worker died): only that PSP, ever.
                routes = [p for p in self.psps if p.name == payment["psp"]]
                if not routes:
                    await self._outcome_unknown(conn, payment, "its route is gone")
            answer: Initiated | None = None
            final: PspError | None = None
            used: Psp | None = None
            for psp in routes:
                breaker = self.breakers.setdefault(psp.name, Breaker())
                if not breaker.allow():
                    log.info("psp %s skipped for %s: its breaker is open", psp.name, payment_id)
                    continue
                if (
                    payout
                    and await conn.fetchval(*self.q.route_payout(id=payment_id, psp=psp.name))
                    is None
                ):
                    continue  # cannot happen under the lease: another route holds the payout
                try:
                    answer = await self._initiate(psp, payment)
                    breaker.record(ok=True)
                    used = psp
                    break
                except PspError as exc:
                    log.warning("psp %s refused %s: %s", psp.name, payment_id, exc.code)
                    breaker.record(ok=not exc.retryable)
                    if sent_before:
                        # An earlier request for this payout went out: no refusal of this one
                        # says what the PSP did with that (only an answer would).
                        await self._outcome_unknown(conn, payment, f"{psp.name}: {exc.code}")
                    if not exc.retryable:
                        final, used = exc, psp
                        break
                    if payout and not exc.not_sent:
                        await self._outcome_unknown(conn, payment, f"{psp.name}: {exc.code}")
                    if payout:
                        # This request provably never reached the PSP, and no earlier one went
                        # out: the payout is no one's yet.
                        await conn.execute(*self.q.unroute_payout(id=payment_id, psp=psp.name))
            if answer is not None and used is not None:
                await conn.execute(
                    *self.q.record_initiation(
                        id=payment_id,
                        psp=used.name,
                        psp_payment_id=answer.psp_payment_id,
                        redirect_url=answer.redirect_url,
                        deep_link=answer.deep_link,
                    ),
                )
                await self._follow(
                    conn, payment, answer.status, "psp_response", answer.failure_code
                )
            elif final is not None:
                await conn.fetchval(
                    *self.q.transition(
                        id=payment_id,
                        to_status="failed",
                        trigger="psp_response",
                        detail={"psp": used.name if used else None},
                        failure_code=final.code,
                    ),
                )
            else:
                if sent_before:
                    # Its PSP may have acted on the earlier request: never release the hold on
                    # a guess (its breaker was open, or it refused the connection this time).
                    await self._outcome_unknown(conn, payment, "its PSP could not be asked again")
                # Every route is degraded and none took the payment, so it ends here, releasing
                # a withdrawal's hold; the caller may try again later with a new key.
                await conn.fetchval(
                    *self.q.transition(
                        id=payment_id,
                        to_status="failed",
                        trigger="psp_response",
                        detail={"routes": [p.name for p in routes]},
                        failure_code="route_degraded",
                    ),
                )
                # The first answer was this error: a repeat of the key gets it again.
                await conn.execute(*self.q.store_response(id=payment_id, response=DEGRADED))
                raise RouteDegraded(DEGRADED_MESSAGE)
            return await self._finish(conn, payment_id)

    async def _outcome_unknown(
        self, conn: asyncpg.Connection, payment: dict[str, Any], why: str
    ) -> NoReturn:
        """Leave a payout whose PSP may have acted with that PSP: held, flagged, and answered
        (now and for every repeat of its key) with a 503 that says so."""
        message = (
            f"the PSP did not answer whether it accepted payout {payment['id']} ({why}); it "
            "stays approved with its funds held until the PSP reports or an operator resolves it"
        )
        await conn.execute(*self.q.flag_payment(id=payment["id"], flagged=OUTCOME_UNKNOWN))
        await conn.execute(
            *self.q.store_response(
                id=payment["id"], response={"error": "route_degraded", "message": message}
            )
        )
        raise RouteDegraded(message)

    async def _initiate(self, psp: Psp, payment: dict[str, Any]) -> Initiated:
        """One route's answer, asking again after a timeout (same idempotency key) with
        exponential backoff and jitter; other errors go back to the caller to fail over."""
        webhook_url = f"{self.webhook_base}/{psp.name}/webhook"
        attempt = 0
        while True:
            attempt += 1
            try:
                return await metered(
                    self.metrics,
                    psp.name,
                    "payout" if payment["kind"] == "withdrawal" else "start",
                    psp.initiate(payment, webhook_url),
                )
            except PspError as exc:
                if attempt > 1:
                    # The ask before this one may have been taken. This one's refusal (never
                    # sent, 429, even a 4xx such as "key in use") does not say what the PSP did
                    # with that: the outcome stays unknown, and nothing may go elsewhere or be
                    # failed on the strength of it.
                    raise PspError(exc.code, retryable=True, ambiguous=True) from None
                if not exc.ambiguous or attempt > self.same_route_retries:
                    raise
                log.info("psp %s timed out on %s; asking again", psp.name, payment["id"])
                await asyncio.sleep(retry_delay(attempt, exc.retry_after))

    async def _follow(
        self,
        conn: asyncpg.Connection,
        payment: dict[str, Any],
        psp_status: str,
        trigger: str,
        failure_code: str | None,
    ) -> str | None:
        """Move the payment to where the PSP says it is, if that edge is legal."""
        target = _target(payment["kind"], psp_status)
        if target is None:
            return None
        moved: str | None = await conn.fetchval(
            *self.q.transition(
                id=payment["id"],
                to_status=target,
                trigger=trigger,
                detail={"psp_status": psp_status},
                failure_code=failure_code,
            ),
        )
        return moved

    async def _finish(self, conn: asyncpg.Connection, payment_id: str) -> dict[str, Any]:
        """The payment's view, stored as the answer to its Idempotency-Key."""
        answer = view(await conn.fetchrow(*self.q.payment_by_id(id=payment_id)))
        await conn.execute(*self.q.store_response(id=payment_id, response=answer))
        return answer

    async def get(self, kind: str, payment_id: str) -> dict[str, Any]:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(*self.q.payment_by_id(id=payment_id))
        if row is None or row["kind"] != kind:
            raise NotFound(f"{kind} {payment_id!r} not found")
        return view(row)

    # --- polling and expiry --------------------------------------------------------------------

    async def poll_once(self, *, quiet_seconds: float = 60, batch: int = 100) -> dict[str, int]:
        """Ask the PSPs about open payments whose webhooks are late (or could not be verified),
        and expire deposits past their expiry that the PSP has not completed.

        The PSP is asked before a deposit expires: a payment it completed is credited, never
        expired. Moves go through the same state machine as webhooks, so a poll that races a
        webhook moves the payment once.
        """
        counts = {"checked": 0, "moved": 0, "expired": 0, "unreachable": 0}
        async with self.pool.acquire() as conn:
            due = await conn.fetch(
                *self.q.payments_to_poll(quiet_seconds=float(quiet_seconds), limit=batch)
            )
        for row in due:
            counts["checked"] += 1
            if row["kind"] == "withdrawal" and row["psp"] is None and _startable(row):
                # Approved and never sent: the request that approved it died before its start.
                with contextlib.suppress(WalletError):
                    await self._start(row["id"], self._routes(_request_of(row)), creation=False)
                    counts["moved"] += 1
                continue
            psp = next((p for p in self.psps if p.name == row["psp"]), None)
            psp_status = None
            found: tuple[str, str] | None = None
            try:
                if psp is not None and row["psp_payment_id"] is not None:
                    psp_status = await metered(
                        self.metrics, psp.name, "status", psp.status(row["psp_payment_id"])
                    )
                elif psp is not None and row["sent_at"] is not None:
                    # A payout whose answer was lost: ask that PSP by our reference.
                    found = await metered(self.metrics, psp.name, "find", psp.find(row["id"]))
                    psp_status = found[1] if found is not None else None
            except PspError as exc:
                log.warning("polling %s at %s failed: %s", row["id"], row["psp"], exc.code)
                counts["unreachable"] += 1
            async with self.pool.acquire() as conn:
                moved = None
                if found is not None:
                    await conn.execute(*self.q.found_at_psp(id=row["id"], psp_payment_id=found[0]))
                if psp_status is not None:
                    moved = await self._follow(conn, dict(row), psp_status, "psp_poll", None)
                expired = row["expires_at"] < datetime.now(UTC)
                if (
                    moved is None
                    and expired
                    and row["kind"] == "deposit"
                    and (psp_status not in ("succeeded", "pending", "processing"))
                ):
                    moved = await conn.fetchval(
                        *self.q.transition(
                            id=row["id"],
                            to_status="expired",
                            trigger="expiry",
                            detail={"psp_status": psp_status},
                            failure_code=None,
                        ),
                    )
                    counts["expired"] += moved is not None
                elif moved is not None:
                    counts["moved"] += 1
                if moved is not None:
                    await self._finish(conn, row["id"])
        return counts

    async def poll_forever(self, interval: float, quiet_seconds: float) -> None:
        """The polling job, run by the app's lifespan until it is cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                with tracing.span("payments.poll"):
                    counts = await self.poll_once(quiet_seconds=quiet_seconds)
            except CONNECTION_ERRORS as exc:
                log.warning("payments polling failed this round: %s", exc)
                continue
            if counts["checked"]:
                log.info("payments polled: %s", counts)

    # --- PSP webhooks --------------------------------------------------------------------------

    async def apply_webhook(self, psp_name: str, body: bytes, signature: str | None) -> str:
        """Verify and apply one PSP event; the outcome (for the PSP's and our logs).

        Raises :class:`signing.SignatureError` when the event cannot be trusted: then nothing
        changes, and the polling job asks the PSP for the truth instead.
        """
        psp = next((p for p in self.psps if p.name == psp_name), None)
        if psp is None:
            raise NotFound(f"unknown PSP {psp_name!r}")
        event = psp.parse_webhook(body, signature, now())
        async with self.pool.acquire() as conn, conn.transaction():
            # By our own reference: the event can overtake our record of the PSP's payment id.
            payment = await conn.fetchrow(*self.q.payment_by_id(id=event.reference))
            if payment is None or payment["psp"] not in (None, psp_name):
                # Not recorded as applied: the PSP retries, and a retry may find the payment.
                raise NotFound(f"no payment {event.reference!r} at {psp_name}")
            outcome = await self._apply(conn, payment, event)
            recorded = await conn.fetchval(
                *self.q.record_psp_event(
                    psp=psp_name,
                    event_id=event.event_id,
                    payment_id=payment["id"],
                    type=event.type,
                    outcome=outcome,
                ),
            )
            if recorded is None:
                # Seen before: undo whatever this delivery did, by rolling back.
                raise _AlreadyApplied
        return outcome

    async def _apply(
        self, conn: asyncpg.Connection, payment: asyncpg.Record, event: PspEvent
    ) -> str:
        mismatch = _mismatch(payment, event)
        if mismatch is not None:
            log.error("psp event %s refused for %s: %s", event.event_id, payment["id"], mismatch)
            await conn.execute(*self.q.flag_payment(id=payment["id"], flagged=mismatch))
            return f"refused_{mismatch}"
        moved = await self._follow(
            conn, dict(payment), event.status, "psp_webhook", event.failure_code
        )
        if moved is None:
            if payment["status"] == "expired" and event.status == "succeeded":
                # The player paid at the PSP after we gave up on the deposit: money we hold
                # and have not credited. Flag it for an operator (and reconciliation).
                await conn.execute(
                    *self.q.flag_payment(id=payment["id"], flagged=SUCCEEDED_AFTER_EXPIRY)
                )
                return f"refused_{SUCCEEDED_AFTER_EXPIRY}"
            if payment["status"] == "paid" and event.status == "failed":
                # Settled (by an earlier event, or an operator's resolve) and now reported
                # failed: the player was charged for a payout the PSP says it did not make.
                await conn.execute(
                    *self.q.flag_payment(id=payment["id"], flagged=FAILED_AFTER_PAID)
                )
                return f"refused_{FAILED_AFTER_PAID}"
            if payment["status"] in ("failed", "rejected") and event.status == "succeeded":
                # Paid out by the PSP after the hold went back to the player (an operator
                # resolved it as failed): money paid twice, for an operator to recover.
                await conn.execute(
                    *self.q.flag_payment(id=payment["id"], flagged=PAID_AFTER_RELEASE)
                )
                return f"refused_{PAID_AFTER_RELEASE}"
            return "ignored"  # out of order, or already final: the state machine decides
        await self._finish(conn, payment["id"])
        return f"moved_to_{moved}"


class _AlreadyApplied(Exception):
    """Raised inside the webhook transaction to roll back a repeated event's effects."""


def _mismatch(payment: asyncpg.Record, event: PspEvent) -> str | None:
    known = payment["psp_payment_id"]
    if known is not None and known != event.psp_payment_id:
        return "psp_payment_id_mismatch"
    if event.amount != payment["amount"]:
        return "amount_mismatch"
    if event.currency != payment["currency"]:
        return "currency_mismatch"
    return None


def _stored(response: dict[str, Any] | None) -> dict[str, Any] | None:
    """A creation's stored first answer: the payment's view, or its error raised again."""
    if response is not None and "error" in response:
        raise RouteDegraded(str(response.get("message", DEGRADED_MESSAGE)))
    return response


def _startable(payment: Mapping[str, Any]) -> bool:
    """Whether a start has anything left to do: not initiated at a PSP, and not decided."""
    if payment["psp_payment_id"] is not None or payment["flagged"] == OUTCOME_UNKNOWN:
        return False
    return bool(
        payment["status"] == ("awaiting_method" if payment["kind"] == "deposit" else "approved")
    )


# The wallet status each PSP status moves a payment to (absent: nothing to do).
TARGETS = {
    "deposit": {
        "pending": "processing",
        "succeeded": "succeeded",
        "failed": "failed",
        "processing": "processing",
    },
    "withdrawal": {
        "pending": "processing",
        "processing": "processing",
        "succeeded": "paid",
        "failed": "failed",
    },
}
# What the PSP webhook answers: the event moved the payment (to one of TARGETS' statuses), was
# applied before, changed nothing, or was refused as contradicting the payment.
WEBHOOK_OUTCOMES = (
    *(f"moved_to_{s}" for s in dict.fromkeys(t for m in TARGETS.values() for t in m.values())),
    "duplicate",
    "ignored",
    *(f"refused_{reason}" for reason in (*MISMATCHES, *CONTRADICTED)),
)


def _target(kind: str, psp_status: str) -> str | None:
    """The wallet status a PSP status leads to (None: nothing to do)."""
    return TARGETS["deposit" if kind == "deposit" else "withdrawal"].get(psp_status)


def _request_of(row: asyncpg.Record) -> PaymentRequest:
    return PaymentRequest(
        row["player_id"],
        row["amount"],
        row["currency"],
        row["method"],
        row["reference"],
        row["metadata"],
    )


async def apply_webhook_once(
    payments: Payments, psp: str, body: bytes, signature: str | None
) -> str:
    """:meth:`Payments.apply_webhook`, answering ``duplicate`` for an event applied before."""
    try:
        return await payments.apply_webhook(psp, body, signature)
    except _AlreadyApplied:
        return "duplicate"


__all__ = ["PaymentRequest", "Payments", "apply_webhook_once", "signing"]
