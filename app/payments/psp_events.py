"""The event a PSP POSTs to the wallet's webhook, as a typed message (the sandbox PSP's format,
docs/sandbox-psp.md): what :meth:`app.payments.psp.SandboxPsp.parse_webhook` validates a verified
body with, and what the document shows as ``PspEvent``.

Strict, like everything a PSP sends (contract 3 [1.1]): an amount is a JSON integer (never a
bool, a float or a numeric string), ids are identifiers, types and statuses are those the PSP
documents; a field the wallet does not read is ignored.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from app.fields import Currency, Identifier, OneOf, PositiveAmount
from app.payments.sandbox import model as sandbox
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


class PspEventData(Body):
    """The payment at the PSP when the event happened."""

    psp_payment_id: Identifier = Field(description="the PSP's id of the payment")
    reference: Identifier = Field(description="the wallet's payment id: events are matched by it")
    kind: Annotated[str, OneOf.of(sandbox.KINDS)]
    amount: PositiveAmount = Field(description="must equal the payment's")
    currency: Currency = Field(description="must equal the payment's")
    status: Annotated[str, OneOf.of(PSP_STATUSES)] = Field(
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
