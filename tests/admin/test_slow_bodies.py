"""A POST's body is read before the back office takes a pooled connection, and an upload is
refused before its file is read when it cannot be honoured: a signed-in visitor of any role
who sends slowly, or too much, holds no connection of the pool the API and the seamless webhook
share (found by the security review: ten stalled uploads of a support key took all ten)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.types import ASGIApp

from tests.fixtures.app import Operator, Table
from tests.support.backoffice import ORIGIN, api_key, desk, held_withdrawal
from tests.support.pool import Held, byte_by_byte, count_held

CHUNK = 1024 * 1024
BOUNDARY = "b0undary"


@pytest.fixture
def held(asgi: ASGIApp, monkeypatch: pytest.MonkeyPatch) -> Held:
    return count_held(asgi, monkeypatch)


def multipart(
    megabytes: int, csrf: str | None, sent: list[int], held: Held | None = None
) -> tuple[AsyncIterator[bytes], dict[str, str]]:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="provider"\r\n\r\nsandbox\r\n'
    if csrf is not None:
        head += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{csrf}\r\n'
    head += (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="report"; filename="r.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    )

    async def body() -> AsyncIterator[bytes]:
        yield head.encode()
        for _ in range(megabytes):
            if held is not None:
                held.while_sending.append(held.now)
            sent.append(CHUNK)
            yield b"a" * CHUNK
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    return body(), {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


async def test_an_upload_is_read_with_no_pooled_connection_held(
    asgi: ASGIApp, operator: Operator, held: Held
) -> None:
    held.watch_this_task()
    support = await api_key(operator, "support")
    async with desk(asgi) as d:
        await d.sign_in(support["key"])
        csrf = d.hidden(await d.get("/admin/reports/provider"))["csrf"]
        sent: list[int] = []
        body, headers = multipart(3, csrf, sent, held)
        answer = await d.http.post(
            "/admin/reports/provider", content=body, headers={**headers, "origin": ORIGIN}
        )
    assert answer.status_code in (200, 400, 404), answer.text  # what the file says, not a 5xx
    assert held.while_sending == [0, 0, 0]


async def test_a_foreign_upload_is_refused_before_its_file_is_read(
    asgi: ASGIApp, operator: Operator
) -> None:
    support = await api_key(operator, "support")
    async with desk(asgi) as d:
        await d.sign_in(support["key"])
        sent: list[int] = []
        body, headers = multipart(64, None, sent)
        answer = await d.http.post(
            "/admin/reports/provider",
            content=body,
            headers={**headers, "origin": "https://evil.test"},
        )
    assert answer.status_code == 403
    assert sent == []


async def test_an_upload_over_the_limit_is_not_read_further(
    asgi: ASGIApp, operator: Operator
) -> None:
    limit = asgi.state["wallet"].settings.reconciliation_max_bytes  # type: ignore[attr-defined]
    support = await api_key(operator, "support")
    async with desk(asgi) as d:
        await d.sign_in(support["key"])
        csrf = d.hidden(await d.get("/admin/reports/provider"))["csrf"]
        sent: list[int] = []
        over = limit // CHUNK * 2
        body, headers = multipart(over, csrf, sent)
        answer = await d.http.post(
            "/admin/reports/provider", content=body, headers={**headers, "origin": ORIGIN}
        )
    assert answer.status_code == 413
    assert f"exceeds {limit} bytes" in answer.text
    assert sum(sent) <= limit + 2 * CHUNK < over * CHUNK


async def test_an_actions_form_is_read_with_no_pooled_connection_held(
    asgi: ASGIApp, operator: Operator, table: Table, held: Held, sandbox_routes: Any
) -> None:
    held.watch_this_task()
    wdr = await held_withdrawal(operator, asgi, table.player_id, 2_000)
    path = f"/admin/withdrawals/{wdr}/reject"
    async with desk(asgi) as d:
        await d.sign_in((await api_key(operator, "finance"))["key"])
        form = d.hidden(await d.get(path)) | {"reason": "slow client"}
        encoded = "&".join(f"{k}={v}" for k, v in form.items()).encode()

        answer = await d.http.post(
            path,
            content=byte_by_byte(encoded, held),
            headers={"origin": ORIGIN, "content-type": "application/x-www-form-urlencoded"},
        )
    assert answer.status_code == 303, answer.text
    assert held.while_sending and set(held.while_sending) == {0}
