"""Edge cases found in review: cross-player races on one transaction id, cancel ordering,
replay-claim clean-up, balances on refusals, and the rules' less travelled corners."""

from __future__ import annotations

import asyncio
import secrets
import time
from contextlib import AsyncExitStack
from dataclasses import replace

import asyncpg
import httpx
import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from app.client import ProviderClient, seal_event
from app.config import Settings
from app.db import Queries
from app.locks import lock_key
from app.seamless import envelope
from app.seamless.keys import KeyRing
from app.seamless.outcome import Reason
from app.secrets import token_hash
from tests.fixtures.app import Operator, Table, TableFactory, start_app


def txn(prefix: str = "t") -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


async def two_players(table_factory: TableFactory, operator: Operator) -> tuple[Table, Table]:
    """Two funded players at one provider, each with a live session."""
    a = await table_factory()
    b = await table_factory()
    b.client, b.provider = a.client, a.provider
    b.token = await operator.session(b.player_id, a.provider)
    return a, b


async def test_cancel_under_another_player_waits_for_the_bet(
    table_factory: TableFactory, operator: Operator, pool: asyncpg.Pool
) -> None:
    """A's bet X is uncommitted when a cancel of X arrives under player B: the cancel waits, then
    sees A's bet and refuses; A's own cancel still refunds."""
    a, b = await two_players(table_factory, operator)
    x = txn("x")
    async with pool.acquire() as conn:
        open_tx = conn.transaction()
        await open_tx.start()
        bet = await conn.fetchrow(
            "SELECT * FROM seamless_bet($1, $2, $3, 'r1', 'g', 500, 'EUR', $4, 'q1')",
            a.provider,
            a.player_id,
            x,
            token_hash(a.token),
        )
        assert Reason.named(bet["reason"]).code == "R0"
        cancel = asyncio.create_task(b.cancel(x, round_id="r1"))
        await asyncio.sleep(0.3)
        assert not cancel.done(), "the cancel must wait for the bet naming the same id"
        await open_tx.commit()
    refused = await cancel
    assert (refused["code"], refused["reason"]) == ("R1", "transaction_not_found")
    refund = await a.cancel(x, round_id="r1")
    assert refund["code"] == "R0" and "duplicate" not in refund
    assert await a.balance() == 10_000


async def test_same_transaction_id_while_the_first_is_uncommitted(
    table_factory: TableFactory, operator: Operator, pool: asyncpg.Pool
) -> None:
    """Player B reuses A's uncommitted transaction id: B waits on the unique key, then gets
    idempotency_conflict from the committed row (the service's one retry)."""
    a, b = await two_players(table_factory, operator)
    x = txn("x")
    async with pool.acquire() as conn:
        open_tx = conn.transaction()
        await open_tx.start()
        await conn.fetchrow(
            "SELECT * FROM seamless_bet($1, $2, $3, 'r1', 'g', 500, 'EUR', $4, 'q1')",
            a.provider,
            a.player_id,
            x,
            token_hash(a.token),
        )
        second = asyncio.create_task(b.bet(100, txn=x, round_id="r1"))
        await asyncio.sleep(0.3)
        assert not second.done()
        await open_tx.commit()
    answer = await second
    assert (answer["code"], answer["reason"]) == ("R3", "idempotency_conflict")
    assert await b.balance() == 10_000 and await a.balance() == 9_500


async def test_cancel_checks_the_bet_before_calling_it_a_duplicate(
    table_factory: TableFactory, operator: Operator
) -> None:
    a, b = await two_players(table_factory, operator)
    x = txn("x")
    await a.bet(100, txn=x, round_id="r1")
    await a.cancel(x, round_id="r1")
    assert (await b.cancel(x, round_id="r1"))["reason"] == "transaction_not_found"
    assert (await a.cancel(x, round_id="other"))["reason"] == "transaction_not_found"
    assert (await a.cancel(x, round_id="r1", amount=999))["reason"] == "invalid_field"
    assert (await a.cancel(x, round_id="r1", amount=100))["duplicate"] is True


