"""The operator API part needed to run the seamless wallet: providers, players, sessions, status,
limits, adjustments, ledger check, health."""

from __future__ import annotations

import base64
import secrets

import httpx
import pytest

from tests.fixtures.app import Operator


async def test_requires_bearer_admin_key(http: httpx.AsyncClient) -> None:
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Basic abc"}):
        response = await http.get("/v1/ledger/check", headers=headers)
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["code"] == "authentication_failed" and error["http_status"] == 401
        assert error["docs_url"] and error["request_id"] == response.headers["x-request-id"]


async def test_create_provider_shows_key_once(operator: Operator) -> None:
    created = await operator.provider()
    (key,) = created["keys"]
    assert len(base64.b64decode(key["key"])) == 32 and key["key_id"]
    again = await operator.call(
        "POST", "/v1/providers", {"code": created["code"], "name": "x"}, expect=409
    )
    assert again["error"]["code"] == "idempotency_conflict"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x"}, "code"),
        ({"code": "bad code", "name": "x"}, "code"),
        ({"code": "ok-code"}, "name"),
        ({"code": "ok-code", "name": 5}, "name"),
    ],
)
async def test_create_provider_validation(
    operator: Operator, body: dict[str, object], field: str
) -> None:
    error = (await operator.call("POST", "/v1/providers", body, expect=400))["error"]
    assert error["code"] == "invalid_request" and error["field"] == field


async def test_create_and_read_player(operator: Operator) -> None:
    player_id = "pl-" + secrets.token_hex(4)
    created = await operator.call(
        "POST", "/v1/players", {"player_id": player_id, "currency": "INR"}, expect=201
    )
    assert (created["player_id"], created["currency"], created["balance"], created["status"]) == (
        player_id,
        "INR",
        0,
        "active",
    )
    again = await operator.call(
        "POST", "/v1/players", {"player_id": player_id, "currency": "INR"}, expect=200
    )
    assert again["player_id"] == player_id
    conflict = await operator.call(
        "POST", "/v1/players", {"player_id": player_id, "currency": "EUR"}, expect=409
    )
    assert conflict["error"]["field"] == "currency"
    read = await operator.call("GET", f"/v1/players/{player_id}", expect=200)
    assert read["limits"] == {"deposit": {}, "wager": {}, "loss": {}}
    assert read["created_at"].endswith("Z")


async def test_player_validation_and_not_found(operator: Operator) -> None:
    for body, field in (
        ({"player_id": "x y", "currency": "EUR"}, "player_id"),
        ({"player_id": "ok", "currency": "euro"}, "currency"),
        ({"player_id": "ok", "currency": 978}, "currency"),
    ):
        error = (await operator.call("POST", "/v1/players", body, expect=400))["error"]
        assert error["field"] == field
    missing = await operator.call("GET", "/v1/players/nobody-here", expect=404)
    assert missing["error"]["code"] == "resource_not_found"


async def test_status_changes(operator: Operator) -> None:
    player_id = await operator.player()
    blocked = await operator.call(
        "PUT", f"/v1/players/{player_id}/status", {"status": "blocked"}, expect=200
    )
    assert blocked["status"] == "blocked"
    bad = await operator.call(
        "PUT", f"/v1/players/{player_id}/status", {"status": "gone"}, expect=400
    )
    assert bad["error"]["field"] == "status"
    await operator.call("PUT", "/v1/players/nobody-here/status", {"status": "active"}, expect=404)


async def test_limits_set_and_clear(operator: Operator) -> None:
    player_id = await operator.player()
    path = f"/v1/players/{player_id}/limits"
    set_ = await operator.call(
        "PUT",
        path,
        {"wager": {"daily": 100, "monthly": 1000}, "deposit": {"weekly": 5}},
        expect=200,
    )
    assert set_["limits"]["wager"] == {"daily": 100, "monthly": 1000}
    # Removing a limit is a raise: it waits for the cooling-off, and says when it takes effect.
    cleared = await operator.call("PUT", path, {"wager": {"daily": None}}, expect=200)
    assert cleared["limits"]["wager"] == {"daily": 100, "monthly": 1000}
    (pending,) = cleared["pending_limits"]
    assert (pending["kind"], pending["period"], pending["amount"]) == ("wager", "daily", None)
    assert pending["effective_at"].endswith("Z")
    for body, field in (
        ({"bets": {"daily": 1}}, "bets"),
        ({"wager": {"hourly": 1}}, "wager.hourly"),
        ({"wager": {"daily": -1}}, "wager.daily"),
        ({"wager": {"daily": 1.5}}, "wager.daily"),
        ({"wager": 5}, "wager"),
    ):
        error = (await operator.call("PUT", path, body, expect=400))["error"]
        assert error["field"] == field


