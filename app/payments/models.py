"""The messages of the payments API, declared once: what a caller sends to create a deposit or a
withdrawal, and the payment the API answers with (and stores as the first answer to its
Idempotency-Key).

The status lists are the state machines' (``payment_state_edges`` in
sql/migrations/004_payments.sql allows exactly these, and tests/web/test_openapi.py compares);
the attention reasons are the flags the service sets. Everything else reads them from here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, ConfigDict, Field, StringConstraints, with_config
from pydantic.config import JsonDict
from typing_extensions import TypedDict

from app.fields import Currency, Identifier, OneOf, PositiveAmount, Time
from app.web.messages import Answer, Body, Page

DEPOSIT_STATUSES = ("awaiting_method", "processing", "succeeded", "failed", "expired")
WITHDRAWAL_STATUSES = ("requested", "held", "approved", "processing", "paid", "failed", "rejected")
STATUSES = tuple(dict.fromkeys((*DEPOSIT_STATUSES, *WITHDRAWAL_STATUSES)))
KINDS = {"deposit": DEPOSIT_STATUSES, "withdrawal": WITHDRAWAL_STATUSES}
ID_PREFIX = {"deposit": "dep", "withdrawal": "wdr"}  # a payment id is dep_... or wdr_...

# Why a payment waits for an operator (payments.flagged, the answer's `attention`).
OUTCOME_UNKNOWN = "payout_outcome_unknown"
# A withdrawal waiting for an operator's approval (no flag: its status says it).
HELD_FOR_REVIEW = "held_for_review"
# A PSP event that does not match the payment: refused, recorded and flagged.
MISMATCHES = ("psp_payment_id_mismatch", "amount_mismatch", "currency_mismatch")
# A PSP's "succeeded" after the wallet had given up on the payment: refused and flagged.
SUCCEEDED_AFTER_EXPIRY = "succeeded_after_expiry"  # a deposit, money held and not credited
PAID_AFTER_RELEASE = "paid_after_release"  # a payout, its hold already given back
# The opposite: a payout settled, then reported failed by its PSP.
FAILED_AFTER_PAID = "failed_after_paid"
CONTRADICTED = (SUCCEEDED_AFTER_EXPIRY, PAID_AFTER_RELEASE, FAILED_AFTER_PAID)
ATTENTION = (OUTCOME_UNKNOWN, HELD_FOR_REVIEW, *MISMATCHES, *CONTRADICTED)
RESOLUTIONS = ("paid", "failed")  # what an operator may resolve a sent withdrawal to

MAX_REFERENCE = 128
COUNTRY_RULE = "an ISO 3166 alpha-2 code like IN"
PAYMENT_ID = r"^(dep|wdr)_"
_COUNTRY = re.compile(r"[A-Z]{2}")

Reference = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_REFERENCE),
    Field(description="yours, shown back"),
]


def _country(value: str) -> str:
    if not _COUNTRY.fullmatch(value):
        raise ValueError(COUNTRY_RULE)
    return value


@with_config(ConfigDict(extra="allow"))
class PaymentMetadata(TypedDict, total=False):
    """Yours, shown back. With the sandbox PSP, `scenario` picks one of its scenarios
    (docs/sandbox-psp.md); `country` is matched against the routes' country rules."""

    country: Annotated[
        str,
        AfterValidator(_country),
        Field(description=COUNTRY_RULE, json_schema_extra={"pattern": "^[A-Z]{2}$"}),
    ]


class PaymentRequest(Body):
    """A deposit or a withdrawal to create. It is, with the Idempotency-Key, what a repeated
    request must match."""

    player_id: Identifier
    amount: PositiveAmount
    currency: Currency = Field(description="the player's wallet currency")
    method: Identifier = Field(description="one a payment route serves, like card or upi")
    reference: Reference | None = None
    metadata: PaymentMetadata = Field(default_factory=lambda: PaymentMetadata())

    def __init__(self, *args: Any, **fields: Any) -> None:
        """Positional too, like the dataclass it was: ``PaymentRequest(player, 100, "EUR",
        "card")``. (Validating a body calls this with its fields by name.)"""
        super().__init__(**dict(zip(type(self).model_fields, args, strict=False)), **fields)

    def digest(self) -> bytes:
        """The request's identity for Idempotency-Key comparisons."""
        return hashlib.sha256(orjson.dumps(self.model_dump(), option=orjson.OPT_SORT_KEYS)).digest()


