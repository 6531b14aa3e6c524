"""The seamless call history (issue 12, defect 3): no value a caller sends can stop it, nothing
buffered is lost at shutdown, and a refused call is listed with its event, player and reason
whenever they could be read (contract 2, [1.1]).

A batch that Postgres (or asyncpg, before sending) refuses is split until the refused row is
alone; that row is stored in a safe form and every other row as it was.
"""

from __future__ import annotations

import base64
import secrets
import time
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from starlette.types import ASGIApp

from app.client import ProviderClient
from app.config import Settings
from app.seamless import calls as history
from app.seamless import envelope
from app.seamless.calls import CallLog, CallRecord
from app.seamless.events import IDENTIFIER
from tests.fixtures.app import Operator, Table, start_app


def call_row(provider: str, request_id: str | None = None, **fields: Any) -> CallRecord:
    row = CallRecord(
        provider=provider,
        event="bet",
        request_id=request_id or "req-" + secrets.token_hex(6),
        player_id="pl-x",
        transaction_id=None,
        code="R3",
        reason="invalid_field",
        wallet_transaction_id=None,
        duplicate=False,
        replayed=False,
        latency_us=120,
        created_at=datetime.now(UTC),
    )
    return row._replace(**fields)


async def rows_of(pool: asyncpg.Pool, request_ids: list[str]) -> dict[str, asyncpg.Record]:
    rows = await pool.fetch(
        "SELECT * FROM seamless_calls WHERE request_id = ANY($1::text[])", request_ids
    )
    return {r["request_id"]: r for r in rows}


async def flush(asgi: Any) -> None:
    await asgi.state["wallet"].calls.flush()


def test_safe_text_keeps_identifiers_and_marks_everything_else() -> None:
    assert history.safe_text("acme-1") == "acme-1"
    for hostile in ("\x00", "a\x00b", "\ud800", "\ufffd", "a b", "é", "x" * 65, "\\x00"):
        shown = history.safe_text(hostile)
        assert shown.isascii() or shown.endswith(history.CUT), shown
        assert "\x00" not in shown
        shown.encode()  # no surrogate left
        # Never mistaken for a real provider code or player id.
        assert not IDENTIFIER.fullmatch(shown), shown
    assert history.safe_text("\x00") == "\\x00"
    assert history.safe_text("x" * 100) == "x" * history.SHOWN + history.CUT


async def test_a_refused_batch_is_split_and_only_the_bad_rows_take_a_safe_form(
    pool: asyncpg.Pool,
) -> None:
    prov = "calls-" + secrets.token_hex(4)
    good = [call_row(prov) for _ in range(5)]
    nul = call_row("\x00" + prov)  # Postgres: invalid byte sequence for encoding "UTF8": 0x00
    surrogate = call_row(prov, player_id="\ud800")  # asyncpg cannot even encode it
    slow = call_row(prov, latency_us=2**40)  # past the integer column
    log = CallLog(pool)
    for row in (good[0], nul, good[1], good[2], surrogate, good[3], slow, good[4]):
        log.record(row)
    await log.flush()
    assert log.buffered == 0
    ids = [r.request_id for r in (*good, nul, surrogate, slow) if r.request_id]
    stored = await rows_of(pool, ids)
    assert set(stored) == set(ids), "rows were lost or held back"
    for row in good:
        assert stored[row.request_id]["provider"] == prov  # type: ignore[index]
        assert stored[row.request_id]["player_id"] == "pl-x"  # type: ignore[index]
    assert stored[nul.request_id]["provider"] == "\\x00" + prov  # type: ignore[index]
    assert stored[surrogate.request_id]["player_id"] == "\\ud800"  # type: ignore[index]
    assert stored[slow.request_id]["latency_us"] == history.MAX_LATENCY_US  # type: ignore[index]
    assert log.unwritable == 0


async def test_later_calls_are_still_written_and_nothing_is_lost_at_shutdown(
    pool: asyncpg.Pool,
) -> None:
    prov = "calls-" + secrets.token_hex(4)
    log = CallLog(pool, interval=0.05)
    log.start()
    try:
        first = call_row("\x00")
        log.record(first)
        deadline = time.monotonic() + 5
        while log.buffered and time.monotonic() < deadline:
            await log.flush()
        later = [call_row(prov) for _ in range(3)]
        for row in later:
            log.record(row)
    finally:
        await log.close()  # the last rows are written by the shutdown flush, if not before
    stored = await rows_of(pool, [r.request_id for r in (first, *later) if r.request_id])
    assert len(stored) == 4
    assert log.buffered == 0


@pytest.mark.parametrize(
    ("path", "stored"),
    [
        ("%00", "\\x00"),  # the request of the issue: U+0000 in the provider
        ("%ff", "\\ufffd"),  # invalid UTF-8 in the path: the server decodes it as U+FFFD
        ("p" * 70, "p" * 64 + "\N{HORIZONTAL ELLIPSIS}"),  # longer than any provider code
    ],
)
async def test_a_hostile_provider_path_does_not_stop_the_history(
    http: httpx.AsyncClient, asgi: ASGIApp, pool: asyncpg.Pool, table: Table, path: str, stored: str
) -> None:
    marker = secrets.token_hex(4)
    # The provider part is unique to this test run, so its row is found by its safe form.
    if len(path) < 64:
        path, stored = path + marker, stored + marker
    response = await http.post(f"/v1/seamless/{path}", content=b'{"payload": ""}')
    assert response.status_code == 200
    assert response.json()["reason"] == "unknown_provider"
    later = await table.bet(10)
    assert later["code"] == "R0"
    await flush(asgi)
    await flush(asgi)
    rows = await pool.fetch(
        "SELECT provider, code, reason FROM seamless_calls WHERE provider = $1", stored
    )
    assert [(r["code"], r["reason"]) for r in rows] == [("R2", "unknown_provider")]
    written = await pool.fetchval(
        "SELECT count(*) FROM seamless_calls WHERE provider = $1 AND player_id = $2",
        table.provider,
        table.player_id,
    )
    assert written == 1, "the call after the hostile one was not written"


