"""Reconciliation: a PSP's settlement report for one UTC day against what the wallet did.

The wallet's side is every payment at that PSP that reached a money-moving final state that day
(a deposit ``succeeded``, a withdrawal ``paid``), dated by that transition. The PSP's side is its
settlement report. They are matched by the wallet's payment id (the PSP's ``reference``):

- ``missing_in_wallet``: the PSP settled a payment the wallet did not credit or pay that day,
  e.g. a deposit the player paid after the wallet expired it;
- ``missing_at_psp``: the wallet credited or paid a payment the PSP does not settle;
- ``amount_mismatch`` / ``currency_mismatch`` / ``kind_mismatch``: both have it, differently.

Fees are the PSP's, summed per currency beside gross and net, and are not discrepancies.
``GET /v1/reconciliation`` and ``wallet reconcile --psp`` give the same report; its words and
shape are those of every reconciliation (:mod:`app.reconciliation`).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Annotated, Any

import asyncpg
from pydantic import ConfigDict, Field

from app.db import Queries
from app.fields import Count, Currency, Identifier, Int64, OneOf
from app.metrics import Metrics
from app.payments.metering import metered
from app.payments.psp import Psp, PspError, SettlementLine
from app.reconciliation import (
    MISSING_IN_WALLET,
    default_day,
    first_mismatch,
    mismatch,
    missing_at,
    ok_means_none,
    sides_schema,
)
from app.web.auth import READ
from app.web.errors import NotFound, RouteDegraded
from app.web.messages import Answer, Body
from app.web.query import Day, day_bounds
from app.web.routing import Api, Call

MISSING_AT_PSP = missing_at("psp")
# Both sides have the payment, differently: only the first difference, in this order.
COMPARED = ("kind", "currency", "amount")
MISMATCHES = tuple(mismatch(what) for what in COMPARED)
DISCREPANCIES = (MISSING_IN_WALLET, MISSING_AT_PSP, *MISMATCHES)

SideAmount = Annotated[
    Int64 | None, Field(description="minor units; null when this side has no such payment")
]


class Discrepancy(Answer):
    """A payment the two sides do not agree on."""

    model_config = ConfigDict(
        json_schema_extra=sides_schema(
            ["wallet_amount", "wallet_currency"], ["psp_amount", "psp_currency"], "psp"
        )
    )

    type: Annotated[str, OneOf.of(DISCREPANCIES)] = Field(
        description="missing_in_wallet: the PSP settled a payment the wallet did not credit or "
        "pay that day (like one paid after the wallet expired it); missing_at_psp: the wallet "
        "credited or paid a payment the PSP does not settle; amount_mismatch, "
        "currency_mismatch, kind_mismatch: both sides have it, differently (only the first "
        "difference, in the order kind, currency, amount)"
    )
    payment_id: str = Field(description="the wallet's payment id: the PSP line's `reference`")
    psp_payment_id: str | None = Field(
        description="the PSP's id: its line's, or else the wallet's record of it"
    )
    wallet_amount: SideAmount
    psp_amount: SideAmount
    wallet_currency: Currency | None = Field(description="null when the wallet has no such payment")
    psp_currency: str | None = Field(
        description="as the PSP reports it; null when the PSP has no such line"
    )


class ReconciliationTotals(Answer):
    """The totals of the PSP's settlement lines in one currency."""

    gross: Int64 = Field(description="the sum of the lines' amounts (deposits and payouts)")
    fees: Int64 = Field(description="the PSP's fees: totalled here, never a discrepancy")
    net: Int64 = Field(
        description="the sum of the lines' net: a deposit's amount less its fee, minus a "
        "payout's amount and its fee"
    )


class Reconciliation(Answer):
    """A PSP's settlement report for one UTC day matched against the wallet's payments at that
    route, by payment id (the PSP's `reference`). See docs/payments.md, section 5c."""

    model_config = ConfigDict(json_schema_extra=ok_means_none)

    psp: Identifier = Field(description="the PSP route, as asked")
    date: dt.date = Field(description="the UTC day reconciled")
    ok: bool = Field(description="true when there is no discrepancy")
    matched: Count = Field(description="payments both sides have, identically")
    wallet_count: Count = Field(
        description="payments at this route that the wallet moved to `succeeded` (deposits) or "
        "`paid` (withdrawals) that day"
    )
    psp_count: Count = Field(description="lines of the PSP's settlement report")
    psp_totals: dict[str, ReconciliationTotals] = Field(
        description="per currency of the PSP's lines (only those it has)"
    )
    discrepancies: list[Discrepancy] = Field(
        description="the PSP's lines in order of payment id, then the wallet's payments "
        "missing at the PSP"
    )


class ReconciliationQuery(Body):
    psp: Identifier = Field(
        description="the PSP route's name, as configured in WALLET_PSPS (400 on `psp` when "
        "missing or malformed; 404 when no route has this name)"
    )
    date: Day | None = Field(
        None,
        description="the UTC day, YYYY-MM-DD; default yesterday (UTC) (400 on `date` otherwise)",
    )


