"""What a PSP sends is strictly typed (contract 3 [1.1]): a correctly signed webhook whose amount
is not a JSON integer, or whose field has the wrong type, is 400 and changes nothing; a status or
settlement answer of the wrong shape is a PSP error, never a crash or money moved on a float."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from datetime import date
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from app.payments import signing
from app.payments.psp import PspError, SandboxPsp
from tests.fixtures.app import Operator
from tests.fixtures.payments import SANDBOX_SECRET, SandboxRoutes

URL = "/v1/psp/sandbox-a/webhook"

# (name, change to the event, the field the 400 names). A change maps a correct event to a
# hostile one; each is signed with the right secret, so only its fields can refuse it.
Change = Callable[[dict[str, Any]], None]


def data(field: str, value: Any) -> Change:
    def change(event: dict[str, Any]) -> None:
        event["data"][field] = value

    return change


def top(field: str, value: Any) -> Change:
    def change(event: dict[str, Any]) -> None:
        event[field] = value

    return change


def drop(field: str) -> Change:
    def change(event: dict[str, Any]) -> None:
        del event[field]

    return change


def drop_data(field: str) -> Change:
    def change(event: dict[str, Any]) -> None:
        del event["data"][field]

    return change


HOSTILE: list[tuple[str, Change, str]] = [
    ("amount string", data("amount", "5000"), "data.amount"),
    ("amount float", data("amount", 5000.0), "data.amount"),
    ("amount fraction", data("amount", 5000.9), "data.amount"),
    ("amount true", data("amount", True), "data.amount"),
    ("amount 2**63", data("amount", 2**63), "data.amount"),
    ("amount null", data("amount", None), "data.amount"),
    ("amount negative", data("amount", -5000), "data.amount"),
    ("amount missing", drop_data("amount"), "data.amount"),
    ("reference NUL", data("reference", "\u0000"), "data.reference"),
    ("reference number", data("reference", 123), "data.reference"),
    ("failure_code object", data("failure_code", {"x": 1}), "data.failure_code"),
    ("failure_code NUL", data("failure_code", "declined\u0000"), "data.failure_code"),
    ("status number", data("status", 5), "data.status"),
    ("status unknown", data("status", "refunded"), "data.status"),
    ("status of another type", data("status", "failed"), "data.status"),
    ("currency number", data("currency", 978), "data.currency"),
    ("currency lower case", data("currency", "eur"), "data.currency"),
    ("psp_payment_id number", data("psp_payment_id", 42), "data.psp_payment_id"),
    ("event id missing", drop("id"), "id"),
    ("event id number", top("id", 7), "id"),
    ("event id NUL", top("id", "evt\u0000"), "id"),
    ("type unknown", top("type", "payment.refunded"), "type"),
    ("type list", top("type", ["payment.succeeded"]), "type"),
    ("data not an object", top("data", [1, 2]), "data"),
    ("kind unknown", data("kind", "refund"), "data.kind"),
    ("created string", top("created", "2026-05-18T11:42:18Z"), "created"),
    ("created float", top("created", 1779104538.5), "created"),
]


def signed(body: bytes) -> dict[str, str]:
    return {"x-signature": signing.sign(SANDBOX_SECRET.encode(), body, int(time.time()))}


async def test_hostile_webhook_fields_are_400_and_change_nothing(
    operator: Operator,
    sandbox_routes: SandboxRoutes,
    http: httpx.AsyncClient,
    pool: asyncpg.Pool,
) -> None:
    player = await operator.player()
    created = await operator.call(
        "POST",
        "/v1/deposits",
        {"player_id": player, "amount": 5_000, "currency": "EUR", "method": "card"},
        headers={"idempotency-key": "typed-" + secrets.token_hex(6)},
        expect=201,
    )
    psp_payment_id = await pool.fetchval(
        "SELECT psp_payment_id FROM payments WHERE id = $1", created["id"]
    )

    def event(event_id: str) -> dict[str, Any]:
        return {
            "id": event_id,
            "type": "payment.succeeded",
            "created": int(time.time()),
            "data": {
                "psp_payment_id": psp_payment_id,
                "reference": created["id"],
                "kind": "deposit",
                "amount": 5_000,
                "currency": "EUR",
                "status": "succeeded",
            },
        }

    event_ids = []
    for name, change, field in HOSTILE:
        event_id = "evt_" + secrets.token_hex(8)
        event_ids.append(event_id)
        hostile = event(event_id)
        change(hostile)
        body = orjson.dumps(hostile)
        answer = await http.post(URL, content=body, headers=signed(body))
        assert answer.status_code == 400, (name, answer.text)
        error = answer.json()["error"]
        assert (error["code"], error["http_status"], error["field"]) == (
            "invalid_request",
            400,
            field,
        ), name
        assert error["message"] and error["docs_url"], name
    for raw in (b"[]", b'{"id": "evt_dup", "id": "evt_dup2"}', b"not json"):
        answer = await http.post(URL, content=raw, headers=signed(raw))
        assert answer.status_code == 400, (raw, answer.text)
        assert answer.json()["error"]["code"] == "invalid_request"

    # Nothing of any of them was written: no event recorded, no move, no flag, no money.
    assert await operator.balance(player) == 0
    row = await pool.fetchrow("SELECT status, flagged FROM payments WHERE id = $1", created["id"])
    assert (row["status"], row["flagged"]) == ("awaiting_method", None)
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM psp_events WHERE payment_id = $1 OR event_id = ANY($2)",
            created["id"],
            event_ids,
        )
        == 0
    )
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM payment_transitions WHERE payment_id = $1 "
            "AND trigger = 'psp_webhook'",
            created["id"],
        )
        == 0
    )

    # The correct event still applies, once.
    body = orjson.dumps(event("evt_" + secrets.token_hex(8)))
    applied = await http.post(URL, content=body, headers=signed(body))
    assert applied.json() == {"outcome": "moved_to_succeeded"}
    assert await operator.balance(player) == 5_000


# --- answers to the wallet's own calls -----------------------------------------------------------


def psp_answering(answer: Callable[[httpx.Request], httpx.Response]) -> SandboxPsp:
    http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    return SandboxPsp("psp-typed", "http://psp.test", "sk", b"secret", http)


def json_answer(body: Any) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(200, content=orjson.dumps(body))


@pytest.mark.parametrize(
    "body",
    [
        {"status": 5},
        {"status": ["succeeded"]},
        {"status": "refunded"},
        {"status": None},
        {},
        ["succeeded"],
        "succeeded",
    ],
)
async def test_hostile_status_answer_is_a_psp_error(body: Any) -> None:
    psp = psp_answering(json_answer(body))
    with pytest.raises(PspError) as caught:
        await psp.status("psp_1")
    assert caught.value.code == "invalid_answer"


async def test_status_answer_that_is_not_json_is_a_psp_error() -> None:
    psp = psp_answering(lambda request: httpx.Response(200, content=b"<html>oops</html>"))
    with pytest.raises(PspError) as caught:
        await psp.status("psp_1")
    assert caught.value.code == "invalid_answer"


LINE = {
    "psp_payment_id": "psp_1",
    "reference": "dep_1",
    "kind": "deposit",
    "amount": 5_000,
    "currency": "EUR",
    "fee": 75,
    "net": 4_925,
}


@pytest.mark.parametrize(
    "change",
    [
        {"amount": "5000"},
        {"amount": 5000.0},
        {"amount": 5000.9},
        {"amount": True},
        {"amount": None},
        {"amount": 2**63},
        {"fee": 75.5},
        {"net": "4925"},
        {"reference": "dep\u0000"},
        {"reference": 1},
        {"psp_payment_id": None},
        {"kind": "refund"},
        {"currency": "euro"},
    ],
)
async def test_hostile_settlement_line_is_a_psp_error(change: dict[str, Any]) -> None:
    psp = psp_answering(json_answer({"lines": [{**LINE, **change}]}))
    with pytest.raises(PspError) as caught:
        await psp.settlement(date(2026, 5, 18))
    assert caught.value.code == "invalid_answer"


async def test_settlement_without_lines_is_a_psp_error() -> None:
    for body in ({}, {"lines": {"a": 1}}, {"lines": [1]}):
        psp = psp_answering(json_answer(body))
        with pytest.raises(PspError):
            await psp.settlement(date(2026, 5, 18))


async def test_well_typed_settlement_is_read() -> None:
    """Any integer amount is read: an odd one is a discrepancy for reconciliation to show."""
    odd = {**LINE, "reference": "other/merchant-ref", "amount": -5, "fee": 0, "net": -5}
    psp = psp_answering(json_answer({"lines": [LINE, odd]}))
    line, other = await psp.settlement(date(2026, 5, 18))
    assert (line.amount, line.fee, line.net, line.reference) == (5_000, 75, 4_925, "dep_1")
    assert (other.amount, other.reference) == (-5, "other/merchant-ref")


@pytest.mark.parametrize(
    "body",
    [
        {"psp_payment_id": 5, "status": "pending"},
        {"psp_payment_id": "psp_1", "status": "paid"},
        {"psp_payment_id": "psp_1", "status": "failed", "failure_code": 3},
        {"psp_payment_id": "psp_1", "status": "requires_action", "redirect_url": ["x"]},
        {"status": "pending"},
    ],
)
async def test_hostile_initiate_answer_is_an_ambiguous_psp_error(body: Any) -> None:
    """The PSP may have acted on a request whose answer the wallet cannot read, as after a
    timeout: retryable at the same route, never a decline that would release a payout's hold."""
    psp = psp_answering(json_answer(body))
    payment = {
        "id": "wdr_1",
        "kind": "withdrawal",
        "amount": 100,
        "currency": "EUR",
        "method": "card",
        "player_id": "p1",
    }
    with pytest.raises(PspError) as caught:
        await psp.initiate(payment, "http://wallet.test/v1/psp/psp-typed/webhook")
    assert caught.value.code == "invalid_answer"
    assert caught.value.retryable and caught.value.ambiguous
