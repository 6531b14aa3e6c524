"""The back office in a real browser (headless Chromium, tests/support/browser.py), over real
HTTP at http://127.0.0.1 (a secure context, so the ``__Host-`` Secure cookie is kept): sign-in,
a player search, a failed call's detail and a held withdrawal's approval with its confirmation,
for a support key (sees it, may not approve) and an admin key. No console error (a CSP
violation is one), nothing asked of another origin.

The admin run also saves the main screens as PNGs: to ``WALLET_ADMIN_SCREENSHOTS`` when set
(``docs/img`` for the README's), else to the test's temporary folder.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.types import ASGIApp

from app.admin import auth
from tests.fixtures.app import Operator, TableFactory
from tests.fixtures.payments import SandboxRoutes
from tests.support.backoffice import api_key, failed_call, held_withdrawal
from tests.support.browser import Watched, chromium
from tests.support.keys import ADMIN_KEY
from tests.support.served import served

VIEWPORT = {"width": 1280, "height": 800}


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    async with chromium() as launched:
        yield launched


def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("WALLET_ADMIN_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.parametrize("role", ["support", "admin"])
async def test_sign_in_search_a_failed_call_and_a_withdrawal_approval(
    browser: Any,
    asgi: ASGIApp,
    operator: Operator,
    table_factory: TableFactory,
    sandbox_routes: SandboxRoutes,
    tmp_path: Path,
    role: str,
) -> None:
    table = await table_factory(120_000)
    await table.bet(2_500, round_id="r-browser", txn="bet-browser-1")
    await table.result(4_000, round_id="r-browser", txn="res-browser-1")
    failed = await failed_call(table, asgi)
    wdr = await held_withdrawal(operator, asgi, table.player_id, 20_000)
    key = ADMIN_KEY if role == "admin" else (await api_key(operator, "support"))["key"]
    folder = shots(tmp_path)

    async def snap(name: str) -> None:
        if role == "admin":
            path = folder / f"admin-{name}.png"
            await page.screenshot(path=str(path))
            assert path.stat().st_size > 5_000

    async with served(asgi) as origin:
        base = origin + "/admin"
        page, watched = await Watched.page(browser, origin, viewport=VIEWPORT)
        try:
            await page.goto(base + "/")
            assert page.url == base + "/sign-in"
            await page.get_by_label("API key").fill(key)
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url(base + "/players")
            cookies = await page.context.cookies()
            assert [(c["name"], c["secure"], c["httpOnly"], c["sameSite"]) for c in cookies] == [
                (auth.COOKIE, True, True, "Strict")
            ]
            assert (await page.locator(".role").inner_text()).lower() == role

            # A player search opens the player page.
            await page.get_by_label("Player id").fill(table.player_id)
            await page.get_by_role("button", name="Search").click()
            await page.wait_for_url(f"{base}/players/{table.player_id}")
            # 120,000 - 2,500 bet + 4,000 won - 20,000 held for the withdrawal, in cents
            assert "1,015.00" in await page.locator(".big").inner_text()
            await snap("player")

            # The failed call, from the history filtered to failures, and its detail.
            await page.goto(f"{base}/calls?player_id={table.player_id}&failures=on")
            await snap("calls")
            await page.locator("tr.fail a").first.click()
            await page.wait_for_url(f"{base}/calls/*")
            assert failed["reason"] in await page.locator("h1").inner_text()
            html = await page.content()
            assert table.token not in html and key not in html
            await snap("call")

            # The held withdrawal: support may look, admin approves it after confirming.
            await page.goto(base + "/withdrawals")
            await snap("withdrawals")
            await page.get_by_role("link", name=wdr).click()
            await page.wait_for_url(f"{base}/withdrawals/{wdr}")
            approve = page.get_by_role("link", name="Approve…")
            if role == "support":
                assert await approve.count() == 0
                # With the page's cookie, out of band (a 403 page would be a console error).
                forbidden = await page.context.request.get(f"{base}/withdrawals/{wdr}/approve")
                assert forbidden.status == 403
            else:
                await approve.click()
                await page.wait_for_url(f"{base}/withdrawals/{wdr}/approve")
                assert await page.locator("h1").inner_text() == "Approve this withdrawal?"
                await snap("confirm")
                await page.get_by_role("button", name="Confirm").click()
                await page.wait_for_url(f"{base}/withdrawals/{wdr}?done=approve")
                assert "approved" in await page.locator(".flash").inner_text()

            await page.goto(base + "/ledger")
            assert "Every invariant holds" in await page.content()
            await snap("ledger")
            await page.get_by_role("button", name="Sign out").click()
            await page.wait_for_url(base + "/sign-in")
            assert await page.context.cookies() == []
        finally:
            await page.context.close()
    assert not watched.problems, watched.problems
    await sandbox_routes.settle()
    status = (await operator.call("GET", f"/v1/withdrawals/{wdr}"))["status"]
    assert status == ("held" if role == "support" else "paid")
