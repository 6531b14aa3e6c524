"""The envelope, authentication, sessions, freshness, replay and bad input of section 1."""

from __future__ import annotations

import base64
import os
import secrets
import time

import httpx
import orjson
import pytest

from app import aead
from app.client import ProviderClient, open_answer, seal_event
from app.seamless import envelope
from tests.fixtures.app import Operator, Table


async def raw_post(
    http: httpx.AsyncClient, provider: str, body: bytes, headers: dict[str, str] | None = None
) -> httpx.Response:
    response = await http.post(f"/v1/seamless/{provider}", content=body, headers=headers or {})
    assert response.status_code == 200, response.text
    return response


def plain(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert "payload" not in body, "R2 answers are sent in plain JSON"
    return body  # type: ignore[no-any-return]


# --- envelope and keys -----------------------------------------------------------------------


async def test_answers_are_encrypted_with_fresh_nonce(
    table: Table, http: httpx.AsyncClient
) -> None:
    event = table.client.event("balance", player_id=table.player_id)
    body = seal_event(table.client.key, table.provider, event)
    first = await raw_post(http, table.provider, body)
    payload = first.json()["payload"]
    raw = base64.b64decode(payload)
    assert len(raw) > aead.NONCE_BYTES + aead.TAG_BYTES
    answer = open_answer(table.client.key, table.provider, first.content)
    assert answer["code"] == "R0" and answer["balance"] == 10_000
    second = table.client.event("balance", player_id=table.player_id)
    other = await raw_post(
        http, table.provider, seal_event(table.client.key, table.provider, second)
    )
    assert base64.b64decode(other.json()["payload"])[:12] != raw[:12]


async def test_unknown_provider_is_plain_r2(http: httpx.AsyncClient) -> None:
    key = os.urandom(32)
    body = seal_event(key, "no-such-provider", {"event": "balance"})
    answer = plain(await raw_post(http, "no-such-provider", body))
    assert (answer["code"], answer["reason"]) == ("R2", "unknown_provider")
    bad_code = plain(await raw_post(http, "bad%20code", body))
    assert bad_code["reason"] == "unknown_provider"


async def test_wrong_key_is_bad_signature(table: Table, http: httpx.AsyncClient) -> None:
    event = table.client.event("balance", player_id=table.player_id)
    answer = plain(
        await raw_post(http, table.provider, seal_event(os.urandom(32), table.provider, event))
    )
    assert (answer["code"], answer["reason"]) == ("R2", "bad_signature")


async def test_associated_data_binds_the_provider(
    table: Table, operator: Operator, http: httpx.AsyncClient
) -> None:
    other = await operator.provider()
    event = table.client.event("balance", player_id=table.player_id)
    # Sealed with table's key but for another provider code: the tag does not verify.
    body = seal_event(table.client.key, other["code"], event)
    assert plain(await raw_post(http, table.provider, body))["reason"] == "bad_signature"


async def test_tampered_payload_is_bad_signature(table: Table, http: httpx.AsyncClient) -> None:
    event = table.client.event("balance", player_id=table.player_id)
    wrapper = orjson.loads(seal_event(table.client.key, table.provider, event))
    raw = bytearray(base64.b64decode(wrapper["payload"]))
    raw[20] ^= 1
    body = orjson.dumps({"payload": base64.b64encode(bytes(raw)).decode()})
    assert plain(await raw_post(http, table.provider, body))["reason"] == "bad_signature"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"payload": 5}',
        b'{"nope": "x"}',
        b'{"payload": "***"}',
        b'{"payload": "AAAA"}',
        b'{"payload": "' + base64.b64encode(b"x" * 27) + b'"}',
    ],
)
async def test_malformed_envelopes_are_plain_r2(
    table: Table, http: httpx.AsyncClient, body: bytes
) -> None:
    answer = plain(await raw_post(http, table.provider, body))
    assert (answer["code"], answer["reason"]) == ("R2", "bad_signature")
    assert answer["message"]


async def test_oversized_body_is_refused_unread(table: Table, http: httpx.AsyncClient) -> None:
    body = b'{"payload": "' + b"A" * (1024 * 1024) + b'"}'
    answer = plain(await raw_post(http, table.provider, body))
    assert answer["reason"] == "bad_signature" and "exceeds" in str(answer["message"])


