"""The payments HTTP API: deposits and withdrawals over the operator API, and the PSP webhook
endpoint, with the sandbox PSP's signed webhooks arriving at the app itself."""

from __future__ import annotations

import secrets
import time
from typing import Any

import asyncpg
import httpx
import orjson

from app.payments import signing
from tests.conftest import SANDBOX_SECRET, Operator, SandboxRoutes


def key() -> dict[str, str]:
    return {"idempotency-key": "api-" + secrets.token_hex(6)}


def body(player: str, amount: int, **extra: Any) -> dict[str, Any]:
    return {
        "player_id": player,
        "amount": amount,
        "currency": "EUR",
        "method": "card",
        "reference": "order-9",
        **extra,
    }


async def psp_id(pool: asyncpg.Pool, payment_id: str) -> str:
    value: str = await pool.fetchval(
        "SELECT psp_payment_id FROM payments WHERE id = $1", payment_id
    )
    return value


async def test_deposit_round_trip_over_http(
    operator: Operator, sandbox_routes: SandboxRoutes, pool: asyncpg.Pool
) -> None:
    player = await operator.player()
    headers = key()
    created = await operator.call(
        "POST", "/v1/deposits", body(player, 4_200), headers=headers, expect=201
    )
    assert created["status"] == "awaiting_method" and created["id"].startswith("dep_")
    assert created["redirect_url"] and created["expires_at"].endswith("Z")
    again = await operator.call(
        "POST", "/v1/deposits", body(player, 4_200), headers=headers, expect=201
    )
    assert again == created
    conflict = await operator.call(
        "POST", "/v1/deposits", body(player, 4_201), headers=headers, expect=409
    )
    assert conflict["error"]["code"] == "idempotency_conflict"
    await sandbox_routes.complete(await psp_id(pool, created["id"]))
    done = await operator.call("GET", f"/v1/deposits/{created['id']}", expect=200)
    assert done["status"] == "succeeded"
    assert await operator.balance(player) == 4_200
    await operator.call("GET", f"/v1/withdrawals/{created['id']}", expect=404)


async def test_withdrawal_round_trip_and_review(
    operator: Operator, sandbox_routes: SandboxRoutes, asgi: Any
) -> None:
    player = await operator.player(50_000)
    paid = await operator.call(
        "POST", "/v1/withdrawals", body(player, 10_000), headers=key(), expect=201
    )
    assert paid["status"] == "processing"
    await sandbox_routes.settle()
    assert (await operator.call("GET", f"/v1/withdrawals/{paid['id']}", expect=200))[
        "status"
    ] == "paid"
    payments = asgi.state["wallet"].payments
    payments.review_threshold = 5_000
    try:
        held = await operator.call(
            "POST", "/v1/withdrawals", body(player, 20_000), headers=key(), expect=201
        )
    finally:
        payments.review_threshold = None
    assert held["status"] == "held" and await operator.balance(player) == 20_000
    rejected = await operator.call("POST", f"/v1/withdrawals/{held['id']}/reject", expect=200)
    assert rejected["status"] == "rejected" and await operator.balance(player) == 40_000
    again = await operator.call("POST", f"/v1/withdrawals/{held['id']}/approve", expect=400)
    assert again["error"]["field"] == "status"


async def test_payment_request_validation(
    operator: Operator, sandbox_routes: SandboxRoutes
) -> None:
    player = await operator.player(1_000)
    missing = await operator.call("POST", "/v1/deposits", body(player, 100), expect=400)
    assert missing["error"]["field"] == "Idempotency-Key"
    for change, field in (
        ({"amount": 1.5}, "amount"),
        ({"amount": 0}, "amount"),
        ({"currency": "eur"}, "currency"),
        ({"method": ""}, "method"),
        ({"metadata": [1]}, "metadata"),
        ({"metadata": {"country": "india"}}, "metadata.country"),
        ({"reference": ""}, "reference"),
        ({"currency": "USD"}, "currency"),
    ):
        answer = await operator.call(
            "POST", "/v1/deposits", {**body(player, 100), **change}, headers=key(), expect=400
        )
        assert answer["error"]["field"] == field, change
    over = await operator.call(
        "POST", "/v1/withdrawals", body(player, 1_001), headers=key(), expect=400
    )
    assert over["error"]["field"] == "amount"
    unknown = await operator.call(
        "POST", "/v1/deposits", body("nobody-here", 100), headers=key(), expect=404
    )
    assert unknown["error"]["code"] == "resource_not_found"
    no_route = await operator.call(
        "POST", "/v1/deposits", body(player, 100, method="crypto"), headers=key(), expect=422
    )
    assert no_route["error"]["code"] == "method_unavailable"


