"""The circuit breaker per PSP route, alone and inside payments routing."""

from __future__ import annotations

import secrets

import asyncpg

from app.db import Queries
from app.payments.psp import PspError
from app.payments.routing import Breaker
from app.payments.service import PaymentRequest, Payments
from tests.fixtures.app import Operator
from tests.payments.psps import ScriptedPsp


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


async def test_routes_follow_currency_method_country_and_amount_rules(
    pool: asyncpg.Pool, operator: Operator
) -> None:
    from app.web.errors import MethodUnavailable

    india = ScriptedPsp("psp-in", countries=frozenset({"IN"}), max_amount=10_000)
    large = ScriptedPsp("psp-large", min_amount=10_001)
    anywhere = ScriptedPsp("psp-any", max_amount=50_000)
    payments = Payments(pool, Queries.load(), [india, large, anywhere], webhook_base="https://w/v1")
    player = await operator.player()

    async def route_of(amount: int, country: str | None) -> str:
        metadata = {"country": country} if country else {}
        created = await payments.create_deposit(
            PaymentRequest(player, amount, "EUR", "card", metadata=metadata),
            "rule-" + secrets.token_hex(6),
        )
        psp: str = await pool.fetchval("SELECT psp FROM payments WHERE id = $1", created["id"])
        return psp

    assert await route_of(5_000, "IN") == "psp-in"
    assert await route_of(5_000, "DE") == "psp-any"
    assert await route_of(5_000, None) == "psp-any"
    assert await route_of(20_000, "IN") == "psp-large"
    india.methods = frozenset({"upi"})
    large.max_amount = 60_000
    payments.psps = [india, large]
    try:
        await route_of(5_000, "DE")
    except MethodUnavailable:
        pass
    else:
        raise AssertionError("no route takes a small card deposit from DE")


def test_retry_delay_backs_off_with_jitter_and_honours_retry_after() -> None:
    from app.payments.routing import retry_delay

    first = [retry_delay(1) for _ in range(50)]
    third = [retry_delay(3) for _ in range(50)]
    assert all(0.025 <= d <= 0.075 for d in first) and len(set(first)) > 1
    assert all(0.1 <= d <= 0.3 for d in third)
    assert retry_delay(1, retry_after=1.0) == 1.0 and retry_delay(1, retry_after=30) == 2.0
