"""The back office over httpx: sign-in and sessions, CSRF, what each role sees and may do, every
screen with real data, paging, bad filters, no secrets, and actions done once."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime

import asyncpg
import httpx
from starlette.types import ASGIApp

from app.admin import auth
from app.admin.pages import HEADERS
from tests.fixtures.app import Operator, Table, TableFactory
from tests.fixtures.payments import SandboxRoutes
from tests.support.backoffice import (
    ORIGIN,
    api_key,
    desk,
    failed_call,
    flagged_deposit,
    held_withdrawal,
)
from tests.support.keys import ADMIN_KEY


async def test_sign_in_sets_a_secure_session_cookie_and_sign_out_ends_it(
    asgi: ASGIApp, pool: asyncpg.Pool
) -> None:
    async with desk(asgi) as d:
        assert (await d.http.get("/admin/players")).headers["location"].endswith("/admin/sign-in")
        form = await d.get("/admin/sign-in")
        assert 'name="api_key"' in form
        response = await d.sign_in(ADMIN_KEY)
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(auth.COOKIE + "=")
        for flag in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
            assert flag.lower() in cookie.lower(), cookie
        token = d.http.cookies[auth.COOKIE]
        assert ADMIN_KEY not in cookie and len(token) >= 40
        page = await d.get("/admin/players")
        assert "admin:bootstrap" in page
        # Only hashes are stored: neither the token nor the key is in the table.
        rows = await pool.fetch("SELECT * FROM admin_sessions")
        stored = b"".join(
            bytes(v) if isinstance(v, bytes) else str(v).encode() for r in rows for v in r.values()
        )
        assert token.encode() not in stored and ADMIN_KEY.encode() not in stored
        out = await d.post("/admin/sign-out", d.hidden(page))
        assert out.status_code == 303 and auth.COOKIE not in d.http.cookies
        # The old token, sent again, opens nothing: its row is gone.
        again = await d.http.get("/admin/players", headers={"cookie": f"{auth.COOKIE}={token}"})
        assert again.status_code == 303
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM admin_sessions WHERE token_hash = $1",
                auth.session_hash(token),
            )
            == 0
        )


async def test_a_wrong_key_is_refused_and_the_page_carries_the_security_headers(
    asgi: ASGIApp,
) -> None:
    async with desk(asgi) as d:
        refused = await d.sign_in("wk_admin_not-a-key", expect=401)
        assert "Unknown or revoked API key" in refused.text
        assert auth.COOKIE not in refused.headers.get("set-cookie", "")
        empty = await d.sign_in("", expect=400)
        assert "Enter an API key" in empty.text
        for name, value in HEADERS.items():
            assert refused.headers[name] == value
        assert "default-src 'self'" in refused.headers["content-security-policy"]
        # A sign-in posted from another site is refused before the key is looked at.
        foreign = await d.http.post(
            "/admin/sign-in", data={"api_key": ADMIN_KEY}, headers={"origin": "https://evil.test"}
        )
        assert foreign.status_code == 403 and auth.COOKIE not in d.http.cookies


async def test_revoking_the_api_key_ends_its_sessions(asgi: ASGIApp, operator: Operator) -> None:
    key = await api_key(operator, "support")
    async with desk(asgi) as d:
        await d.sign_in(key["key"])
        assert "support" in await d.get("/admin/players")
        await operator.call("DELETE", f"/v1/api-keys/{key['id']}", expect=200)
        gone = await d.http.get("/admin/players")
        assert gone.status_code == 303 and gone.headers["location"].endswith("/sign-in")
        await d.sign_in(key["key"], expect=401)


async def test_every_screen_renders_with_real_data(
    asgi: ASGIApp,
    operator: Operator,
    table_factory: TableFactory,
    sandbox_routes: SandboxRoutes,
) -> None:
    table = await table_factory(50_000)
    await table.bet(1_000, round_id="r-admin", txn="bet-admin-1")
    await table.result(300, round_id="r-admin")
    failed = await failed_call(table, asgi)
    wdr = await held_withdrawal(operator, asgi, table.player_id, 2_000)
    dep = await flagged_deposit(operator, asgi, table.player_id)
    async with desk(asgi) as d:
        await d.sign_in(ADMIN_KEY)
        player = await d.get(f"/admin/players/{table.player_id}")
        assert (
            "473.00" in player and "47,300 minor units" in player and "r-admin" in player
        )  # balance after bet, result, hold
        assert "Latest sessions" in player and "slot-1" in player  # the table's session
        for path, seen in (
            ("/admin/players", "Players"),
            (f"/admin/players/{table.player_id}/transactions", "bet-admin-1"),
            (f"/admin/calls?player_id={table.player_id}", failed["reason"]),
            (f"/admin/rounds?player_id={table.player_id}", "r-admin"),
            (f"/admin/rounds/{table.provider}/{table.player_id}/r-admin", "Timeline"),
            ("/admin/withdrawals", wdr),
            (f"/admin/withdrawals/{wdr}", "Approve"),
            (f"/admin/events?payment_id={wdr}", "withdrawal.held"),
            ("/admin/deposits", dep),
            (f"/admin/deposits/{dep}", "amount_mismatch"),
            ("/admin/audit", "Audit log"),
            ("/admin/ledger", "Every invariant holds"),
            ("/admin/reports/daily", table.provider),
            ("/admin/reports/psp", "sandbox-a"),
            ("/admin/reports/provider", "Provider reconciliation"),
        ):
            assert seen in await d.get(path), path
        for path in ("/admin/players", f"/admin/withdrawals/{wdr}/approve"):
            answer = await d.http.get(path)
            assert all(answer.headers[k] == v for k, v in HEADERS.items()), path
        assert (await d.http.get("/admin/nowhere")).status_code == 404
        assert (await d.http.get("/admin/static/admin.css")).status_code == 200


async def test_lists_page_with_the_apis_cursors(asgi: ASGIApp, table_factory: TableFactory) -> None:
    table = await table_factory(10_000)
    for n in range(3):
        await table.bet(10, round_id=f"r-{n}", txn=f"bet-page-{n}")
    async with desk(asgi) as d:
        await d.sign_in(ADMIN_KEY)
        path = f"/admin/players/{table.player_id}/transactions"
        first = await d.get(path, limit="2")
        assert "bet-page-2" in first and "bet-page-1" in first and "bet-page-0" not in first
        link = re.search(r'<a href="([^"]+)" rel="next">', first)
        assert link is not None
        second = await d.get(link.group(1).replace("&amp;", "&"))
        assert "bet-page-0" in second and "bet-page-2" not in second
        assert 'rel="next"' not in second


async def test_a_call_answered_as_a_duplicate_is_marked_in_the_list(
    asgi: ASGIApp, table: Table
) -> None:
    await table.bet(10, txn="bet-twice")
    assert (await table.bet(10, txn="bet-twice"))["duplicate"] is True
    await asgi.state["wallet"].calls.flush()  # type: ignore[attr-defined]
    async with desk(asgi) as d:
        await d.sign_in(ADMIN_KEY)
        listed = await d.get("/admin/calls", player_id=table.player_id)
    assert listed.count("bet-twice") == 2
    assert listed.count('<span class="tag">duplicate</span>') == 1


async def test_bad_filters_re_render_the_form_with_the_apis_message(
    asgi: ASGIApp, table_factory: TableFactory
) -> None:
    table = await table_factory(1_000)
    async with desk(asgi) as d:
        await d.sign_in(ADMIN_KEY)
        for path, params, message in (
            ("/admin/calls", {"from": "yesterday"}, "from must be an RFC 3339 time"),
            ("/admin/calls", {"event": "nonsense"}, "event must be one of"),
            ("/admin/calls", {"reason": "nonsense"}, "reason must be one of"),
            ("/admin/calls", {"cursor": "forged"}, "cursor is not one this API gave out"),
            ("/admin/audit", {"to": "2026-13-01T00:00"}, "to must be"),
            ("/admin/players", {"player_id": "no spaces"}, "player_id must be"),
            ("/admin/players", {"limit": "9999"}, "limit must be"),
            ("/admin/reports/daily", {"date": "May 1"}, "date must be YYYY-MM-DD"),
            ("/admin/rounds", {"state": "closed"}, "give player_id"),
            (f"/admin/players/{table.player_id}/transactions", {"from": "x"}, "from must be"),
        ):
            page = await d.get(path, 400, **params)
            assert message in page, (path, params)
            assert '<form method="get"' in page  # the form again, to correct
        # A datetime-local value (no zone) is read as UTC, not refused.
        assert "Call history" in await d.get("/admin/calls", **{"from": "2026-01-01T00:00"})
        await d.get("/admin/players/nobody-at-all", 404)
        await d.get("/admin/calls/99999999999", 404)
        await d.get("/admin/withdrawals/wdr_nothing", 404)


async def test_a_failed_calls_detail_shows_no_session_token_or_key(
    asgi: ASGIApp, operator: Operator, table_factory: TableFactory
) -> None:
    table = await table_factory(1_000)
    await table.bet(100, round_id="r-ok")
    failed = await failed_call(table, asgi)
    provider_key = base64.b64encode(table.client.key).decode()
    async with desk(asgi) as d:
        await d.sign_in(ADMIN_KEY)
        listing = await d.get("/admin/calls", player_id=table.player_id, failures="on")
        ids = re.findall(r'<a href="/admin/calls/(\d+)">', listing)
        assert len(ids) == 1  # the refused bet only, not the posted one
        by_reason = await d.get("/admin/calls", player_id=table.player_id, reason=failed["reason"])
        assert re.findall(r'<a href="/admin/calls/(\d+)">', by_reason) == ids
        detail = await d.get(f"/admin/calls/{ids[0]}")
        assert failed["reason"] in detail and table.player_id in detail
        pages = [listing, detail, await d.get(f"/admin/players/{table.player_id}")]
        for html in pages:
            assert table.token not in html
            assert ADMIN_KEY not in html
            assert provider_key not in html


async def test_a_provider_report_is_uploaded_and_matched(
    asgi: ASGIApp, table_factory: TableFactory
) -> None:
    table = await table_factory(5_000)
    await table.bet(100, round_id="r-rec", txn="bet-rec-1")
    header = "transaction_id,round_id,player_id,event,amount,currency\n"
    line = f"bet-rec-1,r-rec,{table.player_id},bet,100,EUR\n"
    missing = f"bet-rec-9,r-rec,{table.player_id},bet,50,EUR\n"
    today = datetime.now(UTC).date().isoformat()
    async with desk(asgi) as d:
        await d.sign_in(ADMIN_KEY)
        form = d.hidden(await d.get("/admin/reports/provider"))

        async def upload(csv: str, **fields: str) -> httpx.Response:
            return await d.http.post(
                "/admin/reports/provider",
                data={"provider": table.provider, "date": today, **form, **fields},
                files={"report": ("report.csv", csv.encode(), "text/csv")},
                headers={"origin": ORIGIN},
            )

        clean = await upload(header + line)
        assert clean.status_code == 200 and "1 matched; nothing differs" in clean.text
        found = await upload(header + line + missing)
        assert "differences found" in found.text and "bet-rec-9" in found.text
        bad = await upload("not,a,report\n")
        assert bad.status_code == 400 and "error" in bad.text
        unknown = await upload(header, provider="no-such-provider")
        assert unknown.status_code == 404
        forged = await upload(header + line, csrf="0" * 64)
        assert forged.status_code == 403