async def test_key_rotation_keeps_previous_key_active(
    table: Table, operator: Operator, http: httpx.AsyncClient
) -> None:
    old_key = table.client.key
    rotated = await operator.call("POST", f"/v1/providers/{table.provider}/keys", expect=201)
    new = rotated["keys"][0]
    new_key = base64.b64decode(new["key"])
    assert {k["state"] for k in rotated["active"]} == {"current", "previous"}

    async def balance_with(key: bytes, key_id: str | None = None) -> dict[str, object]:
        client = ProviderClient("", table.provider, key, key_id=key_id, http=http)
        return await client.send("balance", player_id=table.player_id)

    assert (await balance_with(old_key))["code"] == "R0"
    assert (await balance_with(new_key))["code"] == "R0"
    assert (await balance_with(new_key, new["key_id"]))["code"] == "R0"
    # X-Key-Id names one key: the other key does not open the request under that name.
    answer = await balance_with(old_key, new["key_id"])
    assert answer["reason"] == "bad_signature"
    # A second rotation retires the first key.
    await operator.call("POST", f"/v1/providers/{table.provider}/keys", expect=201)
    assert (await balance_with(old_key))["reason"] == "bad_signature"
    assert (await balance_with(new_key))["code"] == "R0"


async def test_rotate_unknown_provider_is_404(operator: Operator) -> None:
    answer = await operator.call("POST", "/v1/providers/nope-nope/keys", expect=404)
    assert answer["error"]["code"] == "resource_not_found"


# --- sessions: login, logout, balance --------------------------------------------------------


async def test_login_with_valid_session(table: Table) -> None:
    answer = await table.client.send("login", player_id=table.player_id, session_token=table.token)
    assert answer["code"] == "R0" and answer["balance"] == 10_000
    assert answer["currency"] == "EUR" and answer["request_id"].startswith("req-")


async def test_login_refusals(table: Table, operator: Operator) -> None:
    send = table.client.send
    unknown = await send("login", player_id="ghost-1", session_token=table.token)
    assert plain_r2(unknown, "invalid_session")
    assert plain_r2(
        await send("login", player_id=table.player_id, session_token="nope"), "invalid_session"
    )
    other = await operator.player()
    assert plain_r2(
        await send("login", player_id=other, session_token=table.token), "invalid_session"
    )
    another_provider = await operator.provider()
    token = await operator.session(table.player_id, another_provider["code"])
    assert plain_r2(
        await send("login", player_id=table.player_id, session_token=token), "invalid_session"
    )


def plain_r2(answer: dict[str, object], reason: str) -> bool:
    assert (answer["code"], answer["reason"]) == ("R2", reason), answer
    assert "balance" not in answer  # plain text never carries money
    return True


async def test_logout_ends_session_and_repeats_are_ok(table: Table) -> None:
    send = table.client.send
    out = await send("logout", player_id=table.player_id, session_token=table.token)
    assert out["code"] == "R0"
    assert (await send("logout", player_id=table.player_id, session_token=table.token))[
        "code"
    ] == "R0"
    assert plain_r2(
        await send("login", player_id=table.player_id, session_token=table.token), "invalid_session"
    )
    assert plain_r2(await table.bet(100), "invalid_session")
    assert await table.balance() == 10_000


async def test_logout_refusals(table: Table) -> None:
    send = table.client.send
    assert plain_r2(
        await send("logout", player_id=table.player_id, session_token="nope"), "invalid_session"
    )
    answer = await send("logout", player_id="ghost-2", session_token=table.token)
    assert (answer["code"], answer["reason"]) == ("R3", "player_not_found")


async def test_expired_session(table: Table, pool: object) -> None:
    import asyncpg

    from app.secrets import token_hash

    assert isinstance(pool, asyncpg.Pool)
    await pool.execute(
        "UPDATE sessions SET expires_at = now() - interval '1 second' WHERE token_hash = $1",
        token_hash(table.token),
    )
    send = table.client.send
    assert plain_r2(
        await send("login", player_id=table.player_id, session_token=table.token), "session_expired"
    )
    assert plain_r2(await table.bet(100), "session_expired")
    # Ending an expired session is fine; wins still land without one.
    assert (await send("logout", player_id=table.player_id, session_token=table.token))[
        "code"
    ] == "R0"
    assert (await table.result(5, round_id="after"))["code"] == "R0"


