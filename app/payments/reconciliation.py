"""Reconciliation: a PSP's settlement report for one UTC day against what the wallet did.

The wallet's side is every payment at that PSP that reached a money-moving final state that day
(a deposit ``succeeded``, a withdrawal ``paid``), dated by that transition. The PSP's side is its
settlement report. They are matched by the wallet's payment id (the PSP's ``reference``):

- ``missing_in_wallet``: the PSP settled a payment the wallet did not credit or pay that day,
  e.g. a deposit the player paid after the wallet expired it;
- ``missing_at_psp``: the wallet credited or paid a payment the PSP does not settle;
- ``amount_mismatch`` / ``currency_mismatch`` / ``kind_mismatch``: both have it, differently.

Fees are the PSP's, summed per currency beside gross and net, and are not discrepancies.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from typing import Any

import asyncpg

from app.db import Queries
from app.payments.psp import Psp, SettlementLine
from app.web.errors import NotFound
from app.web.query import day_bounds


async def reconcile(
    conn: asyncpg.Connection, queries: Queries, psp: Psp, day: date
) -> dict[str, Any]:
    """The reconciliation report of one PSP for one day (``ok`` when nothing differs)."""
    start, end = day_bounds(day)
    ours = {r["id"]: r for r in await conn.fetch(queries.settled_payments, psp.name, start, end)}
    theirs: dict[str, SettlementLine] = {line.reference: line for line in await psp.settlement(day)}
    discrepancies: list[dict[str, Any]] = []
    matched = 0
    for payment_id, line in sorted(theirs.items()):
        mine = ours.get(payment_id)
        if mine is None:
            discrepancies.append(_finding("missing_in_wallet", payment_id, None, line))
            continue
        mismatch = _mismatch(mine, line)
        if mismatch is None:
            matched += 1
        else:
            discrepancies.append(_finding(mismatch, payment_id, mine, line))
    for payment_id in sorted(ours.keys() - theirs.keys()):
        discrepancies.append(_finding("missing_at_psp", payment_id, ours[payment_id], None))
    totals: dict[str, dict[str, int]] = defaultdict(lambda: {"gross": 0, "fees": 0, "net": 0})
    for line in theirs.values():
        totals[line.currency]["gross"] += line.amount
        totals[line.currency]["fees"] += line.fee
        totals[line.currency]["net"] += line.net
    return {
        "psp": psp.name,
        "date": day.isoformat(),
        "ok": not discrepancies,
        "matched": len(ours.keys() & theirs.keys())
        - sum(1 for d in discrepancies if d["type"].endswith("_mismatch")),
        "wallet_count": len(ours),
        "psp_count": len(theirs),
        "psp_totals": dict(totals),
        "discrepancies": discrepancies,
    }


def _mismatch(mine: asyncpg.Record, line: SettlementLine) -> str | None:
    if ("payout" if mine["kind"] == "withdrawal" else "deposit") != line.kind:
        return "kind_mismatch"
    if mine["currency"] != line.currency:
        return "currency_mismatch"
    if mine["amount"] != line.amount:
        return "amount_mismatch"
    return None


def _finding(
    kind: str, payment_id: str, mine: asyncpg.Record | None, line: SettlementLine | None
) -> dict[str, Any]:
    return {
        "type": kind,
        "payment_id": payment_id,
        "psp_payment_id": line.psp_payment_id if line else mine["psp_payment_id"] if mine else None,
        "wallet_amount": mine["amount"] if mine else None,
        "psp_amount": line.amount if line else None,
        "wallet_currency": mine["currency"] if mine else None,
        "psp_currency": line.currency if line else None,
    }


def route_named(psps: list[Psp], name: str) -> Psp:
    for psp in psps:
        if psp.name == name:
            return psp
    raise NotFound(f"no PSP route named {name!r}")
