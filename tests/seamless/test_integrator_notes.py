"""What docs/seamless.md tells integrators who write their own client (issue 14, item 7), each
point as the wallet does it: envelope leniency, request_id scope, replay balances, several
sessions, a correction that changes nothing, and how a never-posted cancel is listed."""

from __future__ import annotations

import secrets
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from app.client import ProviderClient, seal_event
from tests.fixtures.app import Operator, Table


def txn(prefix: str = "t") -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


async def transactions(table: Table) -> list[dict[str, Any]]:
    page = await table.operator.call(
        "GET", f"/v1/players/{table.player_id}/transactions?limit=50", expect=200
    )
    return page["data"]  # type: ignore[no-any-return]


async def posting(table: Table, transaction_id: str) -> dict[str, Any]:
    (row,) = [t for t in await transactions(table) if t["transaction_id"] == transaction_id]
    return row


# --- the envelope ----------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "application/json", "text/plain"])
async def test_extra_wrapper_members_and_any_content_type_are_accepted(
    table: Table, http: httpx.AsyncClient, content_type: str | None
) -> None:
    event = table.client.event("balance", player_id=table.player_id)
    wrapper = orjson.loads(seal_event(table.client.key, table.provider, event))
    body = orjson.dumps({"version": 2, **wrapper, "meta": {"sent_by": "x"}})
    headers = {"content-type": content_type} if content_type else {}
    response = await http.post(f"/v1/seamless/{table.provider}", content=body, headers=headers)
    answer = await ProviderClient("", table.provider, table.client.key, http=http).post(body)
    assert response.headers["content-type"] == "application/json"
    assert "payload" in response.json()
    assert (answer["code"], answer["balance"]) == ("R0", 10_000)


async def test_wrapped_base64_and_a_repeated_payload_key_are_bad_signature(
    table: Table, http: httpx.AsyncClient
) -> None:
    event = table.client.event("balance", player_id=table.player_id)
    payload = orjson.loads(seal_event(table.client.key, table.provider, event))["payload"]
    line_broken = orjson.dumps({"payload": payload[:40] + "\n" + payload[40:]})
    repeated = b'{"payload": "%s", "payload": "%s"}' % (payload.encode(), payload.encode())
    for body in (line_broken, repeated):
        response = await http.post(f"/v1/seamless/{table.provider}", content=body)
        answer = response.json()
        assert (answer["code"], answer["reason"]) == ("R2", "bad_signature"), answer


# --- request_id and replays ------------------------------------------------------------------


async def test_request_id_is_unique_per_provider_across_players(
    table: Table, operator: Operator, http: httpx.AsyncClient
) -> None:
    other_player = await operator.player(500)
    await operator.session(other_player, table.provider)
    first = table.client.event("balance", player_id=table.player_id)
    assert (await table.client.send_event(first))["code"] == "R0"
    same_id = {**first, "player_id": other_player}
    answer = await table.client.send_event(same_id)
    assert (answer["code"], answer["reason"]) == ("R3", "idempotency_conflict")
    # Another provider's request ids are its own.
    provider = await operator.provider()
    await operator.session(table.player_id, provider["code"])
    elsewhere = ProviderClient("", provider["code"], provider["keys"][0]["key"], http=http)
    assert (await elsewhere.send_event(first))["code"] == "R0"


async def test_a_replay_answers_with_the_balance_of_the_first_delivery(table: Table) -> None:
    event = table.client.event(
        "bet",
        player_id=table.player_id,
        session_token=table.token,
        transaction_id=txn("b"),
        round_id="r-1",
        game_id="slot-7",
        amount=100,
        currency="EUR",
    )
    body = seal_event(table.client.key, table.provider, event)
    first = await table.client.post(body)
    assert first["balance"] == 9_900
    await table.bet(400, round_id="r-2")  # the balance moves on: 9_500
    assert await table.client.post(body) == first  # the same bytes again
    resealed = await table.client.send_event({**event, "timestamp": event["timestamp"] + 1})
    assert resealed == first
    assert await table.balance() == 9_500


# --- sessions --------------------------------------------------------------------------------


async def test_a_player_may_hold_several_live_sessions(
    table: Table, operator: Operator, http: httpx.AsyncClient
) -> None:
    second = await operator.session(table.player_id, table.provider, game_id="other-game")
    provider = await operator.provider()
    elsewhere = ProviderClient("", provider["code"], provider["keys"][0]["key"], http=http)
    third = await operator.session(table.player_id, provider["code"])
    # The session's game_id is not checked: the first token (issued for slot-1) bets on slot-7.
    assert (await table.bet(10, session_token=table.token, game_id="slot-7"))["code"] == "R0"
    assert (await table.bet(10, session_token=second))["code"] == "R0"
    login = await elsewhere.send("login", player_id=table.player_id, session_token=third)
    assert login["code"] == "R0"
    logout = await table.client.send("logout", player_id=table.player_id, session_token=second)
    assert logout["code"] == "R0"
    ended = await table.bet(10, session_token=second)
    assert (ended["code"], ended["reason"]) == ("R2", "invalid_session")
    assert (await table.bet(10, session_token=table.token))["code"] == "R0"
    assert await table.balance() == 9_970


# --- postings that move nothing --------------------------------------------------------------


async def test_a_correction_to_the_same_total_is_posted_with_delta_zero(table: Table) -> None:
    result = txn("w")
    await table.result(500, txn=result, round_id="rc")  # 10_500
    fields = dict(
        player_id=table.player_id,
        transaction_id=txn("fix"),
        ref_transaction_id=result,
        round_id="rc",
        amount=500,
        currency="EUR",
    )
    answer = await table.client.send("result_change", **fields)
    assert (answer["code"], answer["balance"]) == ("R0", 10_500)
    assert answer["transaction_id"].isdigit() and "duplicate" not in answer
    row = await posting(table, str(fields["transaction_id"]))
    assert (row["kind"], row["amount"], row["delta"]) == ("result_change", 500, 0)
    again = await table.client.send("result_change", **fields)
    assert again["duplicate"] is True and again["transaction_id"] == answer["transaction_id"]


async def test_a_cancel_of_a_bet_never_posted_is_recorded_with_the_amount_it_sent(
    table: Table, pool: asyncpg.Pool
) -> None:
    without, with_amount = txn("c"), txn("c")
    first = await table.cancel(txn("never"), round_id="r-0", txn=without)
    second = await table.cancel(txn("never"), round_id="r-0", txn=with_amount, amount=70)
    assert first["code"] == second["code"] == "R0" and first["transaction_id"].isdigit()
    assert await table.balance() == 10_000
    rows = {
        r["external_id"]: (r["kind"], r["amount"], r["delta"])
        for r in await pool.fetch(
            "SELECT external_id, kind, amount, delta FROM ledger_transactions WHERE source = $1",
            table.provider,
        )
    }
    assert rows == {without: ("cancel", None, 0), with_amount: ("cancel", 70, 0)}


async def test_the_players_transactions_list_a_cancel_sent_without_amount(table: Table) -> None:
    cancel = txn("c")
    assert (await table.cancel(txn("never"), round_id="r-0", txn=cancel))["code"] == "R0"
    row = await posting(table, cancel)
    assert (row["kind"], row["amount"], row["delta"]) == ("cancel", None, 0)
