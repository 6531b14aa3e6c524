"""The PSP webhook, ``POST /v1/psp/{psp}/webhook``: public, authenticated by the body's signature
under the route's webhook secret instead of an API key. Its body is a
:class:`~app.payments.psp_messages.PspEvent`, read by the route's adapter; its answer a
:class:`WebhookOutcome`."""

from __future__ import annotations

import logging
from typing import Annotated

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.fields import OneOf
from app.payments import signing
from app.payments.psp import MalformedPspData
from app.payments.service import WEBHOOK_OUTCOMES, apply_webhook_once
from app.state import wallet
from app.web import http, messages
from app.web.errors import AuthenticationFailed, InvalidRequest
from app.web.routing import path_param

log = logging.getLogger(__name__)


class WebhookOutcome(messages.Answer):
    """What the wallet did with a PSP event."""

    outcome: Annotated[str, OneOf.of(WEBHOOK_OUTCOMES)] = Field(
        description="moved_to_<status>: applied; duplicate: this event id was applied before; "
        "ignored: out of order or already final, nothing changed; refused_<reason>: does not "
        "match the payment, recorded and flagged, nothing changed"
    )


async def psp_webhook(request: Request) -> Response:
    """A PSP's event: 200 once applied (or already applied, or ignored as out of order); 401 and
    no change when the signature does not verify; 400 and no change when a field is not of the
    documented type (naming it); 404 for a payment we do not know, so the PSP retries."""
    w = wallet(request)
    psp = path_param(request, "psp")
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
    return messages.reply(WebhookOutcome(outcome=outcome))


routes = [Route("/v1/psp/{psp}/webhook", psp_webhook, methods=["POST"])]
