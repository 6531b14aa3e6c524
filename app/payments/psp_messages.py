"""What a PSP sends the wallet, as typed messages (the sandbox PSP's format, docs/sandbox-psp.md):
the event it POSTs to the webhook (:class:`PspEvent`, the document's ``PspEvent``) and its answers
to the wallet's calls. :class:`app.payments.psp.SandboxPsp` reads each with its model.

Strict, like everything a PSP sends (contract 3 [1.1]): an amount is a JSON integer (never a
bool, a float or a numeric string), ids are identifiers, types and statuses are those the PSP
documents; a field the wallet does not read is ignored.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

from app.fields import Currency, Identifier, OneOf, PositiveAmount
from app.payments.sandbox import model as sandbox
from app.payments.sandbox.app import REFERENCE
from app.web.messages import Body

# The statuses the sandbox PSP documents for a payment, and the status each of its webhook types
# carries: a payment.processing event reports the payment still pending.
PSP_STATUSES = (
    sandbox.REQUIRES_ACTION,
    sandbox.PENDING,
    sandbox.SUCCEEDED,
    sandbox.FAILED,
    sandbox.HELD,
)
EVENT_STATUS = {
    "payment.succeeded": sandbox.SUCCEEDED,
    "payment.failed": sandbox.FAILED,
    "payment.held": sandbox.HELD,
    "payment.processing": sandbox.PENDING,
}
INT64_MAX = 2**63 - 1
MAX_URL = 2048

PspStatus = Annotated[str, OneOf.of(PSP_STATUSES)]
Int64 = Annotated[int, Field(ge=-(2**63), le=INT64_MAX)]


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError(f"a string of 1 to {MAX_URL} printable characters")
    return value


Url = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_URL), AfterValidator(_printable)
]


class PspEventData(Body):
    """The payment at the PSP when the event happened."""

    psp_payment_id: Identifier = Field(description="the PSP's id of the payment")
    reference: Identifier = Field(description="the wallet's payment id: events are matched by it")
    kind: Annotated[str, OneOf.of(sandbox.KINDS)]
    amount: PositiveAmount = Field(description="must equal the payment's")
    currency: Currency = Field(description="must equal the payment's")
    status: PspStatus = Field(
        description="the one its event type carries (payment.processing: pending)"
    )
    failure_code: Identifier | None = Field(
        None, description="on failed payments, like declined or kyc_rejected"
    )


class PspEvent(Body):
    """A PSP's webhook event (the sandbox PSP's format, docs/sandbox-psp.md)."""

    id: Identifier = Field(
        description="the event's id: an event is applied once, a repeat answers duplicate"
    )
    type: Annotated[str, OneOf.of(EVENT_STATUS)]
    created: int = Field(
        ge=0,
        le=INT64_MAX,
        description="unix seconds when the event happened (not when it was sent)",
        json_schema_extra={"format": "int64"},
    )
    data: PspEventData


# --- the PSP's answers to the wallet's calls ----------------------------------------------------


class Initiation(Body):
    """The answer to a new payment (``POST /v1/payments``)."""

    psp_payment_id: Identifier
    status: PspStatus
    redirect_url: Url | None = None
    deep_link: Url | None = None
    failure_code: Identifier | None = None


class PaymentStatus(Body):
    """The answer to ``GET /v1/payments/{id}``."""

    status: PspStatus


class FoundPayment(Body):
    """The answer to ``GET /v1/payments?reference=...``."""

    psp_payment_id: Identifier
    status: PspStatus


class Line(Body):
    """One line of a settlement report. Its amounts are integers, but any integer: a report is
    compared, not posted, and a line with an odd amount is a discrepancy to show, not a reason
    to lose the whole report. Its reference is any the PSP accepts (a line need not be ours)."""

    psp_payment_id: Identifier
    reference: Annotated[str, StringConstraints(pattern=f"^(?:{REFERENCE.pattern})$")]
    kind: Annotated[str, OneOf.of(sandbox.KINDS)]
    amount: Int64
    currency: Currency
    fee: Int64
    net: Int64


class Settlement(Body):
    """The answer to ``GET /v1/settlements?date=...``."""

    lines: list[Line]


class RefusalDetail(Body):
    code: Identifier


class Refusal(Body):
    """A 4xx answer: its code becomes the payment's failure_code."""

    error: RefusalDetail
