"""Amounts as people read them: minor units (what the ledger and every API keep) shown in major
units of their currency, for pages only (the back office, the sandbox PSP's hosted page). Never
used to compute: money stays integer minor units everywhere else."""

from __future__ import annotations

# ISO 4217 minor-unit exponents that are not 2.
EXPONENTS = {
    "BHD": 3, "CLP": 0, "ISK": 0, "JOD": 3, "JPY": 0, "KRW": 0, "KWD": 3, "OMR": 3, "TND": 3,
    "UGX": 0, "VND": 0,
}  # fmt: skip


def major_units(amount: int, currency: str, *, grouped: bool = False) -> str:
    """``12345, "EUR"`` -> ``"123.45"`` (``"1,234.56"`` for 123456 when ``grouped``)."""
    exponent = EXPONENTS.get(currency, 2)
    sign = "-" if amount < 0 else ""
    whole, fraction = divmod(abs(amount), 10**exponent)
    text = f"{whole:,}" if grouped else str(whole)
    return f"{sign}{text}.{fraction:0{exponent}d}" if exponent else f"{sign}{text}"