async def test_a_deposit_request_400_lists_every_bad_field(
    operator: Operator, pool: asyncpg.Pool
) -> None:
    """One 400 names every bad field of the body, in declaration order: ``field`` is the first,
    ``errors`` has them all, each with a message that names it; nothing is created."""
    player = await operator.player(1_000)
    before = await pool.fetchval("SELECT count(*) FROM payments WHERE player_id = $1", player)
    bad = {
        "player_id": player,
        "amount": "100",  # a string is not an amount
        "currency": "eur",
        "method": "",
        "reference": "x" * 129,
        "metadata": {"country": "india", "scenario": "succeed"},
    }
    answer = await operator.call("POST", "/v1/deposits", bad, headers=key(), expect=400)
    error = answer["error"]
    fields = ["amount", "currency", "method", "reference", "metadata.country"]
    assert (error["code"], error["field"]) == ("invalid_request", "amount")
    assert [e["field"] for e in error["errors"]] == fields
    for entry in error["errors"]:
        assert entry["message"].startswith(entry["field"]), entry
    assert error["message"] == error["errors"][0]["message"]
    missing = await operator.call("POST", "/v1/deposits", {}, headers=key(), expect=400)
    assert [e["field"] for e in missing["error"]["errors"]] == [
        "player_id",
        "amount",
        "currency",
        "method",
    ]
    after = await pool.fetchval("SELECT count(*) FROM payments WHERE player_id = $1", player)
    assert after == before


async def test_no_psp_routes_configured_is_method_unavailable(operator: Operator) -> None:
    player = await operator.player()
    answer = await operator.call(
        "POST", "/v1/deposits", body(player, 100), headers=key(), expect=422
    )
    assert answer["error"]["code"] == "method_unavailable"


async def test_webhook_endpoint_verifies_signatures(
    operator: Operator,
    sandbox_routes: SandboxRoutes,
    http: httpx.AsyncClient,
    pool: asyncpg.Pool,
) -> None:
    player = await operator.player()
    created = await operator.call(
        "POST", "/v1/deposits", body(player, 900), headers=key(), expect=201
    )
    event = orjson.dumps(
        {
            "id": "evt_forged",
            "type": "payment.succeeded",
            "created": int(time.time()),
            "data": {
                "psp_payment_id": await psp_id(pool, created["id"]),
                "reference": created["id"],
                "kind": "deposit",
                "amount": 900,
                "currency": "EUR",
                "status": "succeeded",
            },
        }
    )
    url = "/v1/psp/sandbox-a/webhook"
    for signature in (None, "t=1,v1=ab", signing.sign(b"wrong-secret", event, int(time.time()))):
        headers = {"x-signature": signature} if signature else {}
        answer = await http.post(url, content=event, headers=headers)
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "authentication_failed"
    assert await operator.balance(player) == 0
    good = {"x-signature": signing.sign(SANDBOX_SECRET.encode(), event, int(time.time()))}
    applied = await http.post(url, content=event, headers=good)
    assert applied.json() == {"outcome": "moved_to_succeeded"}
    repeat = await http.post(url, content=event, headers=good)
    assert repeat.json() == {"outcome": "duplicate"}
    assert await operator.balance(player) == 900
    unknown = await http.post("/v1/psp/nope/webhook", content=event, headers=good)
    assert unknown.status_code == 404
    garbage = b'{"not": "an event"}'
    bad = await http.post(
        url,
        content=garbage,
        headers={"x-signature": signing.sign(SANDBOX_SECRET.encode(), garbage, int(time.time()))},
    )
    assert bad.status_code == 400