async def test_login_of_blocked_player(table: Table) -> None:
    await table.operator.call(
        "PUT", f"/v1/players/{table.player_id}/status", {"status": "blocked"}, expect=200
    )
    answer = await table.client.send("login", player_id=table.player_id, session_token=table.token)
    assert (answer["code"], answer["reason"]) == ("R1", "player_blocked")


async def test_balance_needs_no_session_and_unknown_player(table: Table) -> None:
    assert (await table.client.send("balance", player_id=table.player_id))["balance"] == 10_000
    answer = await table.client.send("balance", player_id="ghost-3")
    assert (answer["code"], answer["reason"]) == ("R3", "player_not_found")


# --- freshness and replay --------------------------------------------------------------------


async def test_stale_timestamps(table: Table) -> None:
    for skew in (-301, 301):
        event = table.client.event("balance", player_id=table.player_id)
        event["timestamp"] = int(time.time()) + skew
        answer = await table.client.send_event(event)
        assert plain_r2(answer, "stale_request")
        assert answer["request_id"] == event["request_id"]
    event = table.client.event("balance", player_id=table.player_id)
    event["timestamp"] = int(time.time()) - 290
    assert (await table.client.send_event(event))["code"] == "R0"


async def test_replayed_request_gets_first_outcome_and_moves_nothing(table: Table) -> None:
    event = table.client.event(
        "bet",
        player_id=table.player_id,
        session_token=table.token,
        transaction_id="rp-1",
        round_id="r",
        game_id="g",
        amount=100,
        currency="EUR",
    )
    body = seal_event(table.client.key, table.provider, event)
    first = await table.client.post(body)
    second = await table.client.post(body)  # identical bytes
    assert first == second
    assert "duplicate" not in second
    assert await table.balance() == 9_900


async def test_replay_of_refusal_is_not_processed_again(table: Table) -> None:
    event = table.client.event(
        "bet",
        player_id=table.player_id,
        session_token=table.token,
        transaction_id="rp-2",
        round_id="r",
        game_id="g",
        amount=20_000,
        currency="EUR",
    )
    first = await table.client.send_event(event)
    assert first["code"] == "R4"
    await table.operator.fund(table.player_id, 20_000)
    again = await table.client.send_event(event)
    assert again["code"] == "R4" and again["balance"] == first["balance"]
    assert await table.balance() == 30_000
    # A new delivery (new request_id) of the refused transaction is processed.
    assert (await table.bet(20_000, txn="rp-2", round_id="r", game_id="g"))["code"] == "R0"


async def test_request_in_progress(table: Table, settings: object) -> None:
    from redis.asyncio import Redis

    from app.config import Settings
    from app.seamless.replay import PENDING, replay_key

    assert isinstance(settings, Settings) and settings.redis_url
    event = table.client.event("balance", player_id=table.player_id)
    redis = Redis.from_url(settings.redis_url)
    try:
        await redis.set(replay_key(table.provider, event["request_id"]), PENDING, px=5000)
    finally:
        await redis.aclose()
    answer = await table.client.send_event(event)
    assert (answer["code"], answer["reason"]) == ("R1", "request_in_progress")


# --- bad input after decryption --------------------------------------------------------------


async def encrypted(table: Table, obj: object) -> dict[str, object]:
    body = orjson.dumps(
        {"payload": envelope.seal(table.client.key, table.provider, orjson.dumps(obj))}
    )
    return await table.client.post(body)


async def test_payload_not_json_or_not_object(table: Table) -> None:
    for plaintext in (b"not json", b"\xff\xfe", b"[1,2]", b'"bet"'):
        body = orjson.dumps({"payload": envelope.seal(table.client.key, table.provider, plaintext)})
        answer = await table.client.post(body)  # opened with the key: encrypted R3
        assert (answer["code"], answer["reason"]) == ("R3", "malformed_request")


