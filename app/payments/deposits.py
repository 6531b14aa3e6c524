"""Deposits: start one at a PSP, read it. The player is credited only when a verified PSP webhook
says it succeeded (:mod:`app.payments.webhook`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from app.fields import OneOf
from app.payments.models import Payment, PaymentPage, PaymentRequest
from app.web import pagination
from app.web.auth import PAYMENTS, READ
from app.web.idempotency import required_key
from app.web.routing import Api, Call, KeyParameter

# Shared with withdrawals: the path parameter, the errors of creating a payment, and the
# document's description of the Idempotency-Key that the payment row keeps.
PATH_PARAMS = {"payment_id": "the payment's id"}
CREATE_ERRORS = (400, 404, 409, 422, 503)
PAYMENT_KEY = KeyParameter(
    "PaymentIdempotencyKey",
    "printable (400 on `Idempotency-Key` when missing); the same key and body again gets the "
    "first answer again without side effects (201 and the same body, or the same 503 when every "
    "route was degraded or a payout's outcome is unknown); another body, or the same while the "
    "first request is still at the PSP, is 409",
)

api = Api("payments", path_params=PATH_PARAMS)


class AttentionQuery(pagination.PageQuery):
    """The listing of payments needing an operator (deposits or withdrawals)."""

    attention: Annotated[str, OneOf.of(["true"])] = Field(
        description="required: `true` lists the payments needing an operator (400 otherwise)"
    )


@api.post(
    "/v1/deposits",
    summary="Start a deposit at a PSP",
    roles=PAYMENTS,
    body=PaymentRequest,
    answers=[(201, Payment, "The deposit (the same key and body again: this answer again)")],
    errors=CREATE_ERRORS,
    idempotency="own",
    key_parameter=PAYMENT_KEY,
    description="Starts the deposit at the first payment route (PSP) that serves its method "
    "and currency, failing over to the next on retryable errors (timeouts, 5xx, 429) only. "
    "It usually answers `awaiting_method` with a `redirect_url` to send the player to (and, "
    "for UPI, a `deep_link`); a PSP's refusal answers `failed` with its `failure_code`. The "
    "player is credited only when a verified PSP webhook says the deposit `succeeded`.\n\n"
    "400 on a field, also on `currency` when it is not the player's; 404 for an unknown "
    "player; 422 `method_unavailable` (field `method`) when no route serves the method and "
    "currency or when the player's KYC tier (`PUT /v1/players/{player_id}/kyc`) is below "
    "the minimum WALLET_KYC_METHOD_TIERS sets for deposits by this method, or "
    "`player_limit_exceeded` (the player's deposit limit, or a player who is not active); "
    "503 `route_degraded`: the deposit is `failed` and the same key and body again answer "
    "it with 201.",
)
async def create_deposit(c: Call, body: PaymentRequest) -> Payment:
    created = await c.w.payments.create_deposit(body, required_key(c.request))
    return Payment.model_validate(created)


@api.get(
    "/v1/deposits/{payment_id}",
    summary="Read a deposit",
    roles=READ,
    answers=[(200, Payment, "The deposit as it is now")],
    errors=(400, 404),
    description="404 also for the id of a withdrawal.",
)
async def get_deposit(c: Call, payment_id: str) -> Payment:
    return Payment.model_validate(await c.w.payments.get("deposit", payment_id))


@api.get(
    "/v1/deposits",
    summary="Deposits needing an operator, newest first",
    roles=READ,
    query=AttentionQuery,
    answers=[(200, PaymentPage, "A page of deposits")],
    errors=(400,),
    description="Every deposit with an `attention` reason: PSP events refused as not matching "
    "it (amount, currency, PSP payment id), a success after it expired, a failure after it "
    "was paid. Nothing here changes money by itself: the ledger has what verified webhooks "
    "posted; compare with the PSP (its settlement report: `GET /v1/reconciliation`) "
    "and correct with an adjustment if they differ.",
    operation_id="listDepositsNeedingAttention",
)
async def list_deposits(c: Call, query: AttentionQuery) -> PaymentPage:
    after = pagination.decode(query.cursor, 2)
    return PaymentPage.model_validate(
        await c.w.payments.needing_attention("deposit", query.limit, after)
    )


routes = api.routes
