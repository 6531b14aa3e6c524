"""The circuit breaker per PSP route, alone and inside payments routing."""

from __future__ import annotations

import secrets

import asyncpg

from app.db import Queries
from app.payments.psp import PspError
from app.payments.routing import Breaker
from app.payments.service import PaymentRequest, Payments
from tests.conftest import Operator
from tests.test_payments import ScriptedPsp


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_opens_at_the_error_rate_and_probes_half_open() -> None:
    clock = Clock()
    breaker = Breaker(window=10, threshold=0.5, min_calls=4, cooldown=30, clock=clock)
    for ok in (True, False, False):
        assert breaker.allow()
        breaker.record(ok)
    assert breaker.state == "closed"  # 3 calls: below min_calls, no verdict yet
    assert breaker.allow()
    breaker.record(False)  # 3 of 4 failed
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 29
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow() and breaker.state == "half_open"
    assert not breaker.allow()  # one probe at a time
    breaker.record(False)
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 30
    assert breaker.allow()
    breaker.record(True)
    assert breaker.state == "closed" and breaker.allow()


def test_declines_do_not_open_it() -> None:
    breaker = Breaker(min_calls=2)
    for _ in range(10):
        assert breaker.allow()
        breaker.record(True)
    assert breaker.state == "closed"


async def test_an_open_route_is_skipped_until_its_probe(
    pool: asyncpg.Pool, operator: Operator
) -> None:
    failing = ScriptedPsp("psp-f", [PspError("http_503", retryable=True)] * 5)
    healthy = ScriptedPsp("psp-h")
    payments = Payments(pool, Queries.load(), [failing, healthy], webhook_base="https://w/v1")
    clock = Clock()
    payments.breakers["psp-f"] = Breaker(min_calls=3, threshold=0.5, cooldown=10, clock=clock)
    player = await operator.player()

    async def deposit() -> str:
        created = await payments.create_deposit(
            PaymentRequest(player, 100, "EUR", "card"), "br-" + secrets.token_hex(6)
        )
        psp: str = await pool.fetchval("SELECT psp FROM payments WHERE id = $1", created["id"])
        return psp

    assert [await deposit() for _ in range(3)] == ["psp-h"] * 3  # each failed over
    assert len(failing.calls) == 3 and payments.breakers["psp-f"].state == "open"
    assert await deposit() == "psp-h"
    assert len(failing.calls) == 3  # skipped: no wait on the failing route
    clock.now += 10
    failing.script = []  # it recovered
    assert await deposit() == "psp-f"  # the probe went through and closed the breaker
    assert payments.breakers["psp-f"].state == "closed"
