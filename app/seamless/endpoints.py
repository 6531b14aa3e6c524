"""HTTP for the seamless webhook: read the capped body, hand it to the service, seal the answer.

Always HTTP 200: the outcome is in the response object's ``code``.
"""

from __future__ import annotations

import logging

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.http import BodyTooLarge, read_body
from app.seamless import envelope
from app.seamless.outcome import MESSAGES
from app.seamless.service import Reply
from app.state import wallet

log = logging.getLogger(__name__)


async def webhook(request: Request) -> Response:
    w = wallet(request)
    provider: str = request.path_params["provider"]
    try:
        body = await read_body(request, w.settings.max_body_bytes)
    except BodyTooLarge as exc:
        reply = Reply({"code": "R2", "reason": "bad_signature", "message": str(exc)}, None)
    else:
        try:
            reply = await w.seamless.handle(provider, request.headers.get("x-key-id"), body)
        except Exception:  # noqa: BLE001 - the last guard: never a 500 or a trace to a provider
            log.exception("seamless request failed unexpectedly")
            reply = Reply(
                {"code": "R1", "reason": "internal_error", "message": MESSAGES["internal_error"]},
                None,
            )
    content = orjson.dumps(reply.obj)
    if reply.key is not None:
        content = orjson.dumps({"payload": envelope.seal(reply.key, provider, content)})
    return Response(content, 200, media_type="application/json")


routes = [Route("/v1/seamless/{provider}", webhook, methods=["POST"])]
