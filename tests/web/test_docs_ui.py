"""/docs: Swagger UI renders the document in a real browser, under a path prefix too, with no
console error, and the page asks nothing of any other origin; its files ship with the package.

The test app is served over real HTTP by uvicorn in this event loop and driven by headless
Chromium (tests/support/browser.py).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from app.openapi import document
from app.web import docs
from tests.support.browser import Watched, chromium
from tests.support.served import served

PREFIX = "/wallet"
ADMIN_KEY = os.environ["WALLET_ADMIN_API_KEY"]  # set by tests/conftest.py
ROOT = Path(__file__).resolve().parents[2]
DOCS_UI = ROOT / "app" / "web" / "docs_ui"


class Prefixed:
    """What the app sees behind a proxy that serves it under ``prefix``: ``root_path`` set, the
    path kept whole (as the ASGI spec says). Paths outside the prefix are not the app's: 404."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.prefix:
            path = scope["path"]
            if path != self.prefix and not path.startswith(self.prefix + "/"):
                await send({"type": "http.response.start", "status": 404, "headers": []})
                await send({"type": "http.response.body", "body": b"outside the prefix"})
                return
            scope = {**scope, "root_path": self.prefix}
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    async with chromium() as launched:
        yield launched


def summaries() -> list[str]:
    """A few operation summaries of the document, from several tags."""
    wanted = [("/healthz", "get"), ("/v1/players", "post"), ("/v1/seamless/{provider}", "post")]
    return [document()["paths"][path][method]["summary"] for path, method in wanted]


@pytest.mark.parametrize("prefix", ["", PREFIX], ids=["root", "prefixed"])
async def test_docs_render_in_a_browser(browser: Any, asgi: ASGIApp, prefix: str) -> None:
    async with served(Prefixed(asgi, prefix)) as origin:
        base = origin + prefix
        page, watched = await Watched.page(browser, base)
        try:
            response = await page.goto(base + "/docs")
            assert response is not None and response.status == 200
            for summary in summaries():
                await page.get_by_text(summary, exact=True).first.wait_for(timeout=30_000)
            assert await page.title() == document()["info"]["title"]
            # Markdown is rendered, not shown raw: the description's list and code are elements.
            info = page.locator(".info .renderedMarkdown")
            assert await info.locator("li code").count() > 0
            assert "`" not in await info.inner_text()
            assert await page.get_by_role("button", name="Authorize").count() == 1
        finally:
            await page.context.close()
    assert not watched.problems, watched.problems
    assert f"{base}/openapi.json" in watched.requested
    assert all(url.startswith(base + "/") for url in watched.requested), watched.requested


async def test_try_it_out_calls_the_api_under_the_prefix(browser: Any, asgi: ASGIApp) -> None:
    """Authorize with an admin key, then "Try it out" on a GET: the call reaches the app under
    the prefix (the document's server), and its answer is shown."""
    async with served(Prefixed(asgi, PREFIX)) as origin:
        base = origin + PREFIX
        page, watched = await Watched.page(browser, base)
        try:
            await page.goto(base + "/docs#/reports/checkLedger")  # opens that operation
            await page.get_by_role("button", name="Authorize").click()
            await page.locator(".auth-container input").fill(ADMIN_KEY)
            await page.locator(".auth-btn-wrapper .authorize").click()
            await page.locator(".btn-done").click()
            operation = page.locator("#operations-reports-checkLedger")
            await operation.get_by_role("button", name="Try it out").click()
            async with page.expect_response(lambda r: "/v1/ledger/check" in r.url) as answer:
                await operation.get_by_role("button", name="Execute").click()
            called = await answer.value
            assert called.url == f"{base}/v1/ledger/check"
            assert called.status == 200, await called.text()
            assert (await called.request.all_headers())["authorization"] == f"Bearer {ADMIN_KEY}"
            shown = operation.locator(".live-responses-table .response-col_description")
            await shown.get_by_text('"ok": true').wait_for(timeout=10_000)
        finally:
            await page.context.close()
    assert not watched.problems, watched.problems


async def test_the_error_codes_page_is_styled_within_its_policy(
    browser: Any, asgi: ASGIApp
) -> None:
    async with served(asgi) as origin:
        page, watched = await Watched.page(browser, origin)
        try:
            response = await page.goto(origin + "/docs/errors#route_degraded")
            assert response is not None and response.status == 200
            # Its style sheet applied (the policy admits it by hash: a refused one is a console
            # error), and the code's two cases and its Retry-After note are items of their own.
            section = page.locator("#route_degraded")
            assert await section.evaluate("e => getComputedStyle(e).borderTopStyle") == "solid"
            assert await section.locator("li").count() == 3
        finally:
            await page.context.close()
    assert not watched.problems, watched.problems


def test_served_files_are_package_data() -> None:
    """What /docs/assets/ serves is installed with the package (so the Docker image has it)."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        patterns = tomllib.load(f)["tool"]["setuptools"]["package-data"]["app"]
    for name in docs.ASSETS:
        assert (DOCS_UI / name).is_file(), name
        assert any(fnmatch.fnmatch(f"web/docs_ui/{name}", p) for p in patterns), name


def test_vendored_files_are_the_ones_the_readme_names() -> None:
    """The sums in docs_ui/README.md are those of the files: nothing was edited by hand."""
    readme = (DOCS_UI / "README.md").read_text()
    sums = dict(
        (name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, re.M)
    )
    assert set(sums) == {name for name in docs.ASSETS if name != "docs.js"}
    for name, digest in sums.items():
        assert hashlib.sha256((DOCS_UI / name).read_bytes()).hexdigest() == digest, name
    # One version named throughout, so that an update cannot leave the note half old.
    assert len(set(re.findall(r"swagger-ui-dist@(\d+\.\d+\.\d+)", readme))) == 1
