"""What every reconciliation shares: the words of its findings, the rule that picks a mismatch,
and the shape its schema promises.

Two reports match a counterpart's file for one UTC day against the wallet: a PSP's settlement
report (:mod:`app.payments.reconciliation`) and a game provider's transaction report
(:mod:`app.operator.reconciliation`). Both say the same things in the same words:

- ``missing_in_wallet``: the counterpart has it, the wallet does not;
- ``missing_at_<side>`` (``missing_at_psp``, ``missing_at_provider``): the wallet has it, the
  counterpart does not;
- ``<what>_mismatch``: both have it, differently; only the first difference is named, in the
  order each report declares.

Both answer ``ok`` (no finding), ``matched`` (what both sides have identically), what each side
counted, and the findings, whose fields are ``wallet_<x>`` beside ``<side>_<x>``: the side that
lacks the thing has its fields null, which the schemas below say.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pydantic.config import JsonDict

MISSING_IN_WALLET = "missing_in_wallet"
MISMATCH_SUFFIX = "_mismatch"


def missing_at(side: str) -> str:
    """The finding of a thing the wallet has and ``side`` does not."""
    return f"missing_at_{side}"


def mismatch(what: str) -> str:
    return what + MISMATCH_SUFFIX


def first_mismatch(pairs: Iterable[tuple[str, Any, Any]]) -> str | None:
    """The finding of the first ``(what, wallet's, theirs)`` that differs, or None."""
    for what, ours, theirs in pairs:
        if ours != theirs:
            return mismatch(what)
    return None


def default_day(day: dt.date | None) -> dt.date:
    """The day reconciled when none is given: yesterday (UTC), the last whole day."""
    return day or dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)


def sides_schema(
    wallet_fields: Sequence[str], their_fields: Sequence[str], side: str
) -> Callable[[JsonDict], None]:
    """A finding's schema rule: which side's fields are null follows from its ``type``.

    ``missing_in_wallet`` has the wallet's fields null and theirs set, ``missing_at_<side>`` the
    other way round, and a mismatch has both sides set.
    """
    wallet, theirs = list(wallet_fields), list(their_fields)

    def rules(schema: JsonDict) -> None:
        null: JsonDict = {"type": "null"}
        sides = {MISSING_IN_WALLET: (wallet, theirs), missing_at(side): (theirs, wallet)}
        found: list[Any] = [
            {
                "if": {"properties": {"type": {"const": kind}}},
                "then": {
                    "properties": {
                        **{name: null for name in nulls},
                        **{name: {"not": null} for name in present},
                    }
                },
            }
            for kind, (nulls, present) in sides.items()
        ] + [
            {
                "if": {"properties": {"type": {"pattern": MISMATCH_SUFFIX + "$"}}},
                "then": {"properties": {name: {"not": null} for name in wallet + theirs}},
            }
        ]
        schema["allOf"] = found

    return rules


def ok_means_none(schema: JsonDict) -> None:
    """A report's schema rule: ``ok`` exactly when it lists no finding."""
    schema["allOf"] = [
        {
            "if": {"properties": {"ok": {"const": True}}},
            "then": {"properties": {"discrepancies": {"maxItems": 0}}},
            "else": {"properties": {"discrepancies": {"minItems": 1}}},
        }
    ]
