"""The daily settlement report: fee arithmetic, and the discrepancies tests plant in it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from app.dev.sandbox_psp.model import Payment, invalid, utc_text
from app.payments.sandbox_api import DEPOSIT, KINDS, SUCCEEDED

BPS_PER_UNIT = 10_000


def fee_for(amount: int, fee_bps: int) -> int:
    """``amount * fee_bps / 10000`` rounded to an integer, halves away from zero (so "half up"
    for the positive amounts payments have): 100 at 150 bps is 1.5, a fee of 2."""
    magnitude = (abs(amount) * fee_bps + BPS_PER_UNIT // 2) // BPS_PER_UNIT
    return -magnitude if amount < 0 else magnitude


def net_for(kind: str, amount: int, fee: int) -> int:
    """What the line does to the merchant's balance at the PSP: a deposit brings in its amount
    less the fee; a payout takes out its amount plus the fee."""
    return amount - fee if kind == DEPOSIT else -(amount + fee)


def line_for(payment: Payment, amount: int, fee_bps: int) -> dict[str, Any]:
    assert payment.settled_at is not None
    fee = fee_for(amount, fee_bps)
    return {
        "psp_payment_id": payment.psp_payment_id,
        "reference": payment.reference,
        "kind": payment.kind,
        "amount": amount,
        "currency": payment.currency,
        "fee": fee,
        "net": net_for(payment.kind, amount, fee),
        "status": payment.status,
        "settled_at": utc_text(payment.settled_at),
    }


def report(
    day: date,
    payments: Iterable[Payment],
    overrides: Mapping[str, int | None],
    extras: Iterable[dict[str, Any]],
    fee_bps: int,
) -> dict[str, Any]:
    """The settlement report of one UTC day: every payment that succeeded that day, with
    ``overrides`` applied (an amount replaces the real one and its fee is recomputed; ``None``
    drops the line), plus the planted ``extras`` whose ``settled_at`` falls on that day."""
    lines: list[dict[str, Any]] = []
    for payment in payments:
        if payment.status != SUCCEEDED or payment.settled_at is None:
            continue
        if datetime.fromtimestamp(payment.settled_at, UTC).date() != day:
            continue
        amount: int | None = payment.amount
        if payment.psp_payment_id in overrides:
            amount = overrides[payment.psp_payment_id]
        if amount is not None:
            lines.append(line_for(payment, amount, fee_bps))
    lines += [dict(extra) for extra in extras if _day_of(extra["settled_at"]) == day]
    lines.sort(key=lambda line: (line["settled_at"], line["psp_payment_id"]))
    totals: dict[str, dict[str, int]] = {}
    for line in lines:
        total = totals.setdefault(
            line["currency"], {"count": 0, "deposits": 0, "payouts": 0, "fees": 0, "net": 0}
        )
        total["count"] += 1
        total["deposits" if line["kind"] == DEPOSIT else "payouts"] += line["amount"]
        total["fees"] += line["fee"]
        total["net"] += line["net"]
    return {"date": day.isoformat(), "currency_totals": totals, "lines": lines}


def _day_of(settled_at: str) -> date:
    return datetime.fromisoformat(settled_at).astimezone(UTC).date()


def parse_extra_line(data: Any, fee_bps: int, now: float) -> dict[str, Any]:
    """A planted line, checked and completed: ``fee`` and ``net`` default to what the sandbox
    would compute, ``status`` to succeeded and ``settled_at`` to now. The line need not match
    any payment; that is the point."""
    if not isinstance(data, dict):
        raise invalid("line", "line must be a JSON object")
    line: dict[str, Any] = {}
    for name in ("psp_payment_id", "reference", "currency"):
        value = data.get(name)
        if not isinstance(value, str) or not value:
            raise invalid(f"line.{name}", f"line.{name} must be a non-empty string")
        line[name] = value
    kind = data.get("kind")
    if kind not in KINDS:
        raise invalid("line.kind", "line.kind must be deposit or payout")
    line["kind"] = kind
    amount = data.get("amount")
    if type(amount) is not int:
        raise invalid("line.amount", "line.amount must be an integer (minor units)")
    line["amount"] = amount
    fee = data.get("fee", fee_for(amount, fee_bps))
    if type(fee) is not int:
        raise invalid("line.fee", "line.fee must be an integer (minor units)")
    line["fee"] = fee
    net = data.get("net", net_for(kind, amount, fee))
    if type(net) is not int:
        raise invalid("line.net", "line.net must be an integer (minor units)")
    line["net"] = net
    status = data.get("status", SUCCEEDED)
    if not isinstance(status, str) or not status:
        raise invalid("line.status", "line.status must be a non-empty string")
    line["status"] = status
    settled_at = data.get("settled_at")
    if settled_at is None:
        line["settled_at"] = utc_text(now)
    else:
        if not isinstance(settled_at, str):
            raise invalid("line.settled_at", "line.settled_at must be an RFC 3339 time")
        try:
            moment = datetime.fromisoformat(settled_at)
        except ValueError:
            raise invalid("line.settled_at", "line.settled_at must be an RFC 3339 time") from None
        if moment.tzinfo is None:
            raise invalid("line.settled_at", "line.settled_at needs a time zone, e.g. Z")
        line["settled_at"] = utc_text(moment.timestamp())
    return line
