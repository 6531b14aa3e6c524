"""KYC tiers (set by the operator, required by payment methods) and reconciliation over the API."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from app.db import Queries
from app.payments.service import PaymentRequest, Payments
from app.web.errors import MethodUnavailable
from tests.fixtures.app import Operator
from tests.fixtures.payments import SANDBOX_API_KEY, SandboxRoutes
from tests.payments.psps import ScriptedPsp


async def test_kyc_tier_is_set_audited_and_shown(operator: Operator) -> None:
    player = await operator.player()
    assert (await operator.call("GET", f"/v1/players/{player}", expect=200))["kyc_tier"] == 0
    updated = await operator.call("PUT", f"/v1/players/{player}/kyc", {"tier": 2}, expect=200)
    assert updated["kyc_tier"] == 2
    audit = await operator.call(
        "GET", f"/v1/audit?target=player:{player}&action=player.kyc", expect=200
    )
    assert (audit["data"][0]["before"], audit["data"][0]["after"]) == (
        {"kyc_tier": 0},
        {"kyc_tier": 2},
    )
    for tier in (4, -1, "2", True):
        bad = await operator.call("PUT", f"/v1/players/{player}/kyc", {"tier": tier}, expect=400)
        assert bad["error"]["field"] == "tier"
    await operator.call("PUT", "/v1/players/nobody-here/kyc", {"tier": 1}, expect=404)


async def test_methods_require_their_kyc_tier(pool: asyncpg.Pool, operator: Operator) -> None:
    psp = ScriptedPsp("psp-k", methods=frozenset({"card", "upi"}))
    payments = Payments(
        pool,
        Queries.load(),
        [psp],
        webhook_base="https://w/v1/psp",
        kyc_tiers={"deposit": {"upi": 1}, "withdrawal": {"*": 2}},
    )
    player = await operator.player(5_000)

    def key() -> str:
        return "kyc-" + secrets.token_hex(6)

    assert await payments.create_deposit(PaymentRequest(player, 100, "EUR", "card"), key())
    with pytest.raises(MethodUnavailable, match="tier 1"):
        await payments.create_deposit(PaymentRequest(player, 100, "EUR", "upi"), key())
    with pytest.raises(MethodUnavailable, match="tier 2"):
        await payments.create_withdrawal(PaymentRequest(player, 100, "EUR", "card"), key())
    assert await operator.balance(player) == 5_000  # a refused withdrawal holds nothing
    await operator.call("PUT", f"/v1/players/{player}/kyc", {"tier": 2}, expect=200)
    await payments.create_deposit(PaymentRequest(player, 100, "EUR", "upi"), key())
    out = await payments.create_withdrawal(PaymentRequest(player, 100, "EUR", "card"), key())
    assert out["status"] in ("processing", "approved")


async def test_reconciliation_over_the_api(
    operator: Operator, sandbox_routes: SandboxRoutes
) -> None:
    today = datetime.now(UTC).date().isoformat()
    planted = await sandbox_routes.http.post(
        "/v1/sandbox/settlement-extra",
        json={
            "line": {
                "psp_payment_id": "psp_api_x",
                "reference": "dep_api_x",
                "kind": "deposit",
                "amount": 321,
                "currency": "EUR",
            }
        },
        headers={"authorization": f"Bearer {SANDBOX_API_KEY}"},
    )
    assert planted.status_code in (200, 201), planted.text
    report: dict[str, Any] = await operator.call(
        "GET", f"/v1/reconciliation?psp=sandbox-a&date={today}", expect=200
    )
    assert report["psp"] == "sandbox-a" and report["date"] == today and report["ok"] is False
    assert {
        "type": "missing_in_wallet",
        "payment_id": "dep_api_x",
        "psp_payment_id": "psp_api_x",
        "wallet_amount": None,
        "psp_amount": 321,
        "wallet_currency": None,
        "psp_currency": "EUR",
    } in report["discrepancies"]
    missing = await operator.call("GET", "/v1/reconciliation", expect=400)
    assert missing["error"]["field"] == "psp"
    await operator.call("GET", "/v1/reconciliation?psp=nope", expect=404)
    bad_date = await operator.call("GET", "/v1/reconciliation?psp=sandbox-a&date=May", expect=400)
    assert bad_date["error"]["field"] == "date"
