"""Observability: Prometheus metrics on /metrics, JSON log lines carrying the request's
correlation id, and no secret in any log line."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from starlette.types import ASGIApp

from app import logs
from app.client import ProviderClient, new_id, seal_event
from app.config import ConfigError, Settings
from app.locks import PlayerLocks, new_token
from app.metrics import Metrics
from app.redis_client import create_redis
from tests.fixtures.app import Operator, Table
from tests.support.keys import ADMIN_KEY
from tests.support.logs import RawRecords, every_log_line

# ---------------------------------------------------------------------------------------------
# Metrics


async def scrape(http: httpx.AsyncClient) -> str:
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def value(text: str, series: str) -> float:
    """The value of one exposed series, e.g. ``name{a="b"}``; 0 when not exposed yet."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


BET_OK = 'wallet_seamless_requests_total{code="R0",event="bet",reason="ok"}'


async def test_a_bet_counts_once_in_the_requests_counter(
    http: httpx.AsyncClient, table: Table
) -> None:
    before = await scrape(http)
    assert (await table.bet(100))["code"] == "R0"
    after = await scrape(http)
    assert value(after, BET_OK) == value(before, BET_OK) + 1
    latency = 'wallet_seamless_request_seconds_count{event="bet"}'
    assert value(after, latency) == value(before, latency) + 1


async def test_duplicates_and_idempotency_conflicts_have_their_counters(
    http: httpx.AsyncClient, table: Table
) -> None:
    duplicates = 'wallet_seamless_duplicates_total{event="bet"}'
    conflicts = 'wallet_seamless_idempotency_conflicts_total{event="bet"}'
    txn = "obs-" + secrets.token_hex(6)
    assert (await table.bet(100, txn=txn))["code"] == "R0"
    before = await scrape(http)

    again = await table.bet(100, txn=txn)
    assert again["code"] == "R0" and again["duplicate"] is True
    middle = await scrape(http)
    assert value(middle, duplicates) == value(before, duplicates) + 1
    assert value(middle, conflicts) == value(before, conflicts)

    changed = await table.bet(200, txn=txn)
    assert (changed["code"], changed["reason"]) == ("R3", "idempotency_conflict")
    after = await scrape(http)
    assert value(after, conflicts) == value(middle, conflicts) + 1
    assert value(after, duplicates) == value(middle, duplicates)
    series = 'wallet_seamless_requests_total{code="R3",event="bet",reason="idempotency_conflict"}'
    assert value(after, series) == value(middle, series) + 1


async def test_a_replayed_answer_counts_as_a_replay_not_a_duplicate(
    http: httpx.AsyncClient, table: Table
) -> None:
    event = table.client.event(
        "bet",
        player_id=table.player_id,
        session_token=table.token,
        round_id="r1",
        game_id="slot-1",
        amount=100,
        currency="EUR",
        transaction_id=new_id("bet"),
    )
    first = await table.client.send_event(event)
    before = await scrape(http)
    assert await table.client.send_event(event) == first
    after = await scrape(http)
    assert value(after, "wallet_seamless_replays_total") == (
        value(before, "wallet_seamless_replays_total") + 1
    )
    duplicates = 'wallet_seamless_duplicates_total{event="bet"}'
    assert value(after, duplicates) == value(before, duplicates)


async def test_an_unparsed_event_is_labelled_unknown(http: httpx.AsyncClient, table: Table) -> None:
    series = 'wallet_seamless_requests_total{code="R3",event="unknown",reason="unknown_event"}'
    before = await scrape(http)
    answer = await table.client.send("spin", player_id=table.player_id)
    assert answer["reason"] == "unknown_event"
    assert value(await scrape(http), series) == value(before, series) + 1


