"""Payments while Postgres or Redis fail: the PSP's answer, its webhooks and its retries must
still move money exactly once.

Each test runs its own Postgres and Redis (``loadtests.faults.FaultStack``) and its own app on
them, with one fake PSP route (tests/payments/fake_psps.py) that dedupes by Idempotency-Key like
a real one. Cases:

- Postgres stops after the PSP accepted a payout and before the wallet wrote its answer: the
  caller is told 503 (never 500), the funds stay held, and the caller's retry under the same key
  ends with one payout at the PSP, which then settles once;
- Postgres stops while a webhook arrives, or a backend is terminated inside the webhook's
  transaction: the PSP is told to retry (5xx), and its retry applies the event once;
- Redis is gone: deposits, withdrawals, webhooks and polls go on as before (payments never need
  Redis), and the operator API's rate limit fails open (``app/ratelimit.py``: it guards capacity,
  not money), and holds again once Redis is back.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app.config import Settings
from app.payments.service import Payments
from loadtests.faults import FaultStack, wait_ready
from tests.fixtures.app import Operator, start_app
from tests.payments.fake_psps import FakePsp, deliver

pytestmark = pytest.mark.slow

FUNDS = 10_000


@dataclass
class Rig:
    stack: FaultStack
    http: httpx.AsyncClient
    operator: Operator
    payments: Payments
    psp: FakePsp

    async def fetch(self, query: str, *args: Any) -> Any:
        """A look at the database from outside the wallet (not one of its pools, which the
        faults terminate)."""
        conn = await asyncpg.connect(self.stack.dsn)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()

    async def postings(self, payment_id: str) -> list[str]:
        kinds: list[str] = await self.fetch(
            "SELECT coalesce(array_agg(kind ORDER BY id), '{}') FROM ledger_transactions "
            "WHERE source = '#payment' AND external_id LIKE $1 || '%'",
            payment_id,
        )
        return kinds

    async def withdraw(self, player: str, amount: int, key: str) -> httpx.Response:
        body = {"player_id": player, "amount": amount, "currency": "EUR", "method": "card"}
        headers = {**self.operator.headers, "idempotency-key": key}
        return await self.http.post("/v1/withdrawals", json=body, headers=headers)

    async def webhook(self, event: Any) -> httpx.Response:
        return await deliver(self.http, self.psp, *self.psp.signed(event))

    async def psp_retries(self, event: Any, attempts: int = 5) -> httpx.Response:
        """Deliveries of one event until it is answered 2xx, as a PSP retries (each attempt
        signed anew); every answer before that must ask for a retry (5xx)."""
        for _ in range(attempts):
            response = await self.webhook(event)
            if response.status_code < 300:
                return response
            assert response.status_code >= 500, response.text
            await asyncio.sleep(0.1)
        raise AssertionError(f"event {event.id} never applied: {response.text}")

    async def get(self, path: str, attempts: int = 5) -> Any:
        """A read after a fault, retried as a client would while pooled connections that died
        with the fault are replaced."""
        for _ in range(attempts):
            response = await self.http.get(path, headers=self.operator.headers)
            if response.status_code == 200:
                return response.json()
            assert response.status_code >= 500, response.text
            await asyncio.sleep(0.1)
        raise AssertionError(f"GET {path}: {response.text}")

    async def balance(self, player: str) -> int:
        return int((await self.get(f"/v1/players/{player}"))["balance"])

    async def ledger_ok(self) -> bool:
        return bool(await self.get("/v1/ledger/check") == {"ok": True})


@asynccontextmanager
async def rig(folder: Path, settings: Settings, **overrides: Any) -> AsyncIterator[Rig]:
    stack = FaultStack(folder)
    psp = FakePsp("fault-psp-" + secrets.token_hex(3))
    try:
        await stack.start()
        own = replace(
            settings,
            database_url=stack.dsn,
            redis_url=stack.redis_url,
            withdrawal_review_threshold=None,
            **overrides,
        )
        async with AsyncExitStack() as exits:
            app = await start_app(own, exits)
            http = await exits.enter_async_context(
                httpx.AsyncClient(
                    # What a client would see: an error the app did not handle is a 500 here.
                    transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                    base_url="http://wallet.test",
                )
            )
            payments = app.state["wallet"].payments  # type: ignore[attr-defined]
            payments.psps = [psp]
            payments.webhook_base = "http://wallet.test/v1/psp"
            yield Rig(stack, http, Operator(http), payments, psp)
    finally:
        await psp.aclose()
        await stack.close()


def assert_unavailable(response: httpx.Response) -> None:
    """The contract's answer while Postgres is unreachable: 503 with the error shape."""
    assert response.status_code == 503, (response.status_code, response.text)
    assert set(response.json()["error"]) >= {"code", "message", "http_status", "request_id"}


async def retry_until_final(r: Rig, player: str, amount: int, key: str) -> httpx.Response:
    """The caller's retries under one key, while the first attempt may still look in progress
    (409) or the database is coming back (503)."""
    deadline = time.monotonic() + 20
    while True:
        response = await r.withdraw(player, amount, key)
        code = response.json().get("error", {}).get("code")
        if response.status_code == 201 or code == "route_degraded":
            return response
        assert response.status_code in (409, 503), response.text
        assert time.monotonic() < deadline, f"no final answer: {response.text}"
        await asyncio.sleep(0.2)


