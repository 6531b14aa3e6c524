"""OpenTelemetry tracing (app/tracing.py): off unless configured, and when on, the spans of a
seamless delivery, of its group-commit batch, of payments and of outbox deliveries, the caller's
traceparent honoured and sent on, and the trace in every log line.

Each traced test starts an app of its own whose spans go to an in-memory exporter (through the
``tracing.configure`` hook); the session app stays untraced.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.types import ASGIApp

from app import logs, tracing
from app.client import ProviderClient, open_answer, seal_event
from app.config import ConfigError, PspSettings, Secret, Settings
from app.db import Queries
from app.main import TracedWalletApp, WalletApp, create_app
from app.payments import outbox
from app.payments.psp import SandboxPsp
from app.payments.service import PaymentRequest, Payments
from app.seamless import events
from app.seamless.batch import GroupCommit
from app.seamless.service import _posting
from tests.fixtures.app import Operator, Table, start_app
from tests.payments.fake_psps import FakePsp
from tests.payments.psps import ScriptedPsp, webhook
from tests.support.logs import every_log_line
from tests.support.processes import start_wallet, stop_wallet, wait_ready


@dataclass
class Traced:
    """An app tracing into ``exporter``, and a client to it."""

    app: ASGIApp
    http: httpx.AsyncClient
    exporter: InMemorySpanExporter

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def trace_of(self, span: ReadableSpan) -> list[ReadableSpan]:
        assert span.context is not None
        return [
            s for s in self.spans() if s.context and s.context.trace_id == span.context.trace_id
        ]

    def client(self, table: Table) -> ProviderClient:
        return ProviderClient(
            "http://wallet.test", table.provider, table.client.key, http=self.http
        )


@pytest.fixture
async def traced(settings: Settings) -> AsyncIterator[Traced]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.configure(provider)
    try:
        async with AsyncExitStack() as stack:
            app = await start_app(settings, stack)
            http = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://wallet.test"
            )
            stack.push_async_callback(http.aclose)
            yield Traced(app, http, exporter)
    finally:
        tracing.configure(None)
    # The lifespan's end took away everything it installed.
    assert not tracing.installed()
    assert not hasattr(asyncpg.Connection.fetch, "__wrapped__")


def hex_id(value: int, digits: int) -> str:
    return format(value, f"0{digits}x")


def bet_event(client: ProviderClient, table: Table, amount: int = 100) -> dict[str, Any]:
    return client.event(
        "bet",
        player_id=table.player_id,
        session_token=table.token,
        round_id="r1",
        game_id="slot-1",
        amount=amount,
        currency="EUR",
        transaction_id="bet-" + secrets.token_hex(6),
    )


async def post_event(
    traced: Traced, table: Table, event: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[dict[str, Any], httpx.Response]:
    key = table.client.key
    response = await traced.http.post(
        f"/v1/seamless/{table.provider}",
        content=seal_event(key, table.provider, event),
        headers={"content-type": "application/json", **(headers or {})},
    )
    assert response.status_code == 200
    return open_answer(key, table.provider, response.content), response


# ---------------------------------------------------------------------------------------------
# Configuration


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp_proto_http"}, True),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": " none , "}, False),
        # `none` wins over an endpoint set for every signal
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, False),
        ({"OTEL_SERVICE_NAME": "wallet-eu"}, False),  # naming the service turns nothing on
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "TRUE"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "false"}, True),
    ],
)
def test_which_variables_turn_tracing_on(env: dict[str, str], on: bool) -> None:
    assert tracing.wanted(env) is on
    assert Settings.from_env(env).tracing is on


def test_an_unknown_exporter_is_refused_at_start_up() -> None:
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER: unknown exporter zipkin"):
        Settings.from_env({"OTEL_TRACES_EXPORTER": "otlp,zipkin"})


def test_a_provider_from_the_environment_names_the_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    built = tracing.for_app(True)
    assert built is not None
    try:
        assert built.provider.resource.attributes["service.name"] == "wallet"
    finally:
        built.provider.shutdown()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "wallet-eu")
    built = tracing.for_app(True)
    assert built is not None
    try:
        assert built.provider.resource.attributes["service.name"] == "wallet-eu"
    finally:
        built.provider.shutdown()
    assert tracing.for_app(False) is None


# ---------------------------------------------------------------------------------------------
# Off


async def test_off_nothing_is_installed_and_logs_carry_no_trace(
    settings: Settings, http: httpx.AsyncClient, table: Table
) -> None:
    assert not settings.tracing
    app = create_app(settings)
    assert type(app) is WalletApp and not isinstance(app, TracedWalletApp)
    assert not tracing.installed()
    assert not hasattr(asyncpg.Connection.fetch, "__wrapped__")  # no instrumentor's wrapper
    with every_log_line() as (_, stream):
        assert (await table.bet(100))["code"] == "R0"
    assert not tracing.installed()
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    answered = [line for line in lines if "answered R0" in line["message"]]
    assert answered, lines
    for line in lines:
        assert "trace_id" not in line and "span_id" not in line
    assert answered[0]["request_id"].startswith("req_")


# ---------------------------------------------------------------------------------------------
# A seamless bet


async def test_the_server_span_keeps_the_route_not_the_raw_path_or_query(
    traced: Traced, operator: Operator
) -> None:
    player = await operator.player()
    response = await traced.http.get(
        f"/v1/players/{player}?probe=secret-{player}", headers=operator.headers
    )
    assert response.status_code == 200, response.text
    (server,) = [s for s in traced.spans() if s.kind == SpanKind.SERVER]
    assert server.name == "GET /v1/players/{player_id}"
    assert server.attributes is not None
    recorded = {k: v for k, v in server.attributes.items() if player in str(v)}
    assert recorded == {}, recorded
    assert "secret" not in repr(dict(server.attributes))


async def test_a_bet_is_one_trace_from_the_server_span_down(traced: Traced, table: Table) -> None:
    client = traced.client(table)
    event = bet_event(client, table)
    answer, response = await post_event(traced, table, event)
    assert answer["code"] == "R0"

    (server,) = [s for s in traced.spans() if s.kind == SpanKind.SERVER]
    assert server.name == "POST /v1/seamless/{provider}"
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/v1/seamless/{provider}"
    assert server.attributes["wallet.request_id"] == response.headers["x-request-id"]
    assert server.parent is None  # no traceparent sent: the trace starts here
    trace = traced.trace_of(server)
    assert server.context is not None
    children = [s.name for s in trace if s.parent and s.parent.span_id == server.context.span_id]
    assert sorted(children) == [
        "seamless.admission",
        "seamless.envelope",
        "seamless.post",
        "seamless.response",
    ]
    assert server.attributes["wallet.event"] == "bet"
    assert server.attributes["wallet.provider"] == table.provider
    assert server.attributes["wallet.code"] == "R0"
    assert server.attributes["wallet.reason"] == "ok"
    assert server.attributes["wallet.provider_request_id"] == event["request_id"]
    assert server.attributes["wallet.replayed"] is False
    # The provider's keys were read for the first time: Postgres under the envelope's span.
    (envelope,) = [s for s in trace if s.name == "seamless.envelope"]
    assert any(
        s.kind == SpanKind.CLIENT
        for s in trace
        if s.parent and s.parent.span_id == envelope.context.span_id
    )

    # The batch: a trace of its own, linked to the event's span, which names it back.
    (post,) = [s for s in trace if s.name == "seamless.post"]
    batch = _batch_of(traced, post)
    assert batch.attributes is not None and batch.attributes["wallet.batch.size"] == 1
    assert [link.context.span_id for link in batch.links] == [post.context.span_id]
    assert any(
        s.parent and s.parent.span_id == batch.context.span_id and s.kind == SpanKind.CLIENT
        for s in traced.spans()
    ), "the batch's SQL call is a span under the batch"

    # Nothing secret in any span: not the session token, not the provider's key.
    text = repr([(s.name, dict(s.attributes or {})) for s in traced.spans()])
    assert table.token not in text
    assert table.client.key.hex() not in text
    assert base64.b64encode(table.client.key).decode() not in text


def _batch_of(traced: Traced, post: ReadableSpan) -> ReadableSpan:
    assert post.attributes is not None
    span_id = post.attributes["wallet.batch.span_id"]
    trace_id = post.attributes["wallet.batch.trace_id"]
    (batch,) = [
        s
        for s in traced.named("seamless.batch")
        if hex_id(s.context.span_id, 16) == span_id and hex_id(s.context.trace_id, 32) == trace_id
    ]
    return batch


async def test_a_providers_traceparent_is_the_parent(traced: Traced, table: Table) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    client = traced.client(table)
    answer, _ = await post_event(
        traced, table, bet_event(client, table), {"traceparent": f"00-{trace_id}-{parent_id}-01"}
    )
    assert answer["code"] == "R0"
    (server,) = [s for s in traced.spans() if s.kind == SpanKind.SERVER]
    assert server.context is not None and server.parent is not None
    assert hex_id(server.context.trace_id, 32) == trace_id
    assert hex_id(server.parent.span_id, 16) == parent_id
    assert server.parent.is_remote
    assert {s.name for s in traced.trace_of(server)} >= {"seamless.envelope", "seamless.post"}


async def test_a_malformed_traceparent_starts_a_trace_of_its_own(
    traced: Traced, table: Table
) -> None:
    client = traced.client(table)
    answer, _ = await post_event(
        traced, table, bet_event(client, table), {"traceparent": "00-not-a-trace-01"}
    )
    assert answer["code"] == "R0"
    (server,) = [s for s in traced.spans() if s.kind == SpanKind.SERVER]
    assert server.parent is None


async def test_a_refusal_is_traced_with_its_code(traced: Traced, table: Table) -> None:
    client = traced.client(table)
    answer, _ = await post_event(traced, table, bet_event(client, table, amount=10**9))
    assert answer["code"] == "R4"
    (server,) = [s for s in traced.spans() if s.kind == SpanKind.SERVER]
    assert server.attributes is not None
    assert (server.attributes["wallet.code"], server.attributes["wallet.reason"]) == (
        "R4",
        "insufficient_funds",
    )


async def test_concurrent_bets_each_name_their_batch_and_it_links_back(
    traced: Traced, table_factory: Any
) -> None:
    tables = [await table_factory() for _ in range(6)]
    answers = await asyncio.gather(
        *(post_event(traced, table, bet_event(traced.client(table), table)) for table in tables)
    )
    assert [a["code"] for a, _ in answers] == ["R0"] * 6
    posts = traced.named("seamless.post")
    assert len(posts) == 6
    for post in posts:
        batch = _batch_of(traced, post)
        assert post.context.span_id in {link.context.span_id for link in batch.links}
        assert post.attributes is not None
        assert post.attributes["wallet.batch.size"] == len(batch.links)


async def test_two_events_in_one_batch_are_both_linked(
    traced: Traced, pool: asyncpg.Pool, table_factory: Any
) -> None:
    # Straight at the group commit: two requests that post on the same turn of the loop share
    # one batch, whatever the timing of the HTTP path before.
    one, two = await table_factory(), await table_factory()
    commit = GroupCommit(pool, Queries.load().seamless_batch)

    async def balance_of(table: Table) -> tuple[asyncpg.Record, int]:
        parsed = events.parse(traced.client(table).event("balance", player_id=table.player_id))
        with tracing.span("request") as span:
            assert span is not None
            row = await commit.post(_posting(table.provider, parsed, events.digest(parsed)))
            return row, span.get_span_context().span_id

    (row_one, span_one), (row_two, span_two) = await asyncio.gather(
        balance_of(one), balance_of(two)
    )
    await commit.close()
    assert row_one["reason"] == row_two["reason"] == "ok"
    (batch,) = traced.named("seamless.batch")
    assert batch.attributes is not None and batch.attributes["wallet.batch.size"] == 2
    assert {link.context.span_id for link in batch.links} == {span_one, span_two}
    for request in traced.named("request"):
        assert request.attributes is not None
        assert request.attributes["wallet.batch.span_id"] == hex_id(batch.context.span_id, 16)


async def test_log_lines_carry_the_trace_of_their_span(traced: Traced, table: Table) -> None:
    client = traced.client(table)
    with every_log_line() as (_, stream):
        answer, response = await post_event(traced, table, bet_event(client, table))
    assert answer["code"] == "R0"
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    (answered,) = [line for line in lines if "answered R0" in line["message"]]
    (server,) = [s for s in traced.spans() if s.kind == SpanKind.SERVER]
    assert answered["trace_id"] == hex_id(server.context.trace_id, 32)
    assert answered["span_id"] == hex_id(server.context.span_id, 16)
    assert answered["request_id"] == response.headers["x-request-id"]
    for line in lines:  # every line is still one whole JSON object with its usual keys
        assert {"time", "level", "logger", "message", "request_id"} <= set(line)


# ---------------------------------------------------------------------------------------------
# Payments and the outbox


async def recording_psp(name: str) -> tuple[FakePsp, list[httpx.Headers]]:
    """A fake PSP route (the wallet's real adapter over a simulated PSP) that keeps the headers
    of every request it receives."""
    psp = FakePsp(name)
    seen: list[httpx.Headers] = []
    serve = psp._serve

    async def recording(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return await serve(request)

    await psp.http.aclose()
    psp.http = psp.adapter.http = httpx.AsyncClient(transport=httpx.MockTransport(recording))
    return psp, seen


async def deposit_through_recording_psp(
    app: ASGIApp, http: httpx.AsyncClient, operator: Operator, name: str, amount: int
) -> tuple[httpx.Response, httpx.Headers]:
    """A deposit routed to a PSP that records the headers of its one call: (answer, headers)."""
    psp, seen = await recording_psp(name)
    payments = app.state["wallet"].payments  # type: ignore[attr-defined]
    saved = payments.psps
    payments.psps = [psp]
    try:
        player = await operator.player()
        response = await http.post(
            "/v1/deposits",
            json={"player_id": player, "amount": amount, "currency": "EUR", "method": "card"},
            headers={**operator.headers, "idempotency-key": "tr-" + secrets.token_hex(6)},
        )
    finally:
        payments.psps = saved
        await psp.aclose()
    assert response.status_code == 201, response.text
    (headers,) = seen
    return response, headers


async def test_a_deposit_sends_traceparent_and_request_id_to_the_psp(
    traced: Traced, operator: Operator
) -> None:
    response, headers = await deposit_through_recording_psp(
        traced.app, traced.http, operator, "trace-psp", 1_500
    )
    assert headers["x-request-id"] == response.headers["x-request-id"]
    version, trace_id, parent_id, flags = headers["traceparent"].split("-")
    assert version == "00" and int(flags, 16) & 1  # sampled
    (server,) = [s for s in traced.spans() if s.kind == SpanKind.SERVER]
    assert server.name == "POST /v1/deposits"
    assert trace_id == hex_id(server.context.trace_id, 32)
    (start,) = traced.named("payments.start")
    assert parent_id == hex_id(start.context.span_id, 16)
    assert start.attributes is not None
    assert start.attributes["wallet.payment_id"] == response.json()["id"]


async def test_a_psp_webhook_is_traced_with_its_outcome(
    traced: Traced, pool: asyncpg.Pool, operator: Operator
) -> None:
    psp = ScriptedPsp("psp-a")
    payments = Payments(pool, Queries.load(), [psp], webhook_base="https://w")
    player = await operator.player()
    deposit = await payments.create_deposit(
        PaymentRequest(player, 800, "EUR", "card"), "tr-" + secrets.token_hex(6)
    )
    body, signature = webhook(deposit, "succeeded")
    served = traced.app.state["wallet"].payments  # type: ignore[attr-defined]
    saved = served.psps
    served.psps = [psp]
    try:
        response = await traced.http.post(
            "/v1/psp/psp-a/webhook",
            content=body,
            headers={"content-type": "application/json", "x-signature": signature},
        )
    finally:
        served.psps = saved
    assert response.json() == {"outcome": "moved_to_succeeded"}
    (server,) = [s for s in traced.spans() if s.kind == SpanKind.SERVER]
    assert server.name == "POST /v1/psp/{psp}/webhook"
    assert server.attributes is not None
    assert server.attributes["wallet.psp"] == "psp-a"
    assert server.attributes["wallet.outcome"] == "moved_to_succeeded"
    assert signature not in repr([dict(s.attributes or {}) for s in traced.spans()])


async def test_an_outbox_delivery_sends_traceparent_and_its_event_id(
    traced: Traced, pool: asyncpg.Pool, operator: Operator
) -> None:
    received: list[tuple[httpx.Headers, dict[str, Any]]] = []

    async def operator_platform(request: httpx.Request) -> httpx.Response:
        received.append((request.headers, orjson.loads(request.content)))
        return httpx.Response(200)

    payments = Payments(pool, Queries.load(), [ScriptedPsp("psp-a")], webhook_base="https://w")
    player = await operator.player()
    created = await payments.create_deposit(
        PaymentRequest(player, 700, "EUR", "card"), "tr-" + secrets.token_hex(6)
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(operator_platform)) as http:
        box = outbox.Outbox(pool, Queries.load(), http, "http://operator.test/events", b"s" * 16)
        while (await box.deliver_due())["delivered"]:
            pass
    ours = [(h, body) for h, body in received if body["data"]["id"] == created["id"]]
    assert ours
    headers, body = ours[0]
    assert headers["x-request-id"] == body["id"]  # background work: the event's own id
    _, trace_id, parent_id, _ = headers["traceparent"].split("-")
    (delivery,) = [
        s
        for s in traced.named("outbox.deliver")
        if s.attributes and s.attributes["wallet.event_id"] == body["id"]
    ]
    assert trace_id == hex_id(delivery.context.trace_id, 32)
    assert parent_id == hex_id(delivery.context.span_id, 16)
    assert delivery.attributes is not None and delivery.attributes["wallet.delivered"] is True


async def test_an_undelivered_event_is_logged_with_its_delivery_trace(
    traced: Traced, pool: asyncpg.Pool, operator: Operator
) -> None:
    payments = Payments(pool, Queries.load(), [ScriptedPsp("psp-a")], webhook_base="https://w")
    created = await payments.create_deposit(
        PaymentRequest(await operator.player(), 700, "EUR", "card"), "tr-" + secrets.token_hex(6)
    )

    async def operator_platform(request: httpx.Request) -> httpx.Response:
        # Down for this test's event only: other tests' events are delivered as usual.
        ours = orjson.loads(request.content)["data"]["id"] == created["id"]
        return httpx.Response(503 if ours else 200)

    with every_log_line() as (_, stream):
        async with httpx.AsyncClient(transport=httpx.MockTransport(operator_platform)) as http:
            box = outbox.Outbox(
                pool, Queries.load(), http, "http://operator.test/events", b"s" * 16
            )
            # Ours fails once, then waits for its retry: not due again in this loop.
            while sum((await box.deliver_due()).values()):
                pass
    (failed,) = [
        s
        for s in traced.named("outbox.deliver")
        if s.attributes and s.attributes["wallet.delivered"] is False
    ]
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    (warning,) = [
        line
        for line in lines
        if "not delivered" in line["message"]
        and str(failed.attributes and failed.attributes["wallet.event_id"]) in line["message"]
    ]
    assert failed.context is not None
    assert warning["trace_id"] == hex_id(failed.context.trace_id, 32)


async def test_without_tracing_the_request_id_still_goes_to_the_psp(
    asgi: ASGIApp, http: httpx.AsyncClient, operator: Operator
) -> None:
    response, headers = await deposit_through_recording_psp(asgi, http, operator, "plain-psp", 900)
    assert headers["x-request-id"] == response.headers["x-request-id"]
    assert "traceparent" not in headers


async def test_psp_calls_name_their_payment_without_a_request() -> None:
    seen: list[httpx.Headers] = []

    async def psp(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(200, json={"psp_payment_id": "psp-1", "status": "pending"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(psp)) as http:
        adapter = SandboxPsp("p", "http://psp.test", "key", b"secret", http)
        assert await adapter.status("psp-1") == "pending"  # the poller: no request bound
        bound = logs.bind_request_id("req_caller")
        try:
            assert await adapter.status("psp-1") == "pending"
        finally:
            logs.reset_request_id(bound)
    assert [h["x-request-id"] for h in seen] == ["psp-1", "req_caller"]
    assert all("traceparent" not in h for h in seen)  # tracing is off


async def test_the_psp_client_is_instrumented_only_while_traced(settings: Settings) -> None:
    route = PspSettings(
        "traced-psp", "sandbox", "http://127.0.0.1:9", Secret("k" * 16), Secret("s" * 16),
        ("EUR",), ("card",),
    )  # fmt: skip
    provider = TracerProvider()
    tracing.configure(provider)
    try:
        async with AsyncExitStack() as stack:
            app = await start_app(replace(settings, psps=(route,)), stack)
            (adapter,) = app.state["wallet"].payments.psps  # type: ignore[attr-defined]
            assert adapter.http._is_instrumented_by_opentelemetry
            assert tracing.installed()
    finally:
        tracing.configure(None)
    assert not adapter.http._is_instrumented_by_opentelemetry
    assert not tracing.installed()


def test_an_untraced_process_never_loads_the_sdk_or_an_instrumentation() -> None:
    script = (
        "import sys\n"
        "from app.config import Settings\n"
        "from app.main import create_app\n"
        "create_app(Settings(database_url='postgresql://x/y', redis_url='redis://x'))\n"
        "print(sorted(m for m in sys.modules if m.startswith(("
        "'opentelemetry.sdk.trace', 'opentelemetry.instrumentation', 'opentelemetry.exporter'))))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]", done.stderr


def test_span_sites_are_a_shared_no_op_when_off() -> None:
    assert not tracing.ON
    with tracing.span("anything", {"a": 1}) as span:
        assert span is None
    assert tracing.span("one") is tracing.span("other")
    assert tracing.current() is None and tracing.ids() is None
    headers: dict[str, str] = {}
    tracing.inject(headers)
    assert headers == {}


# ---------------------------------------------------------------------------------------------
# wallet serve, as an operator runs it


class Collector:
    """An OTLP/HTTP trace receiver: keeps the spans of every export request."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Any]] = []  # (resource attributes, span)
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    resource = {
                        a.key: a.value.string_value for a in resource_spans.resource.attributes
                    }
                    for scope_spans in resource_spans.scope_spans:
                        collector.spans.extend((resource, s) for s in scope_spans.spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.slow
def test_each_worker_exports_its_spans_and_flushes_them_when_it_stops(
    settings: Settings, tmp_path: Path
) -> None:
    collector = Collector()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_SERVICE_NAME": "wallet-test",
        # Longer than the test: only the shutdown's flush can deliver the spans.
        "OTEL_BSP_SCHEDULE_DELAY": "600000",
    }
    server = start_wallet(settings, tmp_path / "wallet.log", workers=2, env=env)
    trace_id = secrets.token_hex(16)
    try:
        wait_ready(server)
        for _ in range(8):
            response = httpx.get(
                f"{server.base}/healthz",
                headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
            )
            assert response.status_code == 200
        assert collector.spans == []  # still in the workers' queues
    finally:
        assert stop_wallet(server) == 0, server.output()
        collector.close()
    health = [
        (resource, span)
        for resource, span in collector.spans
        if span.name == "GET /healthz" and span.trace_id.hex() == trace_id
    ]
    assert len(health) == 8, server.output()
    assert {resource["service.name"] for resource, _ in health} == {"wallet-test"}
