"""Hostile input (issue 6, item 3): whatever a caller sends to the seamless webhook or the operator
API, the answer is a contract error, never a 500, no refused request moves money, and a huge body
is refused after reading no more than the body limit.

Hypothesis draws the input; requests go through the real ASGI app on the session's Postgres and
Redis. Documented refusals with exact codes (duplicate keys, NaN, numbers beyond the limits, deep
nesting, invalid UTF-8) are listed case by case after the fuzzing.
"""

from __future__ import annotations

import base64
import os
import secrets
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.types import ASGIApp, Message

from app import strict_json
from app.client import open_answer, seal_event
from app.seamless import envelope, events
from app.seamless.outcome import REASONS as CONTRACT_REASONS
from app.strict_json import MAX_DEPTH
from tests.fixtures.app import Operator, Table

# The reasons each R-code may carry: the contract's table (docs/seamless.md, "Response object",
# as the Reason enum declares it), less two that no hostile request can earn: internal_error
# is the wallet's own failure, and session_expired needs a session that lived.
REASONS = {
    code: set(reasons) - {"internal_error", "session_expired"}
    for code, reasons in CONTRACT_REASONS.items()
}
# The operator API's error codes by status (docs/operator.md).
ERROR_CODES = {
    400: {"invalid_request"},
    404: {"resource_not_found"},
    409: {"idempotency_conflict"},
    422: {"player_limit_exceeded", "method_unavailable"},
}

