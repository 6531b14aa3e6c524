"""Payments end to end against the sandbox PSP: the wallet's service and adapter call the sandbox
in-process, and the sandbox's signed webhooks come back through a receiver that applies them
exactly as the webhook endpoint will."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.audit import Actor
from app.db import Queries
from app.payments import signing
from app.payments.service import PaymentRequest, Payments, apply_webhook_once
from app.web.errors import NotFound
from tests.fixtures.app import Operator
from tests.fixtures.payments import SANDBOX_API_KEY, in_process_sandbox

API_KEY = SANDBOX_API_KEY


@dataclass
class World:
    payments: Payments
    sandbox: Starlette
    sandbox_http: httpx.AsyncClient
    outcomes: list[tuple[int, str]]
    routes: tuple[str, str]  # unique per test: the database outlives each sandbox

    async def settle(self) -> None:
        """Wait until the sandbox has sent every webhook it planned."""
        await self.sandbox.state.sandbox.idle()


@pytest.fixture
async def world(pool: asyncpg.Pool) -> AsyncIterator[World]:
    outcomes: list[tuple[int, str]] = []
    holder: dict[str, Payments] = {}

    async def receive(request: Request) -> Response:
        body = await request.body()
        try:
            outcome = await apply_webhook_once(
                holder["p"], request.path_params["psp"], body, request.headers.get("x-signature")
            )
        except signing.SignatureError as exc:
            outcomes.append((401, exc.reason))
            return JSONResponse({"error": "bad signature"}, 401)
        except NotFound:
            outcomes.append((404, "unknown"))
            return JSONResponse({"error": "unknown payment"}, 404)
        outcomes.append((200, outcome))
        return JSONResponse({"outcome": outcome})

    receiver = Starlette(routes=[Route("/v1/psp/{psp}/webhook", receive, methods=["POST"])])
    names = (f"sandbox-a-{secrets.token_hex(3)}", f"sandbox-b-{secrets.token_hex(3)}")
    async with in_process_sandbox(receiver, names) as sandbox:
        payments = Payments(
            pool,
            Queries.load(),
            sandbox.routes,
            webhook_base="http://wallet.test/v1/psp",
            review_threshold=50_000,
        )
        holder["p"] = payments
        yield World(payments, sandbox.app, sandbox.http, outcomes, names)


def request(
    player: str, amount: int, scenario: str = "succeed", method: str = "card"
) -> PaymentRequest:
    return PaymentRequest(
        player, amount, "EUR", method, reference="order", metadata={"scenario": scenario}
    )


def key() -> str:
    return "sbx-" + secrets.token_hex(6)


async def psp_id(pool: asyncpg.Pool, payment_id: str) -> str:
    value: str = await pool.fetchval(
        "SELECT psp_payment_id FROM payments WHERE id = $1", payment_id
    )
    return value


async def test_deposit_through_the_hosted_page(
    world: World, operator: Operator, pool: asyncpg.Pool
) -> None:
    player = await operator.player()
    created = await world.payments.create_deposit(request(player, 2_500), key())
    assert created["status"] == "awaiting_method"
    assert created["redirect_url"].startswith("http://sandbox.test/pay/")
    page = await world.sandbox_http.get(created["redirect_url"])
    assert page.status_code == 200 and "Approve" in page.text
    approve = await world.sandbox_http.post(f"/pay/{await psp_id(pool, created['id'])}/approve")
    assert approve.status_code in (200, 303)
    await world.settle()
    assert await operator.balance(player) == 2_500
    assert (await world.payments.get("deposit", created["id"]))["status"] == "succeeded"


async def test_declined_on_the_hosted_page(
    world: World, operator: Operator, pool: asyncpg.Pool
) -> None:
    player = await operator.player()
    created = await world.payments.create_deposit(request(player, 2_500), key())
    await world.sandbox_http.post(f"/pay/{await psp_id(pool, created['id'])}/decline")
    await world.settle()
    assert (await world.payments.get("deposit", created["id"]))["status"] == "failed"
    assert await operator.balance(player) == 0


async def test_upi_deposit_has_a_deep_link(world: World, operator: Operator) -> None:
    player = await operator.player()
    created = await world.payments.create_deposit(request(player, 500, method="upi"), key())
    assert created["deep_link"].startswith("upi://")


async def complete(world: World, pool: asyncpg.Pool, payment_id: str, outcome: str) -> None:
    response = await world.sandbox_http.post(
        f"/v1/sandbox/payments/{await psp_id(pool, payment_id)}/complete",
        json={"outcome": outcome},
        headers={"authorization": f"Bearer {API_KEY}"},
    )
    assert response.status_code == 200, response.text
    await world.settle()


@pytest.mark.parametrize(
    "scenario", ["duplicate-webhooks", "out-of-order-webhooks", "delayed-webhook"]
)
async def test_webhook_scenarios_credit_exactly_once(
    world: World, operator: Operator, pool: asyncpg.Pool, scenario: str
) -> None:
    player = await operator.player()
    created = await world.payments.create_deposit(request(player, 1_000, scenario), key())
    await complete(world, pool, created["id"], "approve")
    assert await operator.balance(player) == 1_000
    assert (await world.payments.get("deposit", created["id"]))["status"] == "succeeded"
    results = [outcome for _, outcome in world.outcomes]
    assert results.count("moved_to_succeeded") == 1
    if scenario == "duplicate-webhooks":
        assert results.count("duplicate") == 2
    if scenario == "out-of-order-webhooks":
        assert "ignored" in results


async def test_bad_signature_moves_nothing(
    world: World, operator: Operator, pool: asyncpg.Pool
) -> None:
    player = await operator.player()
    created = await world.payments.create_deposit(request(player, 1_000, "bad-signature"), key())
    await complete(world, pool, created["id"], "approve")
    assert world.outcomes and all(code == 401 for code, _ in world.outcomes)
    assert await operator.balance(player) == 0
    assert (await world.payments.get("deposit", created["id"]))["status"] == "awaiting_method"


async def test_declined_deposit_is_failed_at_once(world: World, operator: Operator) -> None:
    player = await operator.player()
    created = await world.payments.create_deposit(request(player, 1_000, "decline"), key())
    assert (created["status"], created["failure_code"]) == ("failed", "declined")


@pytest.mark.parametrize("scenario", ["429", "5xx-burst"])
async def test_retryable_errors_fail_over_to_the_next_route(
    world: World, operator: Operator, pool: asyncpg.Pool, scenario: str
) -> None:
    player = await operator.player()
    created = await world.payments.create_deposit(request(player, 1_000, scenario), key())
    assert created["status"] == "awaiting_method"
    assert (
        await pool.fetchval("SELECT psp FROM payments WHERE id = $1", created["id"])
        == world.routes[1]
    )


async def test_payout_is_paid_and_settles_the_hold(
    world: World, operator: Operator, pool: asyncpg.Pool
) -> None:
    player = await operator.player(10_000)
    created = await world.payments.create_withdrawal(request(player, 4_000), key())
    assert created["status"] == "processing"
    assert await operator.balance(player) == 6_000
    await world.settle()
    assert (await world.payments.get("withdrawal", created["id"]))["status"] == "paid"
    assert await operator.balance(player) == 6_000
    assert await operator.call("GET", "/v1/ledger/check", expect=200) == {"ok": True}


async def test_declined_payout_releases_the_hold(world: World, operator: Operator) -> None:
    player = await operator.player(10_000)
    created = await world.payments.create_withdrawal(request(player, 4_000, "decline"), key())
    assert created["status"] == "failed"
    assert await operator.balance(player) == 10_000


async def test_payout_held_for_kyc_then_paid(
    world: World, operator: Operator, pool: asyncpg.Pool
) -> None:
    player = await operator.player(10_000)
    created = await world.payments.create_withdrawal(request(player, 3_000, "held-for-kyc"), key())
    await world.settle()
    assert (await world.payments.get("withdrawal", created["id"]))["status"] == "processing"
    await complete(world, pool, created["id"], "approve")
    assert (await world.payments.get("withdrawal", created["id"]))["status"] == "paid"
    assert await operator.balance(player) == 7_000


async def test_withdrawal_for_review_then_approved_and_paid(
    world: World, operator: Operator
) -> None:
    player = await operator.player(100_000)
    held = await world.payments.create_withdrawal(request(player, 60_000), key())
    assert held["status"] == "held"
    approved = await world.payments.decide(held["id"], True, Actor("apikey:test"))
    assert approved["status"] == "processing"
    await world.settle()
    assert (await world.payments.get("withdrawal", held["id"]))["status"] == "paid"
    assert await operator.balance(player) == 40_000


async def test_sandbox_settlement_lists_what_succeeded(
    world: World, operator: Operator, pool: asyncpg.Pool
) -> None:
    player = await operator.player()
    created = await world.payments.create_deposit(request(player, 10_000), key())
    await complete(world, pool, created["id"], "approve")
    from datetime import UTC, datetime

    report = await world.sandbox_http.get(
        f"/v1/settlements?date={datetime.now(UTC).date().isoformat()}",
        headers={"authorization": f"Bearer {API_KEY}"},
    )
    lines: list[dict[str, Any]] = report.json()["lines"]
    (line,) = [x for x in lines if x["reference"] == created["id"]]
    assert (line["amount"], line["fee"], line["net"]) == (10_000, 150, 9_850)


# --- polling and expiry --------------------------------------------------------------------------


async def test_polling_recovers_a_deposit_whose_webhook_could_not_be_verified(
    world: World, operator: Operator, pool: asyncpg.Pool
) -> None:
    player = await operator.player()
    created = await world.payments.create_deposit(request(player, 1_500, "bad-signature"), key())
    await complete(world, pool, created["id"], "approve")
    assert await operator.balance(player) == 0  # the unverifiable webhook moved nothing
    counts = await world.payments.poll_once(quiet_seconds=0)
    assert counts["moved"] >= 1
    assert (await world.payments.get("deposit", created["id"]))["status"] == "succeeded"
    await world.payments.poll_once(quiet_seconds=0)  # polling again moves nothing twice
    assert await operator.balance(player) == 1_500
    trail = await pool.fetch(
        "SELECT trigger FROM payment_transitions WHERE payment_id = $1", created["id"]
    )
    assert [t["trigger"] for t in trail] == ["psp_poll"]


async def test_polling_pays_out_a_withdrawal_whose_webhook_was_lost(
    world: World, operator: Operator
) -> None:
    player = await operator.player(8_000)
    created = await world.payments.create_withdrawal(request(player, 3_000, "bad-signature"), key())
    await world.settle()
    assert (await world.payments.get("withdrawal", created["id"]))["status"] == "processing"
    await world.payments.poll_once(quiet_seconds=0)
    assert (await world.payments.get("withdrawal", created["id"]))["status"] == "paid"
    assert await operator.balance(player) == 5_000


async def test_stuck_deposit_expires_and_a_late_success_is_flagged(
    world: World, operator: Operator, pool: asyncpg.Pool
) -> None:
    player = await operator.player()
    created = await world.payments.create_deposit(request(player, 700), key())
    await pool.execute(
        "UPDATE payments SET expires_at = now() - interval '1 second' WHERE id = $1", created["id"]
    )
    counts = await world.payments.poll_once(quiet_seconds=0)
    assert counts["expired"] >= 1
    assert (await world.payments.get("deposit", created["id"]))["status"] == "expired"
    # The person pays at the PSP afterwards: not credited, but flagged for an operator.
    await complete(world, pool, created["id"], "approve")
    assert await operator.balance(player) == 0
    assert "refused_succeeded_after_expiry" in [o for _, o in world.outcomes]
    flagged = await pool.fetchval("SELECT flagged FROM payments WHERE id = $1", created["id"])
    assert flagged == "succeeded_after_expiry"


async def test_an_expired_deposit_the_psp_completed_is_credited_not_expired(
    world: World, operator: Operator, pool: asyncpg.Pool
) -> None:
    player = await operator.player()
    created = await world.payments.create_deposit(request(player, 900, "bad-signature"), key())
    await complete(world, pool, created["id"], "approve")
    await pool.execute(
        "UPDATE payments SET expires_at = now() - interval '1 second' WHERE id = $1", created["id"]
    )
    await world.payments.poll_once(quiet_seconds=0)
    assert (await world.payments.get("deposit", created["id"]))["status"] == "succeeded"
    assert await operator.balance(player) == 900


# --- reconciliation ------------------------------------------------------------------------------


async def reconcile_today(world: World, pool: asyncpg.Pool) -> dict[str, Any]:
    from datetime import UTC, datetime

    from app.payments.reconciliation import reconcile

    async with pool.acquire() as conn:
        return await reconcile(
            conn, Queries.load(), world.payments.psps[0], datetime.now(UTC).date()
        )


async def settle_a_day(world: World, operator: Operator, pool: asyncpg.Pool) -> list[str]:
    """Three deposits credited and one payout paid at route a, today."""
    player = await operator.player(50_000)
    ids = []
    for amount in (1_000, 2_000, 3_000):
        created = await world.payments.create_deposit(request(player, amount), key())
        await complete(world, pool, created["id"], "approve")
        ids.append(created["id"])
    payout = await world.payments.create_withdrawal(request(player, 4_000), key())
    await world.settle()
    ids.append(payout["id"])
    return ids


async def test_a_clean_day_reconciles_with_no_discrepancy(
    world: World, operator: Operator, pool: asyncpg.Pool
) -> None:
    await settle_a_day(world, operator, pool)
    report = await reconcile_today(world, pool)
    assert report["ok"] is True and report["discrepancies"] == []
    assert report["matched"] == report["wallet_count"] == report["psp_count"] == 4
    eur = report["psp_totals"]["EUR"]
    assert eur["gross"] == 10_000 and eur["fees"] == 15 + 30 + 45 + 60
    assert eur["net"] == (1_000 + 2_000 + 3_000 - 90) - (4_000 + 60)


async def test_a_dirty_day_shows_the_planted_discrepancies(
    world: World, operator: Operator, pool: asyncpg.Pool
) -> None:
    ids = await settle_a_day(world, operator, pool)
    auth = {"authorization": "Bearer " + API_KEY}
    changed, dropped = await psp_id(pool, ids[0]), await psp_id(pool, ids[1])
    for override in (
        {"psp_payment_id": changed, "amount": 999},
        {"psp_payment_id": dropped, "drop": True},
    ):
        response = await world.sandbox_http.post(
            "/v1/sandbox/settlement-overrides", json=override, headers=auth
        )
        assert response.status_code in (200, 201), response.text
    extra = {
        "line": {
            "psp_payment_id": "psp_unknown",
            "reference": "dep_unknown",
            "kind": "deposit",
            "amount": 500,
            "currency": "EUR",
        }
    }
    response = await world.sandbox_http.post(
        "/v1/sandbox/settlement-extra", json=extra, headers=auth
    )
    assert response.status_code in (200, 201), response.text
    report = await reconcile_today(world, pool)
    found = {(d["type"], d["payment_id"]) for d in report["discrepancies"]}
    assert found == {
        ("amount_mismatch", ids[0]),
        ("missing_at_psp", ids[1]),
        ("missing_in_wallet", "dep_unknown"),
    }
    assert report["ok"] is False and report["matched"] == 2
    mismatch = next(d for d in report["discrepancies"] if d["type"] == "amount_mismatch")
    assert (mismatch["wallet_amount"], mismatch["psp_amount"]) == (1_000, 999)


async def test_decline_then_succeed_across_the_players_attempts(
    world: World, operator: Operator
) -> None:
    """The PSP declines the player's first deposit and accepts the next one (a new payment)."""
    player = await operator.player()
    first = await world.payments.create_deposit(request(player, 800, "decline-then-succeed"), key())
    assert (first["status"], first["failure_code"]) == ("failed", "declined")
    second = await world.payments.create_deposit(
        request(player, 800, "decline-then-succeed"), key()
    )
    assert second["status"] == "awaiting_method" and second["redirect_url"]
