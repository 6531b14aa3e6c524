"""Operator adjustments under races and at the edge of BIGINT (issue 12, defects 5a and 7).

- One ``Idempotency-Key`` sent at once for adjustments of different players (or of one player):
  one effect, one 201, and every other answer 409 ``idempotency_conflict`` or the first answer
  again, never a 500.
- An adjustment that would take a balance past 2^63-1: 400 ``invalid_request`` naming
  ``amount``, nothing posted.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import asyncpg
import httpx
import pytest

from tests.fixtures.app import Operator

MAX_BIGINT = 2**63 - 1
TRIES = 5
RACERS = 6


async def adjust(
    operator: Operator, player_id: str, amount: int, key: str, reason: str = "race"
) -> httpx.Response:
    return await operator.http.post(
        f"/v1/players/{player_id}/adjustments",
        json={"amount": amount, "reason": reason},
        headers={**operator.headers, "idempotency-key": key},
    )


async def ledger_ok(operator: Operator) -> None:
    assert await operator.call("GET", "/v1/ledger/check", expect=200) == {"ok": True}


@pytest.mark.parametrize("same_player", [False, True], ids=["players", "one player"])
async def test_one_key_sent_at_once_has_one_effect(operator: Operator, same_player: bool) -> None:
    for _ in range(TRIES):
        if same_player:
            players = [await operator.player()] * RACERS
        else:
            players = [await operator.player() for _ in range(RACERS)]
        key = "race-" + secrets.token_hex(6)
        answers = await asyncio.gather(*(adjust(operator, p, 250, key) for p in players))
        statuses = sorted(a.status_code for a in answers)
        assert 500 not in statuses, [a.text for a in answers]
        assert statuses.count(201) == 1, statuses
        first = next(a.json() for a in answers if a.status_code == 201)
        for a in answers:
            if a.status_code == 409:
                assert not same_player
                assert a.json()["error"]["code"] == "idempotency_conflict"
            elif a.status_code == 200:
                assert a.json() == first  # the first answer again
            else:
                assert a.status_code == 201, a.text
        balances = [await operator.balance(p) for p in dict.fromkeys(players)]
        assert sorted(balances) == [0] * (len(balances) - 1) + [250]
        assert first["player_id"] in players
        assert await operator.balance(first["player_id"]) == 250
    await ledger_ok(operator)


@pytest.fixture
async def nearly_full(operator: Operator, pool: asyncpg.Pool) -> str:
    """A player 10 minor units below the largest balance BIGINT holds.

    No API call may credit that much at once, so the setup calls the database function the API
    calls, with the same effect: a balanced posting. The currency is the ISO 4217 test code, so
    no other test's sums meet a number this size.
    """
    player = await operator.player(currency="XTS")
    row = await pool.fetchrow(
        "SELECT * FROM wallet_adjust($1, $2, $3, $4, $5)",
        "setup-" + secrets.token_hex(6),
        player,
        MAX_BIGINT - 10,
        "test setup: a balance near the top",
        "test",
    )
    assert row is not None and row["reason"] == "ok"
    return player


async def test_a_credit_past_the_largest_balance_is_refused(
    operator: Operator, nearly_full: str
) -> None:
    for amount in (11, 10**15):
        answer = await adjust(operator, nearly_full, amount, secrets.token_hex(6))
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert (error["code"], error["field"]) == ("invalid_request", "amount")
        assert str(MAX_BIGINT) in error["message"]
    assert await operator.balance(nearly_full) == MAX_BIGINT - 10
    # Up to the very top is still a credit like any other.
    assert (await adjust(operator, nearly_full, 10, secrets.token_hex(6))).status_code == 201
    assert await operator.balance(nearly_full) == MAX_BIGINT
    refused = await adjust(operator, nearly_full, 1, secrets.token_hex(6))
    assert refused.status_code == 400, refused.text
    # A debit from there is fine.
    assert (await adjust(operator, nearly_full, -5, secrets.token_hex(6))).status_code == 201
    assert await operator.balance(nearly_full) == MAX_BIGINT - 5
    await ledger_ok(operator)


async def test_a_refused_overflow_keeps_its_key_free(operator: Operator, nearly_full: str) -> None:
    """Nothing was posted, so the same key may carry another body later (as a refusal for
    insufficient funds does)."""
    key = secrets.token_hex(6)
    assert (await adjust(operator, nearly_full, 50, key)).status_code == 400
    answer: Any = await adjust(operator, nearly_full, 5, key)
    assert answer.status_code == 201, answer.text
