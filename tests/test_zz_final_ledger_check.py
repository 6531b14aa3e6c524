"""Runs last (file order): after everything the suite did, every ledger invariant holds."""

from __future__ import annotations

from tests.fixtures.app import Operator


async def test_ledger_check_passes_after_the_whole_suite(operator: Operator) -> None:
    report = await operator.call("GET", "/v1/ledger/check", expect=200)
    assert report == {"ok": True}