async def report(
    conn: asyncpg.Connection,
    queries: Queries,
    psp: Psp,
    day: dt.date,
    metrics: Metrics | None = None,
) -> Reconciliation:
    """The reconciliation report of one PSP for one day (``ok`` when nothing differs)."""
    start, end = day_bounds(day)
    ours = {
        r["id"]: r
        for r in await conn.fetch(*queries.settled_payments(psp=psp.name, since=start, until=end))
    }
    lines = await metered(metrics, psp.name, "settlement_report", psp.settlement(day))
    theirs: dict[str, SettlementLine] = {line.reference: line for line in lines}
    discrepancies: list[Discrepancy] = []
    for payment_id, line in sorted(theirs.items()):
        mine = ours.get(payment_id)
        if mine is None:
            discrepancies.append(_finding(MISSING_IN_WALLET, payment_id, None, line))
            continue
        mismatch = _mismatch(mine, line)
        if mismatch is not None:
            discrepancies.append(_finding(mismatch, payment_id, mine, line))
    for payment_id in sorted(ours.keys() - theirs.keys()):
        discrepancies.append(_finding(MISSING_AT_PSP, payment_id, ours[payment_id], None))
    totals: dict[str, dict[str, int]] = defaultdict(lambda: {"gross": 0, "fees": 0, "net": 0})
    for line in theirs.values():
        totals[line.currency]["gross"] += line.amount
        totals[line.currency]["fees"] += line.fee
        totals[line.currency]["net"] += line.net
    return Reconciliation(
        psp=psp.name,
        date=day,
        ok=not discrepancies,
        matched=len(ours.keys() & theirs.keys())
        - sum(1 for d in discrepancies if d.type in MISMATCHES),
        wallet_count=len(ours),
        psp_count=len(theirs),
        psp_totals={currency: ReconciliationTotals(**sums) for currency, sums in totals.items()},
        discrepancies=discrepancies,
    )


async def reconcile(
    conn: asyncpg.Connection, queries: Queries, psp: Psp, day: dt.date
) -> dict[str, Any]:
    """:func:`report` as JSON (``wallet reconcile`` prints it)."""
    return (await report(conn, queries, psp, day)).model_dump(mode="json")


def _mismatch(mine: asyncpg.Record, line: SettlementLine) -> str | None:
    kind = "payout" if mine["kind"] == "withdrawal" else "deposit"
    found = dict(kind=kind, currency=mine["currency"], amount=mine["amount"])
    theirs = dict(kind=line.kind, currency=line.currency, amount=line.amount)
    return first_mismatch((what, found[what], theirs[what]) for what in COMPARED)


def _finding(
    kind: str, payment_id: str, mine: asyncpg.Record | None, line: SettlementLine | None
) -> Discrepancy:
    return Discrepancy(
        type=kind,
        payment_id=payment_id,
        psp_payment_id=line.psp_payment_id if line else mine["psp_payment_id"] if mine else None,
        wallet_amount=mine["amount"] if mine else None,
        psp_amount=line.amount if line else None,
        wallet_currency=mine["currency"] if mine else None,
        psp_currency=line.currency if line else None,
    )


def route_named(psps: list[Psp], name: str) -> Psp:
    for psp in psps:
        if psp.name == name:
            return psp
    raise NotFound(f"no PSP route named {name!r}")


api = Api("payments")


@api.get(
    "/v1/reconciliation",
    summary="Match a PSP's settlement report for one UTC day against the wallet",
    roles=READ,
    query=ReconciliationQuery,
    answers=[(200, Reconciliation, "The reconciliation report; `ok` when nothing differs")],
    errors=(400, 404, 503),
    description="Fetches the PSP route's settlement report for the day and matches its "
    "lines, by the wallet's payment id (the line's `reference`), against the payments at "
    "that route that the wallet moved to `succeeded` (deposits) or `paid` (withdrawals) "
    "that day, dated by that change. Findings: `missing_in_wallet`, `missing_at_psp`, "
    "`amount_mismatch`, `currency_mismatch`, `kind_mismatch`; the PSP's fees are totalled "
    "per currency, never a discrepancy. Like `wallet reconcile` (docs/payments.md, section "
    "5c); nothing is changed or recorded.\n\n"
    "400 on `psp` when missing or malformed, on `date` when not a day; 404 when no "
    "configured route has this name; 503 `route_degraded` when the PSP's settlement report "
    "cannot be fetched.",
    error_notes=(
        (
            503,
            "route_degraded: the PSP's settlement report could not be fetched (unreachable, "
            "timed out, or an error answer); nothing was reconciled, ask again later",
        ),
    ),
    operation_id="reconcilePsp",
)
async def reconciliation(c: Call, query: ReconciliationQuery) -> Reconciliation:
    """``?psp=NAME&date=YYYY-MM-DD`` (default yesterday, UTC)."""
    psp = route_named(c.w.payments.psps, query.psp)
    day = default_day(query.date)
    try:
        return await report(c.conn, c.w.queries, psp, day, c.w.metrics)
    except PspError as exc:
        raise RouteDegraded(f"the PSP's settlement report is unavailable: {exc.code}") from None


routes = api.routes
