"""Headless Chromium for the browser tests (tests/web/test_docs_ui.py, tests/admin/), driven
through Playwright: Debian's ``chromium`` (``.ci/run`` installs it), or the browser that
``WALLET_TEST_CHROMIUM`` names. Without one the browser tests fail and say what to install: a
check that cannot run is not a check that passed."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import playwright.async_api as playwright
import pytest

CHROMIUM = os.environ.get("WALLET_TEST_CHROMIUM") or shutil.which("chromium")


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """A launched headless Chromium, closed at the end of the block."""
    async with playwright.async_playwright() as pw:
        try:
            launched = await pw.chromium.launch(executable_path=CHROMIUM)
        except playwright.Error as exc:
            pytest.fail(
                "no Chromium to drive: install Debian's chromium (apt-get install chromium, as "
                f".ci/run does) or set WALLET_TEST_CHROMIUM to a Chromium binary: {exc}"
            )
        try:
            yield launched
        finally:
            await launched.close()


class Watched:
    """What a page did: its requests, and any console error, page error, failed request or
    request that left ``base`` (which is refused)."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.requested: list[str] = []

    @classmethod
    async def page(cls, browser: Any, base: str, **context_options: Any) -> tuple[Any, Watched]:
        watched = cls()
        context = await browser.new_context(**context_options)
        page = await context.new_page()
        page.on("console", lambda m: m.type == "error" and watched.note(f"console: {m.text}"))
        page.on("pageerror", lambda exc: watched.note(f"page error: {exc}"))
        page.on("requestfailed", lambda r: watched.note(f"failed: {r.url} {r.failure}"))
        page.on("request", lambda r: watched.requested.append(r.url))

        async def outside(route: Any) -> None:
            watched.note(f"left the origin: {route.request.url}")
            await route.abort()

        await context.route(lambda url: not url.startswith(base + "/"), outside)
        return page, watched

    def note(self, problem: str) -> None:
        self.problems.append(problem)