async def test_cancel_remembered_for_another_player(
    table_factory: TableFactory, operator: Operator
) -> None:
    a, b = await two_players(table_factory, operator)
    x = txn("x")
    assert (await b.cancel(x, round_id="r1"))["code"] == "R0"
    assert (await a.bet(100, txn=x, round_id="r1"))["reason"] == "transaction_cancelled"
    assert (await a.cancel(x, round_id="r1"))["reason"] == "transaction_not_found"
    assert (await b.cancel(x, round_id="r1"))["duplicate"] is True


async def test_result_change_of_another_players_result(
    table_factory: TableFactory, operator: Operator
) -> None:
    a, b = await two_players(table_factory, operator)
    r = txn("r")
    await a.result(100, txn=r, round_id="r1")
    answer = await b.result_change(r, 0, round_id="r1", txn=txn())
    assert (answer["code"], answer["reason"]) == ("R1", "transaction_not_found")
    assert await a.balance() == 10_100


async def test_bet_resent_after_its_cancel_is_transaction_cancelled(table: Table) -> None:
    x = txn("x")
    await table.bet(100, txn=x)
    await table.cancel(x)
    again = await table.bet(100, txn=x)
    assert (again["code"], again["reason"]) == ("R1", "transaction_cancelled")
    assert again["balance"] == 10_000
    # A changed resend is still a conflict first.
    assert (await table.bet(101, txn=x))["reason"] == "idempotency_conflict"


async def test_round_whose_only_bet_was_cancelled_unseen(table: Table) -> None:
    assert (await table.cancel(txn("x"), round_id="tomb"))["code"] == "R0"
    answer = await table.result(700, round_id="tomb")
    assert (answer["code"], answer["reason"]) == ("R1", "round_cancelled")
    assert await table.balance() == 10_000


async def test_round_closed_flag_is_not_part_of_a_results_identity(table: Table) -> None:
    r = txn("r")
    await table.result(10, txn=r, round_id="o", round_closed=False)
    again = await table.result(10, txn=r, round_id="o", round_closed=True)
    assert again["duplicate"] is True
    assert (await table.bet(5, round_id="o"))["code"] == "R0"  # the round stayed open


async def test_duplicate_stays_r0_after_logout_and_block(table: Table) -> None:
    x = txn("x")
    first = await table.bet(100, txn=x)
    await table.client.send("logout", player_id=table.player_id, session_token=table.token)
    await table.operator.call(
        "PUT", f"/v1/players/{table.player_id}/status", {"status": "blocked"}, expect=200
    )
    again = await table.bet(100, txn=x)
    assert again["code"] == "R0" and again["duplicate"] is True
    assert again["transaction_id"] == first["transaction_id"]


async def test_bet_needs_this_players_session_at_this_provider(
    table_factory: TableFactory, operator: Operator
) -> None:
    a, b = await two_players(table_factory, operator)
    assert (await a.bet(100, session_token=b.token))["reason"] == "invalid_session"
    other_provider = (await operator.provider())["code"]
    token = await operator.session(a.player_id, other_provider)
    assert (await a.bet(100, session_token=token))["reason"] == "invalid_session"
    assert await a.balance() == 10_000


async def test_balance_of_blocked_player(table: Table) -> None:
    await table.operator.call(
        "PUT", f"/v1/players/{table.player_id}/status", {"status": "blocked"}, expect=200
    )
    answer = await table.client.send("balance", player_id=table.player_id)
    assert answer["code"] == "R0" and answer["balance"] == 10_000


async def test_refusals_after_decryption_carry_the_balance(table: Table) -> None:
    answer = await table.bet("lots")  # type: ignore[arg-type]
    assert (answer["code"], answer["reason"]) == ("R3", "invalid_field")
    assert answer["player_id"] == table.player_id and answer["balance"] == 10_000
    assert answer["currency"] == "EUR"


async def test_freshness_boundary_is_inclusive(table: Table) -> None:
    for skew in (-299, 299):
        event = table.client.event("balance", player_id=table.player_id)
        event["timestamp"] = int(time.time()) + skew
        assert (await table.client.send_event(event))["code"] == "R0"


