"""The edges of back-office sessions: failed sign-ins, the bootstrap key's rotation, sign-out's
CSRF check, and what a role between support and admin sees."""

from __future__ import annotations

import secrets
from dataclasses import replace

import asyncpg
from starlette.requests import Request
from starlette.types import ASGIApp

from app.admin import auth
from app.config import Secret
from tests.fixtures.app import Operator
from tests.support.backoffice import api_key, desk
from tests.support.keys import ADMIN_KEY


async def test_sign_in_is_refused_for_a_while_after_many_failures(asgi: ASGIApp) -> None:
    address = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250)}"
    async with desk(asgi, client=address) as d:
        for _ in range(auth.SIGN_IN_FAILURES):
            await d.sign_in("wk_admin_guess-" + secrets.token_hex(4), expect=401)
        blocked = await d.sign_in(ADMIN_KEY, expect=429)  # even the right key, for now
        assert int(blocked.headers["retry-after"]) == auth.FAILURE_WINDOW_SECONDS
        assert auth.COOKIE not in d.http.cookies
    async with desk(asgi, client="10.255.255.1") as elsewhere:  # another address is not held up
        await elsewhere.sign_in(ADMIN_KEY)


async def test_a_new_bootstrap_key_ends_the_old_ones_sessions(asgi: ASGIApp) -> None:
    w = asgi.state["wallet"]  # type: ignore[attr-defined]
    async with desk(asgi) as d:
        await d.sign_in(ADMIN_KEY)
        token = d.http.cookies[auth.COOKIE]
    request = Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/admin/players",
            "headers": [(b"cookie", f"{auth.COOKIE}={token}".encode())],
        }
    )
    rotated = replace(w, settings=replace(w.settings, admin_api_key=Secret("a-new-admin-key")))
    unset = replace(w, settings=replace(w.settings, admin_api_key=None))
    async with w.pool.acquire() as conn:
        session = await auth.current(request, conn, w)
        assert session is not None and session.principal.actor == "admin:bootstrap"
        assert await auth.current(request, conn, rotated) is None
        assert await auth.current(request, conn, unset) is None


async def test_sign_out_needs_the_csrf_token(asgi: ASGIApp) -> None:
    async with desk(asgi) as d:
        await d.sign_in(ADMIN_KEY)
        refused = await d.post("/admin/sign-out", {"csrf": "nope"})
        assert refused.status_code == 403
        await d.get("/admin/players")  # still signed in
        foreign = await d.post(
            "/admin/sign-out", d.hidden(await d.get("/admin/players")), origin="https://evil.test"
        )
        assert foreign.status_code == 403
        await d.get("/admin/players")


async def test_an_operator_key_may_replay_but_not_approve(
    asgi: ASGIApp, operator: Operator
) -> None:
    key = await api_key(operator, "operator")
    async with desk(asgi) as d:
        await d.sign_in(key["key"])
        page = await d.get("/admin/players")
        assert 'class="role role-operator"' in page and f"apikey:{key['id']}" in page
        # The nav shows what the operator role may read: every screen here is READ.
        for label in ("Players", "Calls", "Rounds", "Withdrawals", "Events", "Audit", "Ledger"):
            assert f">{label}</a>" in page, label
        await d.get("/admin/withdrawals/wdr_none/approve", expect=403)
        await d.get("/admin/events/evt_none/replay", expect=404)  # allowed, but no such event


async def test_signing_in_again_replaces_the_browsers_session(
    asgi: ASGIApp, pool: asyncpg.Pool
) -> None:
    async with desk(asgi) as d:
        await d.sign_in(ADMIN_KEY)
        first = d.http.cookies[auth.COOKIE]
        await d.sign_in(ADMIN_KEY)
        second = d.http.cookies[auth.COOKIE]
    assert first != second
    stored = [
        await pool.fetchval(
            "SELECT count(*) FROM admin_sessions WHERE token_hash = $1", auth.session_hash(t)
        )
        for t in (first, second)
    ]
    assert stored == [0, 1]
