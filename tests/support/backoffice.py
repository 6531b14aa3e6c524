"""A person at the back office, over httpx (tests/admin/) and the data its screens show."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from starlette.types import ASGIApp

from tests.fixtures.app import Operator, Table

# The back office's cookie is Secure: the client speaks https to the in-process app.
ORIGIN = "https://wallet.test"
_HIDDEN = re.compile(r'<input type="hidden" name="(csrf|key)" value="([^"]+)">')


class Desk:
    """One browser's worth of back office: its own cookie jar, signed in with one API key."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def sign_in(self, api_key: str, *, expect: int = 303) -> httpx.Response:
        response = await self.http.post(
            "/admin/sign-in", data={"api_key": api_key}, headers={"origin": ORIGIN}
        )
        assert response.status_code == expect, response.text
        return response

    async def get(self, path: str, expect: int = 200, **params: Any) -> str:
        response = await self.http.get(path, params=params or None)
        assert response.status_code == expect, (path, response.status_code, response.text)
        return response.text

    @staticmethod
    def hidden(html: str) -> dict[str, str]:
        """The form's hidden fields: the CSRF token and the action's key."""
        return dict(_HIDDEN.findall(html))

    async def post(
        self, path: str, fields: dict[str, str], *, origin: str | None = ORIGIN
    ) -> httpx.Response:
        headers = {"origin": origin} if origin else {}
        return await self.http.post(path, data=fields, headers=headers)

    async def confirm(self, path: str, **fields: str) -> httpx.Response:
        """Open an action's confirmation page and submit its form."""
        form = self.hidden(await self.get(path))
        return await self.post(path, {**form, **fields})


@asynccontextmanager
async def desk(asgi: ASGIApp, client: str = "127.0.0.1") -> AsyncIterator[Desk]:
    """A desk at ``client``'s address (sign-in failures are counted per address)."""
    transport = httpx.ASGITransport(app=asgi, client=(client, 40_000))
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as client:
        yield Desk(client)


async def api_key(operator: Operator, role: str) -> dict[str, Any]:
    """A new API key of ``role`` (its id and its secret, ``key``)."""
    created: dict[str, Any] = await operator.call(
        "POST", "/v1/api-keys", {"role": role, "name": f"{role} desk"}, expect=201
    )
    return created


async def held_withdrawal(
    operator: Operator, asgi: ASGIApp, player_id: str, amount: int, scenario: str = "succeed"
) -> str:
    """A withdrawal held for review (the session app's threshold lowered for its creation);
    ``scenario``: what the sandbox PSP does with its payout (docs/sandbox-psp.md)."""
    payments = asgi.state["wallet"].payments  # type: ignore[attr-defined]
    payments.review_threshold = amount - 1
    try:
        held = await operator.call(
            "POST",
            "/v1/withdrawals",
            {
                "player_id": player_id,
                "amount": amount,
                "currency": "EUR",
                "method": "card",
                "metadata": {"scenario": scenario},
            },
            headers={"idempotency-key": "adm-" + secrets.token_hex(6)},
            expect=201,
        )
    finally:
        payments.review_threshold = None
    assert held["status"] == "held"
    return str(held["id"])


async def flagged_deposit(operator: Operator, asgi: ASGIApp, player_id: str) -> str:
    """A deposit at the sandbox PSP, flagged as a PSP event refused for its amount would flag it
    (the flagging itself is tests/payments' to test): what the deposits screen lists."""
    created = await operator.call(
        "POST",
        "/v1/deposits",
        {"player_id": player_id, "amount": 1_500, "currency": "EUR", "method": "card"},
        headers={"idempotency-key": "adm-" + secrets.token_hex(6)},
        expect=201,
    )
    pool = asgi.state["wallet"].pool  # type: ignore[attr-defined]
    await pool.execute(
        "UPDATE payments SET flagged = 'amount_mismatch' WHERE id = $1", created["id"]
    )
    return str(created["id"])


async def failed_call(table: Table, asgi: ASGIApp) -> dict[str, Any]:
    """A bet refused R1 to R3 (another currency than the player's), written to the history."""
    answer = await table.bet(100, currency="USD")
    assert answer["code"] in ("R1", "R2", "R3"), answer
    await asgi.state["wallet"].calls.flush()  # type: ignore[attr-defined]
    return answer