async def test_request_id_reused_with_another_event_is_a_conflict(table: Table) -> None:
    """Contract 1 [1.1]: a request_id sent again with a different event is R3
    idempotency_conflict and nothing is processed; it used to get the first event's answer."""
    first = table.client.event("balance", player_id=table.player_id)
    await table.client.send_event(first)
    reuse = table.client.event(
        "bet",
        player_id=table.player_id,
        session_token=table.token,
        transaction_id=txn(),
        round_id="r",
        game_id="g",
        amount=100,
        currency="EUR",
    )
    reuse["request_id"] = first["request_id"]
    answer = await table.client.send_event(reuse)
    assert (answer["code"], answer["reason"]) == ("R3", "idempotency_conflict")
    assert answer["balance"] == 10_000 and "transaction_id" not in answer
    assert await table.balance() == 10_000


async def test_unknown_key_id_is_bad_signature(table: Table, http: httpx.AsyncClient) -> None:
    client = ProviderClient("", table.provider, table.client.key, key_id="k_unknown", http=http)
    answer = await client.send("balance", player_id=table.player_id)
    assert (answer["code"], answer["reason"]) == ("R2", "bad_signature")


async def test_replay_window_ends(settings: Settings, table: Table) -> None:
    """After the replay window the same request_id is processed again; money stays idempotent."""
    async with AsyncExitStack() as stack:
        app = await start_app(replace(settings, replay_seconds=1), stack)
        http = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://w")
        )
        client = ProviderClient("", table.provider, table.client.key, http=http)
        event = client.event(
            "bet",
            player_id=table.player_id,
            session_token=table.token,
            transaction_id=txn(),
            round_id="r",
            game_id="g",
            amount=100,
            currency="EUR",
        )
        first = await client.send_event(event)
        assert "duplicate" not in first
        await asyncio.sleep(1.2)
        again = await client.send_event(event)
    assert again["duplicate"] is True and again["transaction_id"] == first["transaction_id"]
    assert await table.balance() == 9_900


async def test_redis_failing_after_the_claim_leaves_the_request_retryable(
    table: Table, asgi: object, settings: Settings
) -> None:
    locks = asgi.state["wallet"].seamless.gate.locks  # type: ignore[attr-defined]
    assert settings.redis_url is not None
    redis = Redis.from_url(settings.redis_url)
    await redis.set(lock_key(table.player_id), "someone-else", px=2000)

    async def failing_wait(player_id: str, token: str) -> bool:
        raise RedisConnectionError("connection dropped")

    event = table.client.event(
        "bet",
        player_id=table.player_id,
        session_token=table.token,
        transaction_id=txn(),
        round_id="r",
        game_id="g",
        amount=100,
        currency="EUR",
    )
    locks.wait = failing_wait
    try:
        first = await table.client.send_event(event)
    finally:
        del locks.wait
        await redis.delete(lock_key(table.player_id))
        await redis.aclose()
    assert (first["code"], first["reason"]) == ("R1", "internal_error")
    again = await table.client.send_event(event)  # identical bytes, Redis healthy again
    assert again["code"] == "R0" and again["balance"] == 9_900


@pytest.mark.parametrize(
    "plaintext",
    [
        b'{"event":"balance","request_id":"e1","timestamp":18446744073709551615,"player_id":"p"}',
        b'{"event":"balance","request_id":"e2","timestamp":-9223372036854775808,"player_id":"p"}',
        b'{"event":"balance","request_id":"e3","timestamp":1e400,"player_id":"p"}',
        b'{"event":"bet","amount":NaN}',
        b"",
    ],
)
async def test_extreme_values_are_contract_errors(table: Table, plaintext: bytes) -> None:
    body = orjson.dumps({"payload": envelope.seal(table.client.key, table.provider, plaintext)})
    answer = await table.client.post(body)
    assert answer["code"] in ("R2", "R3"), answer


async def test_key_cache_is_bounded(pool: asyncpg.Pool) -> None:
    ring = KeyRing(pool, Queries.load(), ttl=60, max_entries=3)
    for i in range(10):
        assert await ring.keys(f"nobody-{i}") == ()
    assert len(ring._cache) == 3


async def test_identical_bytes_replayed_by_someone_else_move_nothing(table: Table) -> None:
    event = table.client.event(
        "bet",
        player_id=table.player_id,
        session_token=table.token,
        transaction_id=txn(),
        round_id="r",
        game_id="g",
        amount=100,
        currency="EUR",
    )
    body = seal_event(table.client.key, table.provider, event)
    answers = [await table.client.post(body) for _ in range(3)]
    assert answers[0] == answers[1] == answers[2]
    assert await table.balance() == 9_900
