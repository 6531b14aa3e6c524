"""Withdrawals needing an operator (held for review, payouts of unknown outcome, PSP events that
did not match), one withdrawal, and its actions: approve, reject, resolve."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from app.admin.actions import Action
from app.admin.pages import Visit, operation_of, screen
from app.money import major_units
from app.payments import withdrawals
from app.payments.deposits import AttentionQuery
from app.payments.models import RESOLUTIONS, Payment, WithdrawalResolve
from app.web.routing import path_param

ATTENTION = operation_of(withdrawals.routes, withdrawals.list_withdrawals)
READ = operation_of(withdrawals.routes, withdrawals.get_withdrawal)
APPROVE = operation_of(withdrawals.routes, withdrawals.approve_withdrawal)
REJECT = operation_of(withdrawals.routes, withdrawals.reject_withdrawal)
RESOLVE = operation_of(withdrawals.routes, withdrawals.resolve_withdrawal)
DECIDABLE = ("held", "requested")  # what approve and reject take (app.payments.service)
RESOLVABLE = ("approved", "processing")


@screen(ATTENTION, "payments.html")
async def attention(v: Visit) -> Response:
    query = v.query(AttentionQuery, attention="true")
    page = await withdrawals.list_withdrawals(v.call, query)
    return v.render(
        "payments.html", kind="withdrawal", rows=page.data, next_link=v.next_page(page.next_cursor)
    )


def actions_for(v: Visit, payment: Payment) -> list[tuple[str, str]]:
    """The actions this visitor may take on ``payment`` now: (label, path)."""
    path = f"/withdrawals/{payment.id}"
    found = []
    if payment.status in DECIDABLE:
        found += [("Approve", f"{path}/approve", APPROVE), ("Reject", f"{path}/reject", REJECT)]
    if payment.status in RESOLVABLE:
        found.append(("Resolve", f"{path}/resolve", RESOLVE))
    return [(label, to) for label, to, op in found if v.can(op)]


@screen(READ, "missing.html")
async def withdrawal(v: Visit) -> Response:
    payment = await withdrawals.get_withdrawal(v.call, path_param(v.request, "payment_id"))
    return v.render(
        "payment.html", kind="withdrawal", payment=payment, actions=actions_for(v, payment)
    )


async def _load(v: Visit, params: dict[str, str]) -> dict[str, Any]:
    payment = await withdrawals.get_withdrawal(v.call, params["payment_id"])
    return {
        "item": {
            "Withdrawal": payment.id,
            "Player": payment.player_id,
            "Amount": f"{major_units(payment.amount, payment.currency, grouped=True)} "
            f"{payment.currency} ({payment.amount:,} minor units)",
            "Method": payment.method,
            "Status": payment.status,
            "Attention": payment.attention or "",
        },
        "back": f"/withdrawals/{payment.id}",
        "outcomes": RESOLUTIONS,
    }


def _done(params: dict[str, str]) -> str:
    return f"/withdrawals/{params['payment_id']}"


approve = Action(
    "approve",
    APPROVE,
    withdrawals.approve_withdrawal,
    "confirm.html",
    _load,
    _done,
    title="Approve this withdrawal",
    effect="The withdrawal is approved and paid out through its payment route. "
    "This cannot be undone.",
)
reject = Action(
    "reject",
    REJECT,
    withdrawals.reject_withdrawal,
    "confirm.html",
    _load,
    _done,
    title="Reject this withdrawal",
    effect="The withdrawal is rejected and the held amount goes back to the player's balance.",
)
resolve = Action(
    "resolve",
    RESOLVE,
    withdrawals.resolve_withdrawal,
    "resolve.html",
    _load,
    _done,
    body=WithdrawalResolve,
    title="Resolve this withdrawal",
    effect="Only after checking with the PSP: paid settles the held funds, failed gives "
    "them back to the player.",
)
