"""Counting and timing the calls to PSP routes (``wallet_psp_calls_total``,
``wallet_psp_call_seconds``).

Each call is one request to one route, a retry under the same idempotency key included. Its
outcome is one of :data:`PSP_OUTCOMES`: ``ok`` (answered), ``declined`` (a final
refusal: a decline or another 4xx), ``timeout`` (no answer in time: the PSP may have acted) and
``error`` (unreachable, 5xx, 429, a connection lost, an answer not as documented, or a bug).

The operation is what the wallet asked: ``start`` (a deposit), ``payout``, ``status`` and
``find`` (the poller), ``settlement_report`` (reconciliation): :data:`PSP_OPERATIONS`, which
the callers name and :mod:`app.metrics` documents.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Literal, TypeVar, get_args

from app.payments.psp import PspError

if TYPE_CHECKING:  # app.metrics reads the two lists below
    from app.metrics import Metrics

T = TypeVar("T")

PspOperation = Literal["start", "payout", "status", "find", "settlement_report"]
PSP_OPERATIONS: tuple[PspOperation, ...] = get_args(PspOperation)
PspOutcome = Literal["ok", "declined", "timeout", "error"]
PSP_OUTCOMES: tuple[PspOutcome, ...] = get_args(PspOutcome)


def outcome_of(error: Exception | None) -> PspOutcome:
    """The outcome of a call that raised ``error`` (None: it answered)."""
    if error is None:
        return "ok"
    if isinstance(error, PspError):
        if error.code == "timeout":
            return "timeout"
        return "error" if error.retryable else "declined"
    return "error"


async def metered(
    metrics: Metrics | None, route: str, operation: PspOperation, call: Awaitable[T]
) -> T:
    """``await call``, counted under ``route`` and ``operation``; errors go on to the caller."""
    if metrics is None:
        return await call
    started = time.perf_counter()
    try:
        result = await call
    except Exception as exc:
        metrics.psp_call(route, operation, outcome_of(exc), time.perf_counter() - started)
        raise
    metrics.psp_call(route, operation, "ok", time.perf_counter() - started)
    return result