async def test_postgres_stopped_between_the_psp_answer_and_the_write(
    folder: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A creation left without an answer is taken over by the next retry of its key: the start
    # that was talking to the PSP lost its session, and its lease with it.
    async with rig(folder, settings) as r:
        player = await r.operator.player(FUNDS)

        async def stop_postgres() -> None:
            r.stack.stop_postgres()

        r.psp.on_acted = stop_postgres
        first = await r.withdraw(player, 1_000, "wd-1")
        r.psp.on_acted = None
        r.stack.start_postgres()
        await wait_ready(r.http)
        done = await retry_until_final(r, player, 1_000, "wd-1")
        assert done.status_code == 201, done.text
        payout = done.json()
        assert payout["status"] in ("approved", "processing"), payout
        # One payout at the PSP, asked under our payment id each time.
        assert list(r.psp.payments) == [payout["id"]] and r.psp.problems == []
        assert {c.key for c in r.psp.calls} == {payout["id"]}
        assert await r.balance(player) == FUNDS - 1_000
        assert await r.postings(payout["id"]) == ["withdrawal_hold"]

        applied = await r.psp_retries(r.psp.decide(payout["id"], "succeeded"))
        assert applied.status_code == 200, applied.text
        view = await r.get(f"/v1/withdrawals/{payout['id']}")
        assert view["status"] == "paid"
        assert await r.balance(player) == FUNDS - 1_000
        assert await r.postings(payout["id"]) == ["withdrawal_hold", "withdrawal_settle"]
        assert await r.ledger_ok()
        # Checked last so that the recovery above is shown whatever this answer was.
        assert_unavailable(first)


async def test_postgres_stopped_while_a_webhook_arrives(folder: Path, settings: Settings) -> None:
    async with rig(folder, settings) as r:
        player = await r.operator.player(FUNDS)
        payout = (await r.withdraw(player, 2_500, "wd-2")).json()
        assert payout["status"] == "processing", payout
        event = r.psp.decide(payout["id"], "failed")
        r.stack.stop_postgres()
        try:
            lost = await r.webhook(event)
        finally:
            r.stack.start_postgres()
        await wait_ready(r.http)
        applied = await r.psp_retries(event)
        again = await r.webhook(event)
        assert (applied.status_code, applied.json()) == (200, {"outcome": "moved_to_failed"})
        assert (again.status_code, again.json()) == (200, {"outcome": "duplicate"})
        assert await r.balance(player) == FUNDS
        assert await r.postings(payout["id"]) == ["withdrawal_hold", "withdrawal_release"]
        assert await r.ledger_ok()
        assert_unavailable(lost)


async def test_backend_terminated_inside_the_webhook_transaction(
    folder: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event's transition is made, then the connection dies before the commit: nothing of it
    stays, the PSP is told to retry, and the retry applies it once."""
    async with rig(folder, settings) as r:
        player = await r.operator.player(FUNDS)
        deposit = await r.operator.call(
            "POST",
            "/v1/deposits",
            {"player_id": player, "amount": 700, "currency": "EUR", "method": "card"},
            headers={"idempotency-key": "dep-3"},
            expect=201,
        )
        event = r.psp.decide(deposit["id"], "succeeded")
        real = Payments._apply
        killed: list[int] = []

        async def apply_then_die(self: Payments, conn: Any, payment: Any, ev: Any) -> str:
            outcome = await real(self, conn, payment, ev)
            if not killed:
                killed.append(await r.stack.terminate_backends())
            return outcome

        monkeypatch.setattr(Payments, "_apply", apply_then_die)
        lost = await r.webhook(event)
        assert killed and killed[0] > 0
        assert lost.status_code >= 500, lost.text  # the PSP must retry
        assert await r.balance(player) == FUNDS
        applied = await r.psp_retries(event)
        assert (applied.status_code, applied.json()) == (200, {"outcome": "moved_to_succeeded"})
        assert (await r.webhook(event)).json() == {"outcome": "duplicate"}
        assert await r.balance(player) == FUNDS + 700
        assert await r.postings(deposit["id"]) == ["deposit"]
        assert await r.ledger_ok()
        assert_unavailable(lost)


async def test_payments_work_without_redis(folder: Path, settings: Settings) -> None:
    """Redis killed: every payment call goes on, and the operator API's rate limit fails open
    (documented in app/ratelimit.py and docs/operator.md); with Redis back it holds again."""
    async with rig(folder, settings, rate_limit_api_key=3) as r:
        player = await r.operator.player(FUNDS)
        await asyncio.sleep(1.1)  # a fresh rate-limit window for what follows
        await r.stack.kill_redis()
        try:
            deposit = await r.operator.call(
                "POST",
                "/v1/deposits",
                {"player_id": player, "amount": 500, "currency": "EUR", "method": "card"},
                headers={"idempotency-key": "dep-4"},
                expect=201,
            )
            payout = (await r.withdraw(player, 2_000, "wd-4")).json()
            assert payout["status"] == "processing", payout
            for event in (
                r.psp.decide(deposit["id"], "succeeded"),
                r.psp.decide(payout["id"], "succeeded"),
            ):
                assert (await r.webhook(event)).status_code == 200
            assert (await r.payments.poll_once(quiet_seconds=0))["checked"] == 0
            views = [
                await r.operator.call("GET", f"/v1/{kind}/{pid}", expect=200)
                for kind, pid in (("deposits", deposit["id"]), ("withdrawals", payout["id"]))
            ]
            assert [v["status"] for v in views] == ["succeeded", "paid"]
            # Far over 3 requests a second in all, none refused: the limit fails open.
            assert await r.balance(player) == FUNDS + 500 - 2_000
        finally:
            r.stack.start_redis()
        statuses = [
            (await r.http.get(f"/v1/players/{player}", headers=r.operator.headers)).status_code
            for _ in range(8)
        ]
        assert 429 in statuses, statuses
