"""The PSP webhook, ``POST /v1/psp/{psp}/webhook``: public, authenticated by the body's signature
under the route's webhook secret instead of an API key. Its body is a
:class:`~app.payments.psp_messages.PspEvent`, read by the route's adapter; its answer a
:class:`WebhookOutcome`."""

from __future__ import annotations

import logging
from typing import Annotated

from pydantic import Field
from starlette.requests import Request

from app import tracing
from app.fields import OneOf
from app.payments import signing
from app.payments.psp import MalformedPspData
from app.payments.psp_messages import PspEvent
from app.payments.service import WEBHOOK_OUTCOMES, apply_webhook_once
from app.state import wallet
from app.web import http, messages
from app.web.errors import AuthenticationFailed, InvalidRequest
from app.web.routing import Api, Header

log = logging.getLogger(__name__)

api = Api("payments", path_params={"psp": "the PSP route's name, as configured in WALLET_PSPS"})

DESCRIPTION = """\
Where a PSP route (WALLET_PSPS) sends its events about the payments it holds: the path names the \
route. Not authenticated by an API key but by the body's signature, with the route's webhook \
secret:

`X-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of the bytes "{t}." followed by the raw \
body>`

The MAC is checked in constant time, then the time, with a 300 s tolerance either way. A missing, \
malformed, stale or wrong signature is 401 and changes nothing. Several `v1=` entries may be sent \
(while a secret is rotated); entries of other schemes are ignored.

Events are matched by `data.reference`, the wallet's payment id. Each event `id` is applied once: \
a repeat answers `duplicate`. An event that does not match the payment's amount, currency or PSP \
payment id answers `refused_<reason>` and flags the payment. An event out of order (like \
`processing` after `succeeded`) answers `ignored`. 404 for an unknown route or payment is not \
recorded, so the PSP's retry may succeed later. Fields are strictly typed: an amount that is not a \
JSON integer (a string, a float, a boolean), a field of the wrong type or format, an unknown event \
type or status is 400 naming the field, and changes nothing. Full rules: docs/payments.md, \
section 5."""


class WebhookOutcome(messages.Answer):
    """What the wallet did with a PSP event."""

    outcome: Annotated[str, OneOf.of(WEBHOOK_OUTCOMES)] = Field(
        description="moved_to_<status>: applied; duplicate: this event id was applied before; "
        "ignored: out of order or already final, nothing changed; refused_<reason>: does not "
        "match the payment, recorded and flagged, nothing changed"
    )


PATH = "/v1/psp/{psp}/webhook"


@api.post(
    PATH,
    summary="A PSP's signed event about one of its payments",
    description=DESCRIPTION,
    public=True,
    raw_body=PspEvent,  # read by the route's adapter, after the signature of its bytes
    headers=(
        Header(
            "X-Signature",
            "t=<unix seconds>,v1=<hex HMAC-SHA256 of `{t}.{raw body}`> "
            "(401 when missing, malformed, stale or wrong)",
        ),
    ),
    answers=[
        (
            200,
            WebhookOutcome,
            "Verified: applied, applied before, ignored or refused (see `outcome`)",
        )
    ],
    errors=(400, 401, 404, 503),
    error_notes=(
        (
            401,
            "authentication_failed: X-Signature is missing, malformed, stale or wrong; "
            "nothing changed",
        ),
        (
            404,
            "resource_not_found: no such PSP route, or no payment with the event's reference "
            "at this route; not recorded, so a retry may succeed",
        ),
    ),
)
async def psp_webhook(request: Request, psp: str) -> WebhookOutcome:
    """A PSP's event: 200 once applied (or already applied, or ignored as out of order); 401 and
    no change when the signature does not verify; 400 and no change when a field is not of the
    documented type (naming it); 404 for a payment we do not know, so the PSP retries."""
    w = wallet(request)
    try:
        body = await http.read_body(request, http.MAX_JSON_BYTES)
    except http.BodyTooLarge as exc:
        raise InvalidRequest(str(exc)) from None
    try:
        outcome = await apply_webhook_once(
            w.payments, psp, body, request.headers.get("x-signature")
        )
    except signing.SignatureError as exc:
        log.warning("psp %s webhook refused: signature %s", psp, exc.reason)
        raise AuthenticationFailed(f"X-Signature does not verify ({exc.reason})") from None
    except MalformedPspData as exc:
        # Parsed before anything is read or written: a refused event leaves no trace but the log.
        log.warning("psp %s webhook refused: %s", psp, exc)
        raise InvalidRequest(
            f"the event is not one this PSP sends: {exc}", field=exc.field
        ) from None
    tracing.annotate({"wallet.psp": psp, "wallet.outcome": outcome})
    return WebhookOutcome(outcome=outcome)


routes = api.routes
