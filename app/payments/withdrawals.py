"""Withdrawals: create one (held for review above a threshold), approve or reject a held one,
resolve a sent one whose PSP has not reported, list those needing an operator, read one."""

from __future__ import annotations

from app.payments.deposits import CREATE_ERRORS, PATH_PARAMS, PAYMENT_KEY, AttentionQuery
from app.payments.models import Payment, PaymentPage, PaymentRequest, WithdrawalResolve
from app.web import pagination
from app.web.auth import MONEY, PAYMENTS, READ
from app.web.idempotency import IDEMPOTENT_ACTION, required_key
from app.web.routing import Api, Call, KeyParameter

api = Api("payments", path_params=PATH_PARAMS)


@api.post(
    "/v1/withdrawals",
    summary="Withdraw from a player's balance through a PSP",
    roles=PAYMENTS,
    body=PaymentRequest,
    answers=[(201, Payment, "The withdrawal (the same key and body again: this answer again)")],
    errors=CREATE_ERRORS,
    idempotency="own",
    key_parameter=PAYMENT_KEY,
    description="Holds the amount on the player's balance at once. Above the review threshold "
    "(WALLET_WITHDRAWAL_REVIEW_THRESHOLD) it answers `held`, for an operator to approve or "
    "reject; otherwise it is approved and sent to the first payment route that serves its "
    "method and currency (with failover on retryable errors), and usually answers "
    "`processing`. `paid` settles the hold; `failed` and `rejected` give it back.\n\n"
    "400 on a field, also on `currency` when it is not the player's and on `amount` when it "
    "is more than the balance; 404 for an unknown player; 422 `method_unavailable` (field "
    "`method`, checked first, nothing held) when no route serves the method and currency "
    "or when the player's KYC tier (`PUT /v1/players/{player_id}/kyc`) is below the minimum "
    "WALLET_KYC_METHOD_TIERS sets for withdrawals by this method; 503 `route_degraded`: the "
    "withdrawal is `failed`, its hold released, and the same key and body again answer it "
    "with 201.",
)
async def create_withdrawal(c: Call, body: PaymentRequest) -> Payment:
    created = await c.w.payments.create_withdrawal(body, required_key(c.request))
    return Payment.model_validate(created)


@api.get(
    "/v1/withdrawals/{payment_id}",
    summary="Read a withdrawal",
    roles=READ,
    answers=[(200, Payment, "The withdrawal as it is now")],
    errors=(400, 404),
    description="404 also for the id of a deposit.",
)
async def get_withdrawal(c: Call, payment_id: str) -> Payment:
    return Payment.model_validate(await c.w.payments.get("withdrawal", payment_id))


@api.get(
    "/v1/withdrawals",
    summary="Withdrawals needing an operator, newest first",
    roles=READ,
    query=AttentionQuery,
    answers=[(200, PaymentPage, "A page of withdrawals")],
    errors=(400,),
    description="Every withdrawal with an `attention` reason: payouts whose outcome is "
    "unknown (funds held until their PSP reports or an operator resolves them), PSP events "
    "refused as not matching, a success after the hold was given back.",
    operation_id="listWithdrawalsNeedingAttention",
)
async def list_withdrawals(c: Call, query: AttentionQuery) -> PaymentPage:
    after = pagination.decode(query.cursor, 2)
    return PaymentPage.model_validate(
        await c.w.payments.needing_attention("withdrawal", query.limit, after)
    )


@api.post(
    "/v1/withdrawals/{payment_id}/approve",
    summary="Approve a held withdrawal and pay it out",
    roles=MONEY,
    answers=[(200, Payment, "The withdrawal, sent to a PSP (usually `processing`)")],
    errors=(400, 404, 409, 422, 503),
    idempotency="optional",
    description="400 on `status` unless the withdrawal is `held` (or `requested`), or "
    "`approved` and never sent (its approving request died before the payout started: "
    "this approval sends it). The approval is recorded before the payout starts: 422 "
    "`method_unavailable` when no route serves the withdrawal's method and currency any "
    "more (it stays `approved`); 503 "
    "`route_degraded` when every route failed (it is `failed`, its hold released) or when "
    "the payout's outcome is unknown (it stays `approved`, funds held, needing attention)."
    + IDEMPOTENT_ACTION,
)
async def approve_withdrawal(c: Call, payment_id: str) -> Payment:
    return Payment.model_validate(await c.w.payments.decide(payment_id, True, c.actor))


@api.post(
    "/v1/withdrawals/{payment_id}/reject",
    summary="Reject a held withdrawal, giving the held amount back",
    roles=MONEY,
    answers=[(200, Payment, "The withdrawal, `rejected`")],
    errors=(400, 404, 409),
    idempotency="optional",
    description="400 on `status` unless the withdrawal is `held` (or `requested`)."
    + IDEMPOTENT_ACTION,
)
async def reject_withdrawal(c: Call, payment_id: str) -> Payment:
    return Payment.model_validate(await c.w.payments.decide(payment_id, False, c.actor))


@api.post(
    "/v1/withdrawals/{payment_id}/resolve",
    summary="Resolve a sent withdrawal whose PSP has not reported, after checking with that PSP",
    roles=MONEY,
    body=WithdrawalResolve,
    answers=[(200, Payment, "The withdrawal, `paid` or `failed`")],
    errors=(400, 404, 409),
    idempotency="required",
    key_parameter=KeyParameter(
        "ResolveIdempotencyKey",
        "printable (400 on `Idempotency-Key` when missing): the same key and body again get the "
        "first answer again; another request with the key is 409",
    ),
    description="For a withdrawal sent to its PSP (`approved` or `processing`) whose outcome "
    "that PSP has not told, such as one with `attention: payout_outcome_unknown`: `paid` "
    "settles its held funds, `failed` gives them back to the player. A payout that went "
    "out to a PSP is never sent to another, so this is the way out when that PSP cannot "
    "say. Audited (`withdrawal.resolve`, with the reason). 400 on `outcome` unless it is "
    "`paid` or `failed`, or when the withdrawal is not `approved` or `processing` (a final "
    "one, or a `held` one: approve or reject that); 409 for a key used with another "
    "request. A PSP event that arrives after a `failed` resolve and says the payout "
    "succeeded is refused and flagged `paid_after_release`.",
)
async def resolve_withdrawal(c: Call, payment_id: str, body: WithdrawalResolve) -> Payment:
    resolved = await c.w.payments.resolve(payment_id, body.outcome, body.reason, c.actor)
    return Payment.model_validate(resolved)


routes = api.routes
