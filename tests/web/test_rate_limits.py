"""Rate limits per provider (seamless events) and per operator API key, against real Redis.

Each test starts an app of its own with a small limit. Requests are sent right after a one-second
window begins, so that which of them are over the limit does not depend on timing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace

import httpx
import pytest

from app.client import ProviderClient
from app.config import Settings
from tests.fixtures.app import Operator, TableFactory, start_app
from tests.support.keys import ADMIN_KEY
from tests.web.test_openapi import check_response

LIMIT = 3


async def window_start() -> None:
    """Sleep until just after the next one-second window begins."""
    now = time.time()
    await asyncio.sleep(1 - (now - int(now)) + 0.02)


@pytest.fixture
async def limited(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An app with LIMIT events per second per provider and LIMIT requests per second per key."""
    limits = replace(settings, rate_limit_provider=LIMIT, rate_limit_api_key=LIMIT)
    async with AsyncExitStack() as stack:
        app = await start_app(limits, stack)
        transport = httpx.ASGITransport(app=app)
        client = httpx.AsyncClient(transport=transport, base_url="http://limited.test")
        yield await stack.enter_async_context(client)


def client_of(table_provider: str, key: str, http: httpx.AsyncClient) -> ProviderClient:
    return ProviderClient("http://limited.test", table_provider, key, http=http)


async def test_provider_over_its_limit_gets_retryable_r1_and_nothing_moves(
    table_factory: TableFactory, operator: Operator, limited: httpx.AsyncClient
) -> None:
    table = await table_factory(balance=1000)
    client = ProviderClient("http://limited.test", table.provider, table.client.key, http=limited)
    await window_start()
    answers = [await client.send("balance", player_id=table.player_id) for _ in range(LIMIT)]
    assert [a["code"] for a in answers] == ["R0"] * LIMIT

    bet = client.event(
        "bet",
        player_id=table.player_id,
        session_token=table.token,
        transaction_id="rl-bet-1",
        round_id="r1",
        game_id="slot-1",
        amount=100,
        currency="EUR",
    )
    refused = await client.send_event(bet)
    assert refused["code"] == "R1" and refused["reason"] == "internal_error"
    assert "per second from this provider" in refused["message"]
    assert refused["balance"] == 1000  # the player exists: the answer carries the balance
    assert await operator.balance(table.player_id) == 1000

    # The refused delivery was not kept as in progress: the same bytes go through once the
    # next window begins, and the bet is posted exactly once.
    await window_start()
    posted = await client.send_event(bet)
    assert posted["code"] == "R0" and posted["balance"] == 900
    assert (await client.send_event(bet))["transaction_id"] == posted["transaction_id"]
    assert await operator.balance(table.player_id) == 900


async def test_only_authenticated_events_count_and_providers_are_apart(
    table_factory: TableFactory, limited: httpx.AsyncClient
) -> None:
    mine, other = await table_factory(), await table_factory()
    client = ProviderClient("http://limited.test", mine.provider, mine.client.key, http=limited)
    other_client = ProviderClient(
        "http://limited.test", other.provider, other.client.key, http=limited
    )
    await window_start()
    for _ in range(3 * LIMIT):  # junk in the provider's name: refused R2, never counted
        junk = await limited.post(f"/v1/seamless/{mine.provider}", content=b'{"payload": "AAAA"}')
        assert junk.json()["code"] == "R2"
    answers = [await client.send("balance", player_id=mine.player_id) for _ in range(LIMIT + 1)]
    assert [a["code"] for a in answers] == ["R0"] * LIMIT + ["R1"]
    # Another provider has a budget of its own.
    assert (await other_client.send("balance", player_id=other.player_id))["code"] == "R0"


async def test_api_key_over_its_limit_gets_429_with_retry_after(
    operator: Operator, limited: httpx.AsyncClient
) -> None:
    player_id = await operator.player(500)
    created = await operator.call("POST", "/v1/api-keys", {"role": "support", "name": "rl"})
    support = {"Authorization": f"Bearer {created['key']}"}
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}

    await window_start()
    statuses = [
        (await limited.get(f"/v1/players/{player_id}", headers=support)).status_code
        for _ in range(LIMIT)
    ]
    assert statuses == [200] * LIMIT
    over = await limited.get(f"/v1/players/{player_id}", headers=support)
    assert over.status_code == 429
    assert over.json()["error"]["code"] == "rate_limited"
    assert int(over.headers["Retry-After"]) == 1
    check_response(over, "GET", "/v1/players/{player_id}")  # as /openapi.json documents it

    # Another key is not affected, and a wrong key is refused without being counted to anyone.
    assert (await limited.get(f"/v1/players/{player_id}", headers=admin)).status_code == 200
    wrong = await limited.get(f"/v1/players/{player_id}", headers={"Authorization": "Bearer x"})
    assert wrong.status_code == 401

    await window_start()
    again = await limited.get(f"/v1/players/{player_id}", headers=support)
    assert again.status_code == 200
