"""Every error's ``docs_url`` is a page this service serves (``GET /docs/errors``), with an entry
for the code, under a path prefix too; and a 401 says how to authenticate (WWW-Authenticate)."""

from __future__ import annotations

import dataclasses
import re
from contextlib import AsyncExitStack

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import Settings
from app.openapi import document
from app.web import error_docs
from app.web.errors import (
    AuthenticationFailed,
    InvalidRequest,
    WalletError,
    error_classes,
)
from tests.fixtures.app import start_app
from tests.support.keys import ADMIN_KEY


def _any(cls: type[WalletError]) -> WalletError:
    """An instance of ``cls`` whatever its constructor asks (only its answer's shape matters)."""
    error = cls.__new__(cls)
    error.message, error.field = "m", None
    if isinstance(error, InvalidRequest):
        error.errors = ()
    return error


async def _anchors(http: httpx.AsyncClient, url: str) -> set[str]:
    page = await http.get(url.partition("#")[0])
    assert page.status_code == 200, url
    assert page.headers["content-type"].startswith("text/html")
    return set(re.findall(r'<section id="([a-z_]+)">', page.text))


async def test_every_code_has_its_entry_where_its_docs_url_points(
    http: httpx.AsyncClient,
) -> None:
    base = "http://wallet.test/"
    for cls in error_classes():
        url = _any(cls).detail(None, base)["docs_url"]
        assert url == f"http://wallet.test/docs/errors#{cls.code}"
        assert cls.code in await _anchors(http, url), cls
    # One entry per code, none made up.
    assert await _anchors(http, "/docs/errors") == {cls.code for cls in error_classes()}


async def test_real_answers_point_at_the_served_page(http: httpx.AsyncClient) -> None:
    answers = [
        await http.get("/v1/nowhere"),
        await http.get("/v1/players/someone"),
        await http.get("/v1/players/someone", headers={"authorization": "Bearer wk_nobody"}),
        await http.post("/v1/players", json=[], headers={"authorization": f"Bearer {ADMIN_KEY}"}),
    ]
    assert [a.status_code for a in answers] == [404, 401, 401, 400]
    for answer in answers:
        error = answer.json()["error"]
        assert error["docs_url"] == f"http://wallet.test/docs/errors#{error['code']}"
        assert error["code"] in await _anchors(http, error["docs_url"])


async def test_docs_url_follows_a_path_prefix(asgi: ASGIApp) -> None:
    async def prefixed(scope: Scope, receive: Receive, send: Send) -> None:
        await asgi({**scope, "root_path": "/wallet"}, receive, send)

    transport = httpx.ASGITransport(app=prefixed)
    async with httpx.AsyncClient(transport=transport, base_url="https://proxy.test") as http:
        error = (await http.get("/wallet/v1/nowhere")).json()["error"]
        assert error["docs_url"] == "https://proxy.test/wallet/docs/errors#resource_not_found"
        assert "resource_not_found" in await _anchors(http, error["docs_url"])


async def test_docs_url_is_the_public_url_when_set_whatever_the_host_header(
    settings: Settings,
) -> None:
    public = dataclasses.replace(settings, public_url="https://wallet.example/api/")
    async with AsyncExitStack() as stack:
        app = await start_app(public, stack)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://attacker.test") as h:
            error = (await h.get("/v1/nowhere", headers={"host": "evil.test"})).json()["error"]
    assert error["docs_url"] == "https://wallet.example/api/docs/errors#resource_not_found"


def test_the_page_is_read_off_the_classes() -> None:
    page = error_docs.page()
    entry = page.split('<section id="rate_limited">')[1].split("</section>")[0]
    assert "HTTP 429" in entry and "<code>Retry-After</code>" in entry
    # Docstring markup becomes HTML, and nothing is left unescaped.
    entry = page.split('<section id="invalid_request">')[1].split("</section>")[0]
    assert "<code>WALLET_BODY_TIMEOUT_MS</code>" in entry and "``" not in entry
    assert "<script" not in page


async def test_a_401_names_its_challenge(http: httpx.AsyncClient) -> None:
    missing = await http.get("/v1/players/someone")
    assert missing.headers["www-authenticate"] == 'Bearer realm="wallet"'
    unknown = await http.get("/v1/players/someone", headers={"authorization": "Bearer wk_nobody"})
    assert unknown.headers["www-authenticate"] == 'Bearer realm="wallet", error="invalid_token"'
    not_bearer = await http.get("/v1/players/someone", headers={"authorization": "Basic eA=="})
    assert not_bearer.headers["www-authenticate"] == 'Bearer realm="wallet"'
    assert AuthenticationFailed("x").headers() == {"WWW-Authenticate": 'Bearer realm="wallet"'}


def test_the_document_declares_the_challenge() -> None:
    unauthorized = document()["components"]["responses"]["Unauthorized"]
    assert "invalid_token" in unauthorized["headers"]["WWW-Authenticate"]["description"]
    # The other error answers carry no challenge.
    for name, response in document()["components"]["responses"].items():
        assert ("WWW-Authenticate" in response["headers"]) == (name == "Unauthorized"), name
