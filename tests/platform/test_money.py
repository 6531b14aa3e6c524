"""Amounts shown in major units: exact integer arithmetic for every exponent, signs and grouping."""

from __future__ import annotations

import pytest

from app.money import EXPONENTS, major_units


@pytest.mark.parametrize(
    ("amount", "currency", "grouped", "shown"),
    [
        (101_750, "EUR", True, "1,017.50"),
        (101_750, "EUR", False, "1017.50"),
        (-250, "EUR", True, "-2.50"),
        (5, "EUR", False, "0.05"),
        (0, "EUR", False, "0.00"),
        (1_234_567, "JPY", True, "1,234,567"),
        (-1, "KWD", False, "-0.001"),
        # The largest balance: no float anywhere, so no digit is lost.
        (9_223_372_036_854_775_807, "EUR", True, "92,233,720,368,547,758.07"),
    ],
)
def test_major_units(amount: int, currency: str, grouped: bool, shown: str) -> None:
    assert major_units(amount, currency, grouped=grouped) == shown


def test_exponents_are_those_iso_4217_gives_other_than_two() -> None:
    assert all(len(code) == 3 and code.isupper() for code in EXPONENTS)
    assert set(EXPONENTS.values()) <= {0, 3}