async def test_sessions(operator: Operator) -> None:
    provider = (await operator.provider())["code"]
    player_id = await operator.player()
    issued = await operator.call(
        "POST",
        f"/v1/players/{player_id}/sessions",
        {"provider": provider, "game_id": "g1"},
        expect=201,
    )
    assert len(issued["session_token"]) >= 40 and issued["expires_at"].endswith("Z")
    unknown = await operator.call(
        "POST",
        f"/v1/players/{player_id}/sessions",
        {"provider": "nope-nope", "game_id": "g1"},
        expect=400,
    )
    assert unknown["error"]["field"] == "provider"
    await operator.call(
        "POST",
        "/v1/players/nobody-here/sessions",
        {"provider": provider, "game_id": "g1"},
        expect=404,
    )


async def test_adjustments_are_idempotent(operator: Operator) -> None:
    player_id = await operator.player()
    path = f"/v1/players/{player_id}/adjustments"
    key = {"idempotency-key": "adj-" + secrets.token_hex(4)}
    first = await operator.call(
        "POST", path, {"amount": 500, "reason": "goodwill"}, headers=key, expect=201
    )
    assert first["balance_after"] == 500 and first["amount"] == 500
    again = await operator.call(
        "POST", path, {"amount": 500, "reason": "goodwill"}, headers=key, expect=200
    )
    assert again == first
    conflict = await operator.call(
        "POST", path, {"amount": 501, "reason": "goodwill"}, headers=key, expect=409
    )
    assert conflict["error"]["code"] == "idempotency_conflict"
    debit = await operator.call(
        "POST",
        path,
        {"amount": -200, "reason": "correction"},
        headers={"idempotency-key": "d-" + secrets.token_hex(4)},
        expect=201,
    )
    assert debit["balance_after"] == 300
    assert await operator.balance(player_id) == 300


async def test_adjustment_refusals(operator: Operator) -> None:
    player_id = await operator.player(100)
    path = f"/v1/players/{player_id}/adjustments"
    key = {"idempotency-key": "r-" + secrets.token_hex(4)}
    missing_key = await operator.call("POST", path, {"amount": 5, "reason": "x"}, expect=400)
    assert missing_key["error"]["field"] == "Idempotency-Key"
    for body, field in (
        ({"amount": 0, "reason": "x"}, "amount"),
        ({"amount": 1.5, "reason": "x"}, "amount"),
        ({"amount": "5", "reason": "x"}, "amount"),
        ({"amount": True, "reason": "x"}, "amount"),
        ({"amount": 5}, "reason"),
    ):
        error = (await operator.call("POST", path, body, headers=key, expect=400))["error"]
        assert error["field"] == field
    overdraw = await operator.call(
        "POST", path, {"amount": -101, "reason": "x"}, headers=key, expect=400
    )
    assert overdraw["error"]["field"] == "amount"
    await operator.call(
        "POST",
        "/v1/players/nobody-here/adjustments",
        {"amount": 5, "reason": "x"},
        headers=key,
        expect=404,
    )
    assert await operator.balance(player_id) == 100


async def test_bad_json_and_unknown_routes(operator: Operator, http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/players", content=b"{not json", headers=operator.headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    missing = await http.get("/v1/nothing", headers=operator.headers)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "resource_not_found"
    wrong_method = await http.delete("/v1/players", headers=operator.headers)
    assert wrong_method.status_code == 405


async def test_health_and_readiness(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    ready = await http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}