async def test_pool_and_call_history_gauges_are_exposed(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    text = await scrape(http)
    assert value(text, "wallet_db_pool_max") == settings.db_pool_max
    assert 1 <= value(text, "wallet_db_pool_size") <= settings.db_pool_max
    assert re.search(r"^wallet_db_pool_idle \d", text, re.M)
    assert re.search(r"^wallet_call_log_buffered \d", text, re.M)
    assert re.search(r"^wallet_call_log_dropped_total \d", text, re.M)
    assert "# TYPE wallet_lock_wait_seconds histogram" in text
    assert "# TYPE wallet_lock_timeouts_total counter" in text


async def test_http_metrics_are_labelled_by_route_template(
    http: httpx.AsyncClient, operator: Operator
) -> None:
    player_id = await operator.player()
    await operator.call("GET", f"/v1/players/{player_id}", expect=200)
    missing = "/v1/no-such-route-" + secrets.token_hex(4)
    assert (await http.get(missing)).status_code == 404
    await http.request("BREW", "/healthz")
    text = await scrape(http)
    found = 'wallet_http_requests_total{method="GET",route="/v1/players/{player_id}",status="200"}'
    assert value(text, found) >= 1
    assert value(text, 'wallet_http_requests_total{method="GET",route="unmatched",status="404"}')
    assert value(text, 'wallet_http_requests_total{method="other",route="/healthz",status="405"}')
    assert value(text, 'wallet_http_request_seconds_count{route="/v1/players/{player_id}"}') >= 1
    # Raw paths would make a label's values unbounded.
    assert player_id not in text and missing not in text


async def test_lock_waits_and_timeouts_are_observed(settings: Settings) -> None:
    assert settings.redis_url is not None
    redis = create_redis(settings.redis_url, timeout_ms=1000)
    metrics = Metrics()  # a second registry in this process: no clash with the app's
    locks = PlayerLocks(redis, ttl_ms=5000, wait_ms=50, observe=metrics.lock_waited)
    bare = PlayerLocks(redis, ttl_ms=5000, wait_ms=50)  # usable without metrics
    player = "lock-" + secrets.token_hex(4)
    try:
        await locks.load_scripts()
        holder = new_token()
        assert await bare.wait(player, holder)
        assert not await locks.wait(player, new_token())
        await locks.release(player, holder)
        assert await locks.wait(player, new_token())
    finally:
        await redis.delete(f"wallet:{{p:{player}}}:lock")
        await redis.aclose()
    text = metrics.render().decode()
    assert value(text, "wallet_lock_wait_seconds_count") == 2
    assert value(text, "wallet_lock_timeouts_total") == 1
    assert value(text, "wallet_lock_wait_seconds_sum") >= 0.05


# ---------------------------------------------------------------------------------------------
# Logs


@dataclass
class Captured:
    stream: io.StringIO
    raw: RawRecords
    mark: int = 0

    def lines(self) -> list[dict[str, Any]]:
        """The JSON lines written so far."""
        return [orjson.loads(line) for line in self.stream.getvalue().splitlines()]

    def since_mark(self) -> list[dict[str, Any]]:
        return self.lines()[self.mark :]

    def set_mark(self) -> None:
        self.mark = len(self.lines())


@pytest.fixture
def captured() -> Iterator[Captured]:
    """Every logger at DEBUG into the wallet's JSON handler, and a raw copy of each record."""
    with every_log_line() as (raw, stream):
        yield Captured(stream, raw)


def server_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # httpx logs each request in the test's own task, after the app answered: a client's line.
    return [line for line in lines if not line["logger"].startswith(("httpx", "httpcore"))]


async def test_seamless_log_lines_carry_the_correlation_id(
    http: httpx.AsyncClient, table: Table, captured: Captured
) -> None:
    event = table.client.event(
        "bet",
        player_id=table.player_id,
        session_token=table.token,
        round_id="r1",
        game_id="slot-1",
        amount=100,
        currency="EUR",
        transaction_id=new_id("bet"),
    )
    captured.set_mark()
    response = await http.post(
        table.client.path, content=seal_event(table.client.key, table.provider, event)
    )
    rid = response.headers["x-request-id"]
    lines = server_lines(captured.since_mark())
    assert lines, "the seamless service logs each answer at debug level"
    assert all(line["request_id"] == rid for line in lines), lines
    answered = [line for line in lines if line["logger"] == "app.seamless.service"]
    assert answered and answered[0]["provider_request_id"] == event["request_id"]
    assert answered[0]["provider_request_id"] != rid


async def test_a_caller_sent_request_id_is_the_correlation_id(
    http: httpx.AsyncClient, table: Table, captured: Captured
) -> None:
    rid = "corr-" + secrets.token_hex(6)
    event = table.client.event("balance", player_id=table.player_id)
    captured.set_mark()
    response = await http.post(
        table.client.path,
        content=seal_event(table.client.key, table.provider, event),
        headers={"x-request-id": rid},
    )
    assert response.headers["x-request-id"] == rid
    lines = server_lines(captured.since_mark())
    assert lines and all(line["request_id"] == rid for line in lines)


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status"),
    [
        ("POST", "/v1/players", {"player_id": "p", "currency": "euro"}, {}, 400),
        ("GET", "/v1/players/obs-missing-player", None, {}, 404),
        ("GET", "/v1/no-such-route", None, {}, 404),
        ("GET", "/v1/ledger/check", None, {"authorization": "Bearer nope"}, 401),
    ],
)
async def test_operator_error_lines_and_bodies_carry_the_correlation_id(
    operator: Operator,
    captured: Captured,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str],
    status: int,
) -> None:
    captured.set_mark()
    response = await operator.http.request(
        method, path, json=body, headers={**operator.headers, **headers}
    )
    assert response.status_code == status
    rid = response.headers["x-request-id"]
    assert response.json()["error"]["request_id"] == rid
    lines = server_lines(captured.since_mark())
    assert any(f"answered {status}" in line["message"] for line in lines), lines
    assert all(line["request_id"] == rid for line in lines), lines