async def test_unknown_and_missing_event(table: Table) -> None:
    base = {
        "request_id": "x-" + secrets.token_hex(4),
        "timestamp": int(time.time()),
        "player_id": table.player_id,
    }
    assert (await encrypted(table, {**base, "event": "deposit"}))["reason"] == "unknown_event"
    assert (await encrypted(table, {**base, "event": 7}))["reason"] == "unknown_event"
    missing = await encrypted(table, base)
    assert missing["reason"] == "malformed_request" and "event" in str(missing["message"])


BET = {
    "event": "bet",
    "session_token": "tok",
    "transaction_id": "t-1",
    "round_id": "r-1",
    "game_id": "g-1",
    "amount": 100,
    "currency": "EUR",
}


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("amount", True, "invalid_field"),
        ("amount", 1.5, "invalid_field"),
        ("amount", "100", "invalid_field"),
        ("amount", 0, "invalid_field"),
        ("amount", -5, "invalid_field"),
        ("amount", 10**16, "invalid_field"),
        ("currency", "eur", "invalid_field"),
        ("currency", "EURO", "invalid_field"),
        ("transaction_id", "", "invalid_field"),
        ("transaction_id", "x" * 65, "invalid_field"),
        ("transaction_id", "has space", "invalid_field"),
        ("transaction_id", 12, "invalid_field"),
        ("round_id", None, "malformed_request"),
        ("session_token", 5, "invalid_field"),
        ("timestamp", "now", "invalid_field"),
        ("timestamp", 1.0, "invalid_field"),
        ("player_id", ["a"], "invalid_field"),
        ("request_id", {}, "invalid_field"),
    ],
)
async def test_bad_fields_name_the_field(
    table: Table, field: str, value: object, reason: str
) -> None:
    event = {
        **BET,
        "request_id": "bf-" + secrets.token_hex(4),
        "timestamp": int(time.time()),
        "player_id": table.player_id,
        field: value,
    }
    answer = await encrypted(table, event)
    assert (answer["code"], answer["reason"]) == ("R3", reason), answer
    assert field in str(answer["message"])
    assert await table.balance() == 10_000


async def test_result_round_closed_must_be_boolean(table: Table) -> None:
    answer = await table.result(5, round_closed="yes")
    assert (answer["code"], answer["reason"]) == ("R3", "invalid_field")


async def test_unknown_extra_fields_are_ignored(table: Table) -> None:
    answer = await table.bet(100, jackpot_contribution=3, nested={"a": [1, 2]})
    assert answer["code"] == "R0"


async def test_request_id_echoed_when_readable(table: Table) -> None:
    event = {
        **BET,
        "request_id": "echo-1",
        "timestamp": int(time.time()),
        "player_id": table.player_id,
        "amount": "bad",
    }
    assert (await encrypted(table, event))["request_id"] == "echo-1"


async def test_the_routed_webhook_answers_as_the_fast_path_does(
    asgi: object, table: Table, http: httpx.AsyncClient
) -> None:
    """Deliveries skip the app's routing (app.main.WalletApp), under a root path too: both
    answer alike, with the same headers, and other methods are still refused by the route
    table."""
    mounted = httpx.ASGITransport(app=asgi, root_path="/wallet")  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=mounted, base_url="http://wallet.test") as routed:
        for client, prefix in ((http, ""), (routed, "/wallet")):
            event = table.client.event("balance", player_id=table.player_id)
            response = await client.post(
                f"{prefix}{table.client.path}",
                content=seal_event(table.client.key, table.provider, event),
                headers={"x-request-id": "corr-" + prefix.strip("/")},
            )
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            assert response.headers["x-request-id"] == "corr-" + prefix.strip("/")
            answer = open_answer(table.client.key, table.provider, response.content)
            assert (answer["code"], answer["balance"]) == ("R0", 10_000)
            too_big = await client.post(f"{prefix}{table.client.path}", content=b"x" * 70_000)
            assert plain(too_big)["reason"] == "bad_signature"
            refused = await client.get(f"{prefix}{table.client.path}")
            assert refused.status_code == 405
