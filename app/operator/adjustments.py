"""Adjustments: a signed manual credit or debit of a player's balance, keyed for safe retries.

The ``Idempotency-Key`` is stored with the posting itself (``wallet_adjust``, sql): the same key and
body again answer the first adjustment (200), another body with the key is 409.
"""

from __future__ import annotations

from typing import Annotated

import asyncpg
from pydantic import AfterValidator, Field, StringConstraints

from app.audit import Actor, audit
from app.db import Queries
from app.fields import Balance, Currency, DigitsId, Identifier, Rule, SignedAmount, Time
from app.web.auth import MONEY
from app.web.errors import IdempotencyConflict, InvalidRequest, NotFound
from app.web.idempotency import required_key
from app.web.messages import Answer, Body
from app.web.routing import Api, Call, Reply

api = Api("players", path_params={"player_id": "the player"})

REASON_RULE = "a string of 1 to 500 characters, not only spaces"
Reason = Annotated[
    str,
    StringConstraints(min_length=1, max_length=500, pattern=r"\S"),
    AfterValidator(str.strip),
    Rule(REASON_RULE),
    Field(description=REASON_RULE),
]


class AdjustmentCreate(Body):
    amount: SignedAmount = Field(
        description="signed, not zero: a credit (> 0) or a debit (< 0)",
        json_schema_extra={"not": {"const": 0}},
    )
    reason: Reason


class Adjustment(Answer):
    id: DigitsId
    player_id: Identifier
    amount: SignedAmount = Field(description="signed: a credit (> 0) or a debit (< 0)")
    delta: SignedAmount = Field(description="the change of the balance; equals amount")
    balance_after: Balance
    currency: Currency
    reason: str
    idempotency_key: str = Field(description="the Idempotency-Key header")
    created_at: Time


async def adjust(
    conn: asyncpg.Connection,
    q: Queries,
    player_id: str,
    amount: int,
    reason: str,
    idempotency_key: str,
    actor: Actor,
) -> tuple[Adjustment, bool]:
    """A signed manual credit or debit; (adjustment, created). Same key and body: same answer."""
    async with conn.transaction():
        row = await conn.fetchrow(
            *q.adjust(
                idempotency_key=idempotency_key,
                player_id=player_id,
                amount=amount,
                reason=reason,
                actor=actor.name,
            )
        )
        if row["reason"] == "player_not_found":
            raise NotFound(f"player {player_id!r} not found")
        if row["reason"] == "idempotency_conflict":
            raise IdempotencyConflict("Idempotency-Key was already used with another body")
        if row["reason"] == "invalid_field":  # a credit past the largest balance BIGINT holds
            raise InvalidRequest(row["detail"], field="amount")
        if row["reason"] == "insufficient_funds":
            raise InvalidRequest(
                f"a debit of {-amount} exceeds the balance of {row['balance']}", field="amount"
            )
        tx = await conn.fetchrow(*q.adjustment_by_id(id=row["wallet_transaction_id"]))
        adjustment = Adjustment(**{**tx, "id": str(tx["id"])})
        created = not row["duplicate"]
        if created:
            await audit(
                conn,
                q,
                actor,
                "player.adjust",
                f"player:{player_id}",
                {"balance": tx["balance_after"] - amount},
                {
                    "balance": tx["balance_after"],
                    "amount": amount,
                    "reason": reason,
                    "adjustment_id": adjustment.id,
                },
            )
    return adjustment, created


@api.post(
    "/v1/players/{player_id}/adjustments",
    summary="Credit or debit a player's balance by hand",
    roles=MONEY,
    body=AdjustmentCreate,
    answers=[
        (201, Adjustment, "The adjustment, posted"),
        (200, Adjustment, "The same Idempotency-Key and body again: the first adjustment"),
    ],
    errors=(400, 404, 409),
    description="A debit beyond the balance is 400 on `amount`. The same Idempotency-Key with "
    "another body is 409.",
    idempotency="own",
    key_parameter="IdempotencyKey",
)
async def adjust_balance(c: Call, player_id: str, body: AdjustmentCreate) -> Adjustment | Reply:
    if body.amount == 0:
        raise InvalidRequest("amount must not be zero", field="amount")
    key = required_key(c.request)  # checked before the body (idempotency="own")
    adjustment, created = await adjust(
        c.conn, c.w.queries, player_id, body.amount, body.reason, key, c.actor
    )
    return adjustment if created else Reply(adjustment, 200)


routes = api.routes
