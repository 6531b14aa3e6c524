"""The durable replay record (seamless_requests, sql/012): written with every delivery that
reaches the ledger, pruned once past the replay window, and taken over by a request_id reused
after it, as the contract's 10-minute window allows."""

from __future__ import annotations

from typing import Any

import asyncpg
from redis.asyncio import Redis

from app.config import Settings
from app.seamless import events
from app.seamless.outcome import Reason
from app.seamless.replay import replay_key
from tests.fixtures.app import Table


def seamless(asgi: Any) -> Any:
    return asgi.state["wallet"].seamless


async def records(pool: asyncpg.Pool, table: Table, request_id: str) -> list[dict[str, Any]]:
    """The delivery's replay records; each with the code its reason stands for (the record
    holds the reason only, sql/migrations/014)."""
    rows = await pool.fetch(
        "SELECT reason, created_at FROM seamless_requests WHERE provider = $1 AND request_id = $2",
        table.provider,
        request_id,
    )
    return [{**row, "code": Reason.named(row["reason"]).code} for row in rows]


async def age(pool: asyncpg.Pool, table: Table, request_id: str, seconds: int) -> None:
    await pool.execute(
        "UPDATE seamless_requests SET created_at = now() - make_interval(secs => $3)"
        " WHERE provider = $1 AND request_id = $2",
        table.provider,
        request_id,
        float(seconds),
    )


async def test_every_answered_delivery_is_recorded_refusals_included(
    table: Table, pool: asyncpg.Pool
) -> None:
    refused = table.client.event(
        "bet",
        player_id=table.player_id,
        session_token=table.token,
        round_id="r",
        game_id="g",
        amount=10**9,
        currency="EUR",
        transaction_id="big-bet-1",
    )
    answer = await table.client.send_event(refused)
    assert answer["code"] == "R4"
    assert [
        (r["code"], r["reason"]) for r in await records(pool, table, refused["request_id"])
    ] == [("R4", "insufficient_funds")]


async def test_records_past_the_window_are_pruned_and_the_rest_kept(
    table: Table, pool: asyncpg.Pool, asgi: Any
) -> None:
    old = table.client.event("balance", player_id=table.player_id)
    fresh = table.client.event("balance", player_id=table.player_id)
    for event in (old, fresh):
        assert (await table.client.send_event(event))["code"] == "R0"
    service = seamless(asgi)
    await age(pool, table, old["request_id"], service.replay_seconds + 5)
    assert await service.prune_requests(batch=1) >= 1  # bounded deletes, repeated until done
    assert await records(pool, table, old["request_id"]) == []
    assert len(await records(pool, table, fresh["request_id"])) == 1


async def test_a_request_id_reused_after_the_window_is_a_new_delivery(
    table: Table, pool: asyncpg.Pool, asgi: Any, settings: Settings
) -> None:
    """After the window (and once Redis, too, has let the id go), the id may carry another
    event: processed, and its record replaced, even before the pruning job has run."""
    first = table.client.event("balance", player_id=table.player_id)
    await table.client.send_event(first)
    await age(pool, table, first["request_id"], seamless(asgi).replay_seconds + 5)
    assert settings.redis_url is not None
    redis = Redis.from_url(settings.redis_url)
    try:
        await redis.delete(replay_key(table.provider, first["request_id"]))
    finally:
        await redis.aclose()
    later = await table.bet(100, request_id=first["request_id"])
    assert (later["code"], later["reason"]) == ("R0", "ok")
    rows = await records(pool, table, first["request_id"])
    assert [(r["code"], r["reason"]) for r in rows] == [("R0", "ok")]


async def test_a_record_written_before_replays_with_the_code_of_its_reason(
    table: Table, pool: asyncpg.Pool
) -> None:
    """A record left by an earlier delivery, written by the SQL of any version (the code column
    went in sql/migrations/014), is answered as it was: its reason and detail, and the R-code
    that the reason stands for. Nothing is posted again."""
    for reason, detail in (
        (Reason.INSUFFICIENT_FUNDS, None),
        (Reason.LIMIT_EXCEEDED, "the bet passes the daily wager limit"),
        (Reason.IDEMPOTENCY_CONFLICT, None),
    ):
        event = table.client.event(
            "bet",
            player_id=table.player_id,
            session_token=table.token,
            round_id="r-old",
            game_id="g",
            amount=10,
            currency="EUR",
            transaction_id="old-" + reason,
        )
        await pool.execute(
            "INSERT INTO seamless_requests (provider, request_id, event_hash, reason, detail,"
            " wallet_transaction_id, duplicate) VALUES ($1, $2, $3, $4, $5, NULL, false)",
            table.provider,
            event["request_id"],
            events.digest(events.parse(event)),
            reason.value,
            detail,
        )
        answer = await table.client.send_event(event)
        assert (answer["code"], answer["reason"], answer["message"]) == (
            reason.code,
            reason.value,
            detail or reason.message,
        )
        assert answer["balance"] == 10_000
    assert await table.operator.balance(table.player_id) == 10_000