class WithdrawalResolve(Body):
    """An operator's resolution of a withdrawal whose PSP has not reported."""

    outcome: Annotated[str, OneOf.of(RESOLUTIONS)]
    reason: Annotated[
        str,
        StringConstraints(min_length=1, max_length=500, pattern=r"\S"),
        AfterValidator(str.strip),
        Field(description="what the PSP said when checked (1 to 500 characters)"),
    ]


def _statuses_by_kind(schema: JsonDict) -> None:
    """A deposit's statuses are a deposit's, a withdrawal's a withdrawal's."""
    schema["allOf"] = [
        {
            "if": {"properties": {"id": {"pattern": f"^{ID_PREFIX[kind]}_"}}},
            "then": {"properties": {"status": {"enum": list(statuses)}}},
        }
        for kind, statuses in KINDS.items()
    ]


class Payment(Answer):
    """A deposit or a withdrawal (its statuses depend on which: see `status`). State machines:
    docs/payments.md."""

    model_config = ConfigDict(json_schema_extra=_statuses_by_kind)

    id: str = Field(
        pattern=PAYMENT_ID, description="dep_... for a deposit, wdr_... for a withdrawal"
    )
    status: Annotated[str, OneOf.of(STATUSES)] = Field(
        description=f"a deposit: {', '.join(DEPOSIT_STATUSES)}; "
        f"a withdrawal: {', '.join(WITHDRAWAL_STATUSES)}"
    )
    player_id: Identifier
    amount: PositiveAmount
    currency: Currency
    method: Identifier = Field(description="as requested, like card or upi")
    reference: Reference | None
    metadata: dict[str, Any] = Field(description="yours, as sent ({} when none)")
    redirect_url: str | None = Field(
        description="the PSP's hosted page to send the player to (deposits)",
        json_schema_extra={"format": "uri"},
    )
    deep_link: str | None = Field(description="an app link, like upi://pay?... (UPI deposits)")
    failure_code: str | None = Field(
        description="why it failed: the PSP's code (like declined), route_degraded, or "
        "resolved_failed (an operator's resolve)"
    )
    needs_attention: bool = Field(
        description="an operator should look: see `attention`, and "
        "`GET /v1/withdrawals?attention=true`"
    )
    attention: Annotated[str, OneOf.of(ATTENTION)] | None = Field(
        description="payout_outcome_unknown: sent to its PSP, which has not said whether it "
        "paid; the funds stay held until that PSP reports or "
        "`POST /v1/withdrawals/{payment_id}/resolve`. held_for_review: waiting for an "
        "operator's approval. The others: a PSP event refused as not matching, or a success "
        "after the wallet gave up"
    )
    created_at: Time
    expires_at: Time

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Payment:
        """A payment row (``SELECT * FROM payments``) as the API shows it."""
        attention = _attention(row)
        return cls(
            id=row["id"],
            status=row["status"],
            player_id=row["player_id"],
            amount=row["amount"],
            currency=row["currency"],
            method=row["method"],
            reference=row["reference"],
            metadata=row["metadata"],
            redirect_url=row["redirect_url"],
            deep_link=row["deep_link"],
            failure_code=row["failure_code"],
            needs_attention=attention is not None,
            attention=attention,
            created_at=row["created_at"],
            expires_at=row["expires_at"],
        )


class PaymentPage(Page[Payment]):
    """A page of Payment objects, keyset-paged."""


def _attention(row: Mapping[str, Any]) -> str | None:
    """Why the payment waits for an operator, if it does: the mirror of the SQL function
    ``payment_attention`` (sql/functions/payments.sql) that the listing and the gauge read
    (tests/platform/test_gauges.py compares them)."""
    flagged: str | None = row["flagged"]
    if flagged is None and row["kind"] == "withdrawal" and row["status"] == "held":
        return HELD_FOR_REVIEW
    return flagged