FUZZ = settings(
    max_examples=40,
    deadline=None,
    # One table per test on purpose: every example runs against the same funded player.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
async def raw_http(asgi: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """A client that gets the app's 500 as an answer instead of the exception, to assert on."""
    transport = httpx.ASGITransport(app=asgi, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://wallet.test") as client:
        yield client


class Api:
    """Operator API calls as the bootstrap admin, straight to the app (a 500 comes back as an
    answer); balances read from Postgres."""

    def __init__(self, http: httpx.AsyncClient, operator: Operator, pool: asyncpg.Pool) -> None:
        self.http, self.headers, self.pool = http, operator.headers, pool

    async def request(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        return await self.http.request(
            method, path, headers={**self.headers, **(headers or {})}, **kwargs
        )

    async def balance(self, player_id: str) -> int:
        value: int = await self.pool.fetchval(
            "SELECT balance FROM accounts WHERE kind = 'player' AND owner = $1", player_id
        )
        return value


@pytest.fixture
def api(raw_http: httpx.AsyncClient, operator: Operator, pool: asyncpg.Pool) -> Api:
    return Api(raw_http, operator, pool)


# --- hostile JSON, as raw text so that it can hold what serializers refuse to write ------------

# Scalars that a serializer would not write, or would write differently, as raw JSON text.
RAW_SCALARS = st.sampled_from(
    [
        "NaN",
        "Infinity",
        "-Infinity",
        "1e400",
        "-1e400",
        "1e-400",
        str(2**63),
        str(2**64),
        str(2**64 - 1),
        str(-(2**63) - 1),
        str(10**15 + 1),
        "1" + "0" * 300,
        "100.0",
        "1e2",
        "-0",
        "-1",
        "0",
        "true",
        "false",
        "null",
        '"100"',
        '""',
        '"\\u0000"',
        '"\\ud800"',
        '"' + "x" * 5000 + '"',
        "[]",
        "{}",
        "[" * 40 + "]" * 40,
        '{"a":' * 40 + "1" + "}" * 40,
    ]
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=16),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
# Strings that break things other than JSON: U+0000 (which Postgres refuses), quotes, SQL, lines.
NASTY_TEXT = st.sampled_from(
    ["\x00", "a\x00b", "\\", '"', "'; DROP TABLE players; --", "\u2028", "💰", " ", "é" * 70]
)
RAW_VALUES = (
    RAW_SCALARS
    | NASTY_TEXT.map(lambda t: orjson.dumps(t).decode())
    | JSON_VALUES.map(lambda v: orjson.dumps(v).decode())
)


# Every field of every request is also tried with each of these, one by one (a sweep, so that
# none depends on a lucky draw).
SWEEP = [
    "NaN",
    "1e400",
    str(2**64),
    str(2**63),
    str(-(2**63) - 1),
    str(10**15 + 1),
    "-1",
    "0",
    "1.5",
    "100.0",
    "true",
    "null",
    '""',
    '"\\u0000"',
    '"a\\u0000b"',
    '"' + "x" * 5000 + '"',
    "[]",
    "{}",
    '{"a":{"a":1}}',
    "[" * 40 + "]" * 40,
    orjson.dumps("'; DROP TABLE players; --").decode(),
    orjson.dumps("💰").decode(),
]


def sweep(make: Callable[[], dict[str, Any]]) -> Iterator[bytes]:
    """A fresh ``make()`` (its own request and transaction ids) with each field in turn replaced
    by each :data:`SWEEP` value, dropped, and repeated (a duplicate key)."""
    for i, key in enumerate(make()):
        for variant in [*SWEEP, None, "duplicate"]:
            pairs = [(k, orjson.dumps(v).decode()) for k, v in make().items()]
            if variant is None:
                pairs.pop(i)
            elif variant == "duplicate":
                pairs.append(pairs[i])
            else:
                pairs[i] = (key, variant)
            yield render(pairs)


def render(pairs: list[tuple[str, str]]) -> bytes:
    """A JSON object from (key, raw JSON value) pairs, keys repeated as they come."""
    return ("{" + ",".join(f"{orjson.dumps(k).decode()}:{v}" for k, v in pairs) + "}").encode()


@st.composite
def hostile(draw: st.DrawFn, base: dict[str, Any]) -> tuple[bytes, set[str]]:
    """``base`` with one to three hostile changes; the raw body and what it surely breaks:
    ``"duplicate"`` (a key twice) or ``"utf8"`` (an invalid UTF-8 byte)."""
    pairs = [(k, orjson.dumps(v).decode()) for k, v in base.items()]
    broken: set[str] = set()
    for _ in range(draw(st.integers(1, 3))):  # "duplicate" is decided at the end
        action = draw(st.sampled_from(["replace", "replace", "drop", "duplicate", "extra"]))
        if not pairs:
            action = "extra"
        at = draw(st.integers(0, max(0, len(pairs) - 1)))
        if action == "replace":
            pairs[at] = (pairs[at][0], draw(RAW_VALUES))
        elif action == "drop":
            pairs.pop(at)
        elif action == "duplicate":
            pairs.append((pairs[at][0], draw(RAW_VALUES)))
        else:
            pairs.insert(at, (draw(st.text(max_size=12)), draw(RAW_VALUES)))
    if len({k for k, _ in pairs}) != len(pairs):
        broken.add("duplicate")
    body = render(pairs)
    if draw(st.integers(0, 9)) == 0:
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + body[at:]
        broken.add("utf8")
    return body, broken


def contract_answer(answer: dict[str, Any]) -> None:
    """A seamless answer is one of the contract's codes with one of its reasons."""
    assert answer["code"] in REASONS and answer["reason"] in REASONS[answer["code"]], answer
    assert isinstance(answer["message"], str)


def operator_error(response: httpx.Response) -> dict[str, Any]:
    """An operator API refusal in the documented shape; its ``error`` object."""
    assert response.status_code in ERROR_CODES, (response.status_code, response.text)
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] in ERROR_CODES[response.status_code], error
    assert error["http_status"] == response.status_code
    assert error["docs_url"].endswith("#" + error["code"])
    assert error["request_id"] == response.headers["x-request-id"]
    assert isinstance(error["message"], str) and error["message"]
    return error


# --- (a) the outer webhook body ------------------------------------------------------------------

OUTER_BODIES = (
    st.binary(max_size=200)
    | JSON_VALUES.map(orjson.dumps)
    | st.builds(render, st.lists(st.tuples(st.sampled_from(["payload", "x"]), RAW_VALUES)))
    | st.text(max_size=80).map(lambda t: orjson.dumps({"payload": t}))
    | st.binary(max_size=120).map(lambda b: orjson.dumps({"payload": base64.b64encode(b).decode()}))
)


@FUZZ
@given(
    body=OUTER_BODIES,
    key_id=st.none() | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
)
async def test_any_outer_body_is_a_plain_bad_signature(
    table: Table, raw_http: httpx.AsyncClient, body: bytes, key_id: str | None
) -> None:
    headers = {"x-key-id": key_id} if key_id is not None else {}
    response = await raw_http.post(f"/v1/seamless/{table.provider}", content=body, headers=headers)
    assert response.status_code == 200, response.text
    answer = response.json()  # plain: nothing authenticated, so nothing is sealed
    assert (answer["code"], answer["reason"]) == ("R2", "bad_signature"), answer
    assert "payload" not in answer and "balance" not in answer


@FUZZ
@given(
    provider=st.text(
        st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/?#%\\"),
        min_size=1,
        max_size=80,
    )
)
async def test_any_provider_in_the_path_is_known_or_a_plain_r2(
    table: Table, raw_http: httpx.AsyncClient, provider: str
) -> None:
    body = seal_event(table.client.key, table.provider, table.client.event("balance"))
    response = await raw_http.post(f"/v1/seamless/{provider}", content=body)
    if response.status_code == 404:  # a path the router does not match (say, "." or "..")
        operator_error(response)
        return
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["code"] == "R2" and answer["reason"] in ("unknown_provider", "bad_signature")


# --- (b) hostile JSON inside a valid envelope -----------------------------------------------------


def bet_of(table: Table) -> dict[str, Any]:
    return table.client.event(
        "bet",
        player_id=table.player_id,
        session_token=table.token,
        transaction_id="fz-" + secrets.token_hex(6),
        round_id="fz-" + secrets.token_hex(3),
        game_id="slot-1",
        amount=5,
        currency="EUR",
    )


def result_of(table: Table) -> dict[str, Any]:
    return {**bet_of(table), "event": "result", "kind": "jackpot"}


def promo_of(table: Table) -> dict[str, Any]:
    return table.client.event(
        "promo_win",
        player_id=table.player_id,
        transaction_id="fz-" + secrets.token_hex(6),
        promo_id="cup-1",
        amount=5,
        currency="EUR",
        round_id="fz-" + secrets.token_hex(3),
    )


def end_round_of(table: Table) -> dict[str, Any]:
    return table.client.event(
        "end_round", player_id=table.player_id, round_id="fz-" + secrets.token_hex(3)
    )


async def free_bets_of(table: Table, api: Api) -> Callable[[Table], dict[str, Any]]:
    """Bets of a free-round grant of the table's player with rounds enough for any test."""
    grant = await api.pool.fetchval(
        "INSERT INTO free_rounds (player_id, provider, game_id, rounds, bet_value, currency,"
        " expires_at) VALUES ($1, $2, 'slot-1', 100000, 10, 'EUR', now() + interval '1 day')"
        " RETURNING id",
        table.player_id,
        table.provider,
    )

    def free_bet_of(table: Table) -> dict[str, Any]:
        return {**bet_of(table), "amount": 0, "free_round_id": str(grant)}

    return free_bet_of


async def send_plaintext(table: Table, plaintext: bytes) -> dict[str, Any]:
    body = orjson.dumps({"payload": envelope.seal(table.client.key, table.provider, plaintext)})
    response = await table.client.http.post(f"/v1/seamless/{table.provider}", content=body)
    assert response.status_code == 200, response.text
    return open_answer(table.client.key, table.provider, response.content)


@FUZZ
@given(data=st.data())
async def test_hostile_events_get_contract_codes_and_move_no_money_when_refused(
    table: Table, api: Api, data: st.DataObject
) -> None:
    before = await api.balance(table.player_id)
    makers = [bet_of, result_of, promo_of, end_round_of, await free_bets_of(table, api)]
    base = data.draw(st.sampled_from(makers))(table)
    plaintext, broken = data.draw(hostile(base))
    answer = await send_plaintext(table, plaintext)
    contract_answer(answer)
    if broken:
        assert (answer["code"], answer["reason"]) == ("R3", "malformed_request"), answer
    after = await api.balance(table.player_id)
    if answer["code"] != "R0":
        assert after == before, answer
    elif base["event"] == "bet":
        assert after == answer["balance"] <= before
    else:
        assert after == answer["balance"] >= before


async def test_every_event_field_with_every_hostile_value(table: Table, api: Api) -> None:
    balance = 10_000
    for make in (bet_of, result_of, promo_of, end_round_of, await free_bets_of(table, api)):
        for plaintext in sweep(partial(make, table)):
            answer = await send_plaintext(table, plaintext)
            contract_answer(answer)
            if plaintext.count(b'"amount"') == 2:
                assert answer["reason"] == "malformed_request"  # the duplicate key
            if answer["code"] == "R0":
                balance = answer["balance"]
            else:
                # A refusal that could read the player says its balance: unchanged.
                assert answer.get("balance", balance) == balance, (plaintext[:300], answer)
    assert await api.balance(table.player_id) == balance


# --- (c) operator API bodies ----------------------------------------------------------------------

WRITE_ROUTES: list[tuple[str, str, Callable[[Table], dict[str, Any]]]] = [
    (
        "POST",
        "/v1/players",
        lambda t: {"player_id": "fz-" + secrets.token_hex(4), "currency": "EUR"},
    ),
    ("POST", "/v1/players/{player}/adjustments", lambda t: {"amount": 5, "reason": "fuzz"}),
    ("PUT", "/v1/players/{player}/limits", lambda t: {"wager": {"daily": 5000}, "loss": {}}),
    ("PUT", "/v1/players/{player}/status", lambda t: {"status": "active"}),
    ("PUT", "/v1/players/{player}/kyc", lambda t: {"tier": 1}),
    ("POST", "/v1/players/{player}/sessions", lambda t: {"provider": t.provider, "game_id": "g"}),
    *(
        (
            "POST",
            path,
            lambda t: {
                "player_id": t.player_id,
                "amount": 100,
                "currency": "EUR",
                "method": "card",
                "reference": "fz",
                "metadata": {"country": "IN"},
            },
        )
        for path in ("/v1/deposits", "/v1/withdrawals")
    ),
]


@pytest.mark.parametrize(
    "route", WRITE_ROUTES, ids=[f"{method} {path}" for method, path, _ in WRITE_ROUTES]
)
@settings(FUZZ, max_examples=10)
@given(data=st.data())
async def test_hostile_operator_bodies_are_contract_errors(
    table: Table,
    api: Api,
    route: tuple[str, str, Callable[[Table], dict[str, Any]]],
    data: st.DataObject,
) -> None:
    method, path, make = route
    before = await api.balance(table.player_id)
    body = data.draw(
        hostile(make(table)).map(lambda drawn: drawn[0])
        | st.binary(max_size=100)
        | JSON_VALUES.map(orjson.dumps)
    )
    response = await api.request(
        method,
        path.format(player=table.player_id),
        content=body,
        headers={"idempotency-key": "fz-" + secrets.token_hex(6)},
    )
    after = await api.balance(table.player_id)
    if response.status_code < 300:
        moved = response.json().get("delta", 0) if "adjustments" in path else 0
        assert after == before + moved, response.text
        # Whatever was accepted must have been a valid request: an active player stays usable.
        reset = await api.request(
            "PUT", f"/v1/players/{table.player_id}/status", json={"status": "active"}
        )
        assert reset.status_code == 200, reset.text
    else:
        operator_error(response)
        assert after == before


@pytest.mark.parametrize(
    "route", WRITE_ROUTES, ids=[f"{method} {path}" for method, path, _ in WRITE_ROUTES]
)
async def test_every_operator_field_with_every_hostile_value(
    table: Table, api: Api, route: tuple[str, str, Callable[[Table], dict[str, Any]]]
) -> None:
    method, path, make = route
    moved = 0
    for body in sweep(partial(make, table)):
        response = await api.request(
            method,
            path.format(player=table.player_id),
            content=body,
            headers={"idempotency-key": "sw-" + secrets.token_hex(6)},
        )
        if response.status_code < 300:
            moved += response.json().get("delta", 0) if "adjustments" in path else 0
        else:
            operator_error(response)
    assert await api.balance(table.player_id) == 10_000 + moved


async def test_duplicate_keys_and_nul_are_refused_by_the_operator_api(
    table: Table, api: Api
) -> None:
    adjust = f"/v1/players/{table.player_id}/adjustments"
    cases = [
        (b'{"amount": 5, "reason": "x", "amount": 500000}', "amount", "duplicate key: amount"),
        (b'{"amount": 5, "reason": "a\\u0000b"}', None, "must not contain U+0000"),
        (b'{"amount": 5, "reason": "ok", "x": ' + b"[" * 40 + b"]" * 40 + b"}", None, "deeper"),
        (b'{"amount": NaN, "reason": "x"}', None, "not valid UTF-8 JSON"),
        (b'{"amount": 5, "reason": "\xff"}', None, "not valid UTF-8 JSON"),
        (b'{"amount": 5.0, "reason": "x"}', "amount", "integer"),
        (b'{"amount": true, "reason": "x"}', "amount", "integer"),
        (f'{{"amount": {2**63}, "reason": "x"}}'.encode(), "amount", "integer"),
        (f'{{"amount": {-(10**15) - 1}, "reason": "x"}}'.encode(), "amount", "integer"),
    ]
    for body, field, message in cases:
        response = await api.request(
            "POST", adjust, content=body, headers={"idempotency-key": secrets.token_hex(6)}
        )
        error = operator_error(response)
        assert response.status_code == 400 and message in error["message"], (body, error)
        assert error.get("field") == field, (body, error)
    # A literal backslash followed by "u0000" is text, not U+0000.
    literal = await api.request(
        "POST",
        adjust,
        content=b'{"amount": 5, "reason": "a\\\\u0000b"}',
        headers={"idempotency-key": secrets.token_hex(6)},
    )
    assert literal.status_code == 201 and literal.json()["reason"] == "a\\u0000b"
    assert await api.balance(table.player_id) == 10_005


# --- documented refusals of the inner payload, one by one -----------------------------------------


def with_pairs(table: Table, **raw: str) -> bytes:
    """The table's bet with fields replaced by raw JSON text (a key set to "" is dropped)."""
    pairs = [(k, orjson.dumps(v).decode()) for k, v in bet_of(table).items()]
    pairs = [(k, raw.get(k, v)) for k, v in pairs if raw.get(k, v) != ""]
    return render(pairs)


INNER_CASES: list[tuple[str, Callable[[Table], bytes], tuple[str, str], str]] = [
    (
        "duplicate amount",
        lambda t: render(
            [*((k, orjson.dumps(v).decode()) for k, v in bet_of(t).items()), ("amount", "9000")]
        ),
        ("R3", "malformed_request"),
        "duplicate key: amount",
    ),
    (
        "duplicate event",
        lambda t: with_pairs(t)[:-1] + b',"event":"result"}',
        ("R3", "malformed_request"),
        "duplicate key: event",
    ),
    ("NaN", lambda t: with_pairs(t, amount="NaN"), ("R3", "malformed_request"), "not UTF-8 JSON"),
    ("Infinity", lambda t: with_pairs(t, amount="Infinity"), ("R3", "malformed_request"), "JSON"),
    ("1e400", lambda t: with_pairs(t, amount="1e400"), ("R3", "malformed_request"), "JSON"),
    ("2^63", lambda t: with_pairs(t, amount=str(2**63)), ("R3", "invalid_field"), "amount"),
    ("2^64", lambda t: with_pairs(t, amount=str(2**64)), ("R3", "invalid_field"), "amount"),
    ("10^15 + 1", lambda t: with_pairs(t, amount=str(10**15 + 1)), ("R3", "invalid_field"), "10"),
    ("negative", lambda t: with_pairs(t, amount="-5"), ("R3", "invalid_field"), "amount"),
    ("zero bet", lambda t: with_pairs(t, amount="0"), ("R3", "invalid_field"), "amount"),
    ("float", lambda t: with_pairs(t, amount="5.0"), ("R3", "invalid_field"), "integer"),
    ("true", lambda t: with_pairs(t, amount="true"), ("R3", "invalid_field"), "integer"),
    ("string", lambda t: with_pairs(t, amount='"5"'), ("R3", "invalid_field"), "integer"),
    ("no amount", lambda t: with_pairs(t, amount=""), ("R3", "malformed_request"), "amount"),
    ("bool time", lambda t: with_pairs(t, timestamp="true"), ("R3", "invalid_field"), "timestamp"),
    ("float time", lambda t: with_pairs(t, timestamp="1.5e9"), ("R3", "invalid_field"), "integer"),
    ("huge time", lambda t: with_pairs(t, timestamp=str(2**64)), ("R3", "invalid_field"), "time"),
    ("u64 time", lambda t: with_pairs(t, timestamp=str(2**64 - 1)), ("R2", "stale_request"), ""),
    (
        "array event",
        lambda t: with_pairs(t, event="[" * 30 + "]" * 30),
        ("R3", "unknown_event"),
        "array",
    ),
    (
        "deep extra",
        lambda t: with_pairs(t)[:-1] + b',"x":' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}",
        ("R3", "malformed_request"),
        "deeper than 32",
    ),
    (
        "orjson-deep",
        lambda t: with_pairs(t)[:-1] + b',"x":' + b"[" * 2000 + b"]" * 2000 + b"}",
        ("R3", "malformed_request"),
        "JSON",
    ),
    (
        "invalid UTF-8",
        lambda t: with_pairs(t).replace(b'"slot-1"', b'"slot-\xff"'),
        ("R3", "malformed_request"),
        "UTF-8",
    ),
    (
        "lone surrogate",
        lambda t: with_pairs(t, game_id='"\\ud800"'),
        ("R3", "malformed_request"),
        "JSON",
    ),
    (
        "byte-order mark",
        lambda t: b"\xef\xbb\xbf" + with_pairs(t),
        ("R3", "malformed_request"),
        "JSON",
    ),
    (
        "top-level array",
        lambda t: b"[" + with_pairs(t) + b"]",
        ("R3", "malformed_request"),
        "object",
    ),
    ("empty", lambda t: b"", ("R3", "malformed_request"), "JSON"),
]


@pytest.mark.parametrize(
    ("make", "expected", "message"),
    [case[1:] for case in INNER_CASES],
    ids=[case[0] for case in INNER_CASES],
)
async def test_documented_refusals_of_the_event(
    table: Table, api: Api, make: Callable[[Table], bytes], expected: tuple[str, str], message: str
) -> None:
    answer = await send_plaintext(table, make(table))
    assert (answer["code"], answer["reason"]) == expected, answer
    assert message in answer["message"], answer
    # With the balance whenever the player could be read, and never a changed one.
    assert answer.get("balance", 10_000) == 10_000
    assert await api.balance(table.player_id) == 10_000


async def test_nesting_up_to_the_limit_is_an_ignored_extra_field(table: Table, api: Api) -> None:
    depth = MAX_DEPTH - 1  # the event object itself is the first level
    plaintext = with_pairs(table)[:-1] + b',"x":' + b"[" * depth + b"]" * depth + b"}"
    answer = await send_plaintext(table, plaintext)
    assert (answer["code"], answer["balance"]) == ("R0", 9_995)
    # Colons in strings and nested objects take the second, duplicate-detecting parse.
    event = {**bet_of(table), "round_id": "r:1", "extra": {"a": {"b": [1, {"c": "d:e"}]}}}
    assert (await send_plaintext(table, orjson.dumps(event)))["code"] == "R0"
    assert await api.balance(table.player_id) == 9_990


# --- huge bodies: refused early, in bounded memory ------------------------------------------------

CHUNK = b"x" * 65536
TOTAL = 50 * 1024 * 1024


async def post_stream(
    asgi: ASGIApp, path: str, headers: list[tuple[bytes, bytes]]
) -> tuple[int, bytes, int, int]:
    """POST 50 MB to ``path`` straight through ASGI in 64 KiB chunks, made as they are read:
    (status, body, chunks read, peak bytes allocated while the app ran)."""
    read = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal read
        read += 1
        return {"type": "http.request", "body": CHUNK, "more_body": read * len(CHUNK) < TOTAL}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"wallet.test"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("wallet.test", 80),
    }
    tracemalloc.start()
    try:
        await asgi(scope, receive, send)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body, read, peak


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_50_mb_body_is_refused_without_being_read(
    asgi: ASGIApp, table: Table, api: Api, declared: bool
) -> None:
    length = [(b"content-length", str(TOTAL).encode())] if declared else []
    status, body, read, peak = await post_stream(asgi, f"/v1/seamless/{table.provider}", length)
    answer = orjson.loads(body)
    assert (status, answer["code"], answer["reason"]) == (200, "R2", "bad_signature")
    assert "exceeds 65536 bytes" in answer["message"]
    # At most the 64 KiB limit and one chunk more were read, not 800 chunks.
    assert read <= (0 if declared else 2), read
    assert peak < 2 * 1024 * 1024, peak

    auth = [
        (b"authorization", api.headers["authorization"].encode()),
        (b"idempotency-key", b"huge-" + secrets.token_hex(4).encode()),
    ]
    status, body, read, peak = await post_stream(
        asgi, f"/v1/players/{table.player_id}/adjustments", auth + length
    )
    error = orjson.loads(body)["error"]
    assert (status, error["code"]) == (400, "invalid_request") and "exceeds" in error["message"]
    assert read <= (0 if declared else 2) and peak < 2 * 1024 * 1024, (read, peak)
    assert await api.balance(table.player_id) == 10_000


async def test_deeply_nested_outer_bodies_are_bad_signatures(table: Table, api: Api) -> None:
    for depth in (MAX_DEPTH + 1, 1025, 30_000):
        body = b'{"payload":' + b"[" * depth + b"]" * depth + b"}"
        answer = await table.client.post(body)
        assert (answer["code"], answer["reason"]) == ("R2", "bad_signature")
    assert await api.balance(table.player_id) == 10_000


def test_a_usual_event_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The duplicate check costs two byte counts for a usual event; only colons in strings or
    nested objects take the second, duplicate-detecting parse."""
    second: list[bytes] = []
    real = strict_json._check_duplicates
    monkeypatch.setattr(
        strict_json, "_check_duplicates", lambda raw: second.append(raw) or real(raw)
    )
    event = {
        "event": "bet",
        "request_id": "req-3f9a0c1e2b4d",
        "timestamp": int(time.time()),
        "player_id": "p-42",
        "session_token": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "transaction_id": "b-1234567890",
        "round_id": "r-1",
        "game_id": "slot-7",
        "amount": 250,
        "currency": "EUR",
    }
    assert events.decode(orjson.dumps(event)) == event
    assert second == []
    for unusual in ({**event, "round_id": "r:1"}, {**event, "extra": {"a": 1}}):
        assert events.decode(orjson.dumps(unusual)) == unusual
    assert len(second) == 2


# --- the duplicate check itself -----------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "a:b", ":", "amount", '"', "\\"])
SPACE = st.sampled_from(["", " ", "\n", "\t "])
SCALARS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.none(),
    st.sampled_from(["x", "a:b", ":", '":"', "{"]),
)


@st.composite
def documents(draw: st.DrawFn, depth: int = 0) -> tuple[str, bool]:
    """JSON text of an object whose keys may repeat, with any spacing; and whether some object
    in it repeats a key."""
    pairs, repeated = [], False
    keys = draw(st.lists(KEYS, max_size=4))
    for key in keys:
        if depth < 2 and draw(st.booleans()):
            value, inner = draw(documents(depth + 1))
            repeated = repeated or inner
        else:
            value = orjson.dumps(draw(SCALARS)).decode()
        if draw(st.integers(0, 4)) == 0:
            value = f"[{value}]"
        pairs.append(f"{orjson.dumps(key).decode()}{draw(SPACE)}:{draw(SPACE)}{value}")
    repeated = repeated or len(keys) != len(set(keys))
    return "{" + ("," + draw(SPACE)).join(pairs) + "}", repeated


@settings(max_examples=120, deadline=None)
@given(document=documents())
def test_a_repeated_key_is_refused_wherever_it_is(document: tuple[str, bool]) -> None:
    text, repeated = document
    if repeated:
        with pytest.raises(strict_json.StrictJsonError, match="duplicate key"):
            strict_json.loads(text.encode())
    else:
        assert strict_json.loads(text.encode()) == orjson.loads(text)


# --- query strings of the read routes ------------------------------------------------------------


def cursor_of(value: Any) -> str:
    import json

    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


QUERY_VALUES = [
    "\x00",
    "a\x00b",
    "²",
    "٣",
    "9" * 5000,
    "-1",
    "0",
    "201",
    "1e3",
    "",
    "x" * 300,
    "0001-01-01T00:00:00+01:00",
    "0001-01-01T00:10:00+00:00",
    "9999-12-31T23:59:59-01:00",
    "2026-05-18T11:42:18",
    "2026-05-18T11:42:18Z",
    "0001-01-01",
    "9999-12-31",
    "2026-02-30",
    "2026-W01-1",
    "%ff",
    "'; DROP TABLE players; --",
    *(
        cursor_of(v)
        for v in (
            [{"a": 1}],
            [2**70],
            [12],
            ["zz"],
            [None],
            [True],
            [1.5],
            ["\x00"],
            ["0001-01-01T00:00:00+01:00", 1],
            ["2026-05-18T11:42:18+00:00", "x"],
            ["notatime", 1],
            [[1], [2]],
        )
    ),
    "!!!notbase64",
]
QUERY_PARAMS = {
    "/v1/players": ["status", "limit", "cursor"],
    "/v1/providers": ["cursor"],
    "/v1/api-keys": ["cursor"],
    "/v1/players/{player}/transactions": ["from", "to", "limit", "cursor"],
    "/v1/players/{player}/statement": ["from", "to"],
    "/v1/webhooks/calls": ["provider", "event", "code", "player_id", "from", "cursor"],
    "/v1/webhooks/failures": ["to", "cursor"],
    "/v1/reports/daily": ["date"],
    "/v1/audit": ["actor", "action", "target", "from", "to", "cursor"],
    "/v1/events": ["status", "payment_id", "cursor"],
    "/v1/reconciliation": ["psp", "date"],
}


async def test_every_query_parameter_with_every_hostile_value(
    table: Table, raw_http: httpx.AsyncClient, operator: Operator
) -> None:
    for path, names in QUERY_PARAMS.items():
        for name in names:
            for value in QUERY_VALUES:
                response = await raw_http.get(
                    path.format(player=table.player_id),
                    params={name: value},
                    headers=operator.headers,
                )
                if response.status_code != 200:
                    assert response.status_code in (400, 404), (
                        path,
                        name,
                        value,
                        response.text,
                    )
                    operator_error(response)
