"""Deposits needing an operator (PSP events that did not match, a success after expiry, a failure
after payment) and one deposit: read only, as the API has no action on a deposit."""

from __future__ import annotations

from starlette.responses import Response

from app.admin.pages import Visit, operation_of, screen
from app.payments import deposits
from app.web.routing import path_param

ATTENTION = operation_of(deposits.routes, deposits.list_deposits)
READ = operation_of(deposits.routes, deposits.get_deposit)


@screen(ATTENTION, "payments.html")
async def attention(v: Visit) -> Response:
    query = v.query(deposits.AttentionQuery, attention="true")
    page = await deposits.list_deposits(v.call, query)
    return v.render(
        "payments.html", kind="deposit", rows=page.data, next_link=v.next_page(page.next_cursor)
    )


@screen(READ, "missing.html")
async def deposit(v: Visit) -> Response:
    payment = await deposits.get_deposit(v.call, path_param(v.request, "payment_id"))
    return v.render("payment.html", kind="deposit", payment=payment, actions=[])
