"""A deposit with its first event to the operator's platform: what the outbox tests deliver."""

from __future__ import annotations

import secrets
from typing import Any

import asyncpg

from app.db import Queries
from app.payments.models import PaymentRequest
from app.payments.service import Payments
from tests.fixtures.app import Operator
from tests.payments.psps import ScriptedPsp


async def deposit_with_event(pool: asyncpg.Pool, operator: Operator) -> tuple[dict[str, Any], str]:
    """A fresh player's deposit of 1,000 at a scripted PSP, and the id of its first event
    (``deposit.awaiting_method``), not delivered yet."""
    payments = Payments(
        pool, Queries.load(), [ScriptedPsp("psp-a")], webhook_base="https://w/v1/psp"
    )
    player = await operator.player()
    created = await payments.create_deposit(
        PaymentRequest(player, 1_000, "EUR", "card"), "ev-" + secrets.token_hex(4)
    )
    event_id = await pool.fetchval(
        "SELECT id FROM operator_events WHERE payment_id = $1", created["id"]
    )
    return created, str(event_id)
