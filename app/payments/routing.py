"""A circuit breaker per PSP route.

A route whose recent calls mostly failed with retryable errors (timeouts, 5xx, 429, unreachable)
is skipped for a cool-down, so payments go straight to the next route instead of each waiting for
the failing one first. After the cool-down one call is let through as a probe (half-open): its
success closes the breaker, its failure opens it again. A final answer (a decline) counts as a
success: the route works, the payment was refused.

State is per process: each worker learns about a failing route from its own calls, which is
enough to stop sending it traffic within a handful of calls.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

BreakerState = Literal["closed", "half_open", "open"]
BREAKER_STATES: tuple[BreakerState, ...] = get_args(BreakerState)


@dataclass
class Breaker:
    """Closed (calls flow), open (calls skipped), half-open (one probe in flight)."""

    window: int = 20  # how many recent outcomes the error rate is measured over
    threshold: float = 0.5  # error rate at which the breaker opens
    min_calls: int = 5  # no verdict from fewer outcomes than this
    cooldown: float = 30.0  # seconds open before a probe is let through
    clock: Callable[[], float] = time.monotonic
    state: BreakerState = "closed"
    _outcomes: deque[bool] = field(default_factory=deque)
    _opened_at: float = 0.0
    _probing: bool = False

    def allow(self) -> bool:
        """May a call go to this route now? (Claims the probe when half-open.)"""
        if self.state == "closed":
            return True
        if self.state == "open" and self.clock() - self._opened_at >= self.cooldown:
            self.state = "half_open"
            self._probing = False
        if self.state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def record(self, ok: bool) -> None:
        """The outcome of a call that :meth:`allow` let through."""
        if self.state == "half_open":
            self._probing = False
            if ok:
                self.state = "closed"
                self._outcomes.clear()
            else:
                self._open()
            return
        self._outcomes.append(ok)
        while len(self._outcomes) > self.window:
            self._outcomes.popleft()
        failures = self._outcomes.count(False)
        if (
            len(self._outcomes) >= self.min_calls
            and failures / len(self._outcomes) >= self.threshold
        ):
            self._open()

    def _open(self) -> None:
        self.state = "open"
        self._opened_at = self.clock()
        self._outcomes.clear()


def serves(psp: Any, currency: str, method: str, amount: int, country: str | None) -> bool:
    """Do this route's rules take the payment? (currency, method, country, amount)"""
    return (
        currency in psp.currencies
        and method in psp.methods
        and (not psp.countries or country in psp.countries)
        and (psp.min_amount is None or amount >= psp.min_amount)
        and (psp.max_amount is None or amount <= psp.max_amount)
    )


def retry_delay(attempt: int, retry_after: float | None = None) -> float:
    """Seconds before asking the same route again: the PSP's Retry-After when it gave one (at
    most 2 s, a payment request is waiting), else exponential from 50 ms with jitter."""
    if retry_after is not None:
        return min(retry_after, 2.0)
    delay: float = 0.05 * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
    return min(delay, 2.0)