async def test_nul_in_a_request_id_is_not_echoed_nor_stored(
    http: httpx.AsyncClient, asgi: ASGIApp, pool: asyncpg.Pool, table: Table
) -> None:
    event = table.client.event("balance", player_id=table.player_id)
    event["request_id"] = "req\x00" + secrets.token_hex(4)
    answer = await table.client.send_event(event)
    assert (answer["code"], answer["reason"]) == ("R3", "invalid_field")
    assert "request_id" not in answer
    assert (await table.bet(10))["code"] == "R0"
    await flush(asgi)
    rows = await pool.fetch(
        "SELECT event, request_id, player_id, reason FROM seamless_calls"
        " WHERE provider = $1 ORDER BY id",
        table.provider,
    )
    assert [(r["event"], r["request_id"], r["player_id"], r["reason"]) for r in rows][:1] == [
        ("balance", None, table.player_id, "invalid_field")
    ]
    assert [r["event"] for r in rows] == ["balance", "bet"]


async def test_refused_calls_are_listed_with_event_player_and_reason(
    table: Table, operator: Operator, asgi: ASGIApp
) -> None:
    t = table
    await t.bet("10")  # type: ignore[arg-type]  # R3 invalid_field: a string is not an amount
    await t.client.send("bet", player_id=t.player_id, session_token=t.token)  # R3 malformed
    await t.client.send("bett", player_id=t.player_id)  # R3 unknown_event
    await t.bet(10, session_token="not-a-session")  # R2 invalid_session
    stale = t.client.event("balance", player_id=t.player_id)
    stale["timestamp"] = int(time.time()) - 3600
    await t.client.send_event(stale)  # R2 stale_request
    await t.bet(10, round_id="r-closed")
    await t.result(0, round_id="r-closed")
    await t.bet(10, round_id="r-closed", txn="late-" + secrets.token_hex(4))  # R1 round_closed
    await flush(asgi)
    failures = (
        await operator.call(
            "GET",
            f"/v1/webhooks/failures?player_id={t.player_id}&provider={t.provider}",
            expect=200,
        )
    )["data"]
    seen = [(f["event"], f["player_id"], f["code"], f["reason"]) for f in reversed(failures)]
    assert seen == [
        ("bet", t.player_id, "R3", "invalid_field"),
        ("bet", t.player_id, "R3", "malformed_request"),
        ("bett", t.player_id, "R3", "unknown_event"),
        ("bet", t.player_id, "R2", "invalid_session"),
        ("balance", t.player_id, "R2", "stale_request"),
        ("bet", t.player_id, "R1", "round_closed"),
    ]
    assert all(f["request_id"] for f in failures)
    assert failures[-1]["transaction_id"] is not None  # readable on the refused bet too
    # One reason among them: the filter narrows to it (the back office filters so too).
    one = await operator.call(
        "GET", f"/v1/webhooks/calls?player_id={t.player_id}&reason=unknown_event", expect=200
    )
    assert [(c["event"], c["reason"]) for c in one["data"]] == [("bett", "unknown_event")]


async def test_unreadable_calls_are_listed_with_what_could_be_read(
    table: Table, operator: Operator, asgi: ASGIApp, http: httpx.AsyncClient
) -> None:
    t = table
    bad_key = base64.b64encode(secrets.token_bytes(32)).decode()
    forged = ProviderClient("", t.provider, bad_key, http=http)
    await forged.send("balance", player_id=t.player_id)  # R2 bad_signature: nothing readable
    # A payload that opens but is not an object: nothing readable but the provider.
    body = orjson.dumps({"payload": envelope.seal(t.client.key, t.provider, b"[1, 2]")})
    await http.post(t.client.path, content=body)
    await flush(asgi)
    path = f"/v1/webhooks/failures?provider={t.provider}"
    calls = (await operator.call("GET", path, expect=200))["data"]
    assert [(c["event"], c["player_id"], c["reason"]) for c in reversed(calls)] == [
        (None, None, "bad_signature"),
        (None, None, "malformed_request"),
    ]


async def test_the_history_of_a_stopping_app_is_written_whole(
    settings: Settings, pool: asyncpg.Pool, operator: Operator
) -> None:
    """A dedicated app: hostile and ordinary calls, then shutdown before any interval passed."""
    provider = await operator.provider()
    code, key = provider["code"], provider["keys"][0]["key"]
    player = await operator.player(1000)
    await operator.session(player, code)
    marker = secrets.token_hex(4)
    async with AsyncExitStack() as stack:
        app = await start_app(replace(settings), stack)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://w")
        stack.push_async_callback(client.aclose)
        provider_client = ProviderClient("", code, key, http=client)
        await client.post(f"/v1/seamless/%00{marker}", content=b"{}")
        for _ in range(3):
            await provider_client.send("balance", player_id=player)
    hostile = await pool.fetchval(
        "SELECT count(*) FROM seamless_calls WHERE provider = $1", "\\x00" + marker
    )
    ordinary = await pool.fetchval(
        "SELECT count(*) FROM seamless_calls WHERE provider = $1 AND player_id = $2", code, player
    )
    assert (hostile, ordinary) == (1, 3)