async def test_an_unhandled_error_is_logged_and_answered_with_the_correlation_id(
    asgi: ASGIApp, captured: Captured, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics: Metrics = asgi.state["wallet"].metrics  # type: ignore[attr-defined]

    def broken() -> bytes:
        raise RuntimeError("scrape failed")

    monkeypatch.setattr(metrics, "render", broken)
    transport = httpx.ASGITransport(app=asgi, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://wallet.test") as client:
        captured.set_mark()
        # In a task of its own: the id stays bound where the exception escaped, as in a server.
        response = await asyncio.create_task(client.get("/metrics"))
    assert response.status_code == 500
    rid = response.headers["x-request-id"]
    assert response.json()["error"]["request_id"] == rid
    lines = server_lines(captured.since_mark())
    errors = [line for line in lines if line["level"] == "error"]
    assert errors and all(line["request_id"] == rid for line in lines), lines
    assert "RuntimeError: scrape failed" in errors[0]["exc_info"]


async def test_secrets_never_reach_the_logs(
    http: httpx.AsyncClient, operator: Operator, captured: Captured
) -> None:
    provider = await operator.provider()
    key = provider["keys"][0]["key"]
    player_id = await operator.player(5_000)
    token = await operator.session(player_id, provider["code"])
    client = ProviderClient("http://wallet.test", provider["code"], key, http=http)
    bet = dict(round_id="r1", game_id="slot-1", amount=100, currency="EUR")

    assert (await client.send("login", player_id=player_id, session_token=token))["code"] == "R0"
    ok = await client.send(
        "bet", player_id=player_id, session_token=token, transaction_id=new_id("t"), **bet
    )
    assert ok["code"] == "R0"
    fake_token = secrets.token_urlsafe(32)
    refused = await client.send(
        "bet", player_id=player_id, session_token=fake_token, transaction_id=new_id("t"), **bet
    )
    assert refused["reason"] == "invalid_session"
    wrong_key = base64.b64encode(secrets.token_bytes(32)).decode()
    impostor = ProviderClient("http://wallet.test", provider["code"], wrong_key, http=http)
    forged = await impostor.send(
        "bet", player_id=player_id, session_token=token, transaction_id=new_id("t"), **bet
    )
    assert forged["reason"] == "bad_signature"
    bearers = ["wk_admin_" + secrets.token_urlsafe(32), "sk_live_" + secrets.token_hex(12)]
    for bearer in bearers:
        response = await http.get("/v1/ledger/check", headers={"authorization": f"Bearer {bearer}"})
        assert response.status_code == 401

    output = captured.stream.getvalue()
    assert "app.seamless.service" in output and "answered 401" in output  # it did log
    raw = "\n".join(captured.raw.texts)
    for secret in [key, token, fake_token, wrong_key, ADMIN_KEY, *bearers]:
        assert secret not in output
        assert secret not in raw


def test_redaction_masks_secret_shapes_wherever_they_slip_in() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("app.test_redaction")
    handler = logs.make_handler(stream, json=True)
    logger.addHandler(handler)
    logger.propagate = False
    provider_key = base64.b64encode(secrets.token_bytes(32)).decode()
    session_token = secrets.token_urlsafe(32)
    api_key = "wk_admin_" + secrets.token_urlsafe(32)
    registered = "odd-shaped-" + secrets.token_hex(8)
    logs.register_secret(registered)
    try:
        logger.warning("key %s token %s", provider_key, session_token)
        logger.warning("headers: %s", {"authorization": f"Bearer {api_key}"})
        logger.warning(
            "body: %s", orjson.dumps({"session_token": "short-one", "amount": 1}).decode()
        )
        logger.warning("dsn postgresql://wallet:hunter22@db:5432/wallet and %s", registered)
        try:
            raise ValueError(f"bad key {api_key}")
        except ValueError:
            logger.exception("failed", extra={"detail": session_token})
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    output = stream.getvalue()
    for secret in [provider_key, session_token, api_key, "short-one", "hunter22", registered]:
        assert secret not in output
    lines = [orjson.loads(line) for line in output.splitlines()]
    assert lines[1]["message"] == "headers: {'authorization': '[redacted]'}"
    assert "wk_admin_[redacted]" in lines[4]["exc_info"]
    assert lines[4]["detail"] == "[redacted]"
    assert '"amount": 1' in lines[2]["message"] or '"amount":1' in lines[2]["message"]
    assert "postgresql://wallet:[redacted]@db:5432/wallet" in lines[3]["message"]


def test_a_json_line_has_the_documented_fields() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("app.test_shape")
    handler = logs.make_handler(stream, json=True)
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    bound = logs.bind_request_id("req_shape")
    try:
        logger.info("hello %s", "world", extra={"provider_request_id": "r-1"})
    finally:
        logs.reset_request_id(bound)
        logger.removeHandler(handler)
        logger.propagate = True
    line = orjson.loads(stream.getvalue())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line.pop("time"))
    assert line == {
        "level": "info",
        "logger": "app.test_shape",
        "message": "hello world",
        "request_id": "req_shape",
        "provider_request_id": "r-1",
    }


def test_text_format_and_the_format_setting() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("app.test_text")
    handler = logs.make_handler(stream, json=False)
    logger.addHandler(handler)
    logger.propagate = False
    bound = logs.bind_request_id("req_text")
    try:
        logger.warning("plain")
    finally:
        logs.reset_request_id(bound)
        logger.removeHandler(handler)
        logger.propagate = True
    assert stream.getvalue().rstrip().endswith("WARNING app.test_text plain request_id=req_text")
    assert logs.json_from_env({}) is True
    assert logs.json_from_env({"WALLET_LOG_FORMAT": "text"}) is False
    with pytest.raises(ConfigError, match="WALLET_LOG_FORMAT"):
        logs.json_from_env({"WALLET_LOG_FORMAT": "xml"})
