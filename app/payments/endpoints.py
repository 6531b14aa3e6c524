"""HTTP for payments: deposits and withdrawals (operator API keys, by role) and PSP webhooks
(authenticated by their signature instead)."""

from __future__ import annotations

import logging
import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.payments import signing
from app.payments.psp import MalformedPspData
from app.payments.service import apply_webhook_once
from app.state import wallet
from app.web import http
from app.web.errors import AuthenticationFailed, InvalidRequest

log = logging.getLogger(__name__)
MAX_REFERENCE = 128
COUNTRY = re.compile(r"[A-Z]{2}")


async def psp_webhook(request: Request) -> Response:
    """A PSP's event: 200 once applied (or already applied, or ignored as out of order); 401 and
    no change when the signature does not verify; 400 and no change when a field is not of the
    documented type (naming it); 404 for a payment we do not know, so the PSP retries."""
    w = wallet(request)
    psp = http.identifier(dict(request.path_params), "psp")
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
    return http.json_response({"outcome": outcome})


routes = [Route("/v1/psp/{psp}/webhook", psp_webhook, methods=["POST"])]
