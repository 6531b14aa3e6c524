"""HTTP for the seamless webhook: read the capped body, hand it to the service, seal the answer.

Always HTTP 200: the outcome is in the response object's ``code``.

One handler serves every delivery, a plain ASGI app (:class:`Webhook`). The app's dispatcher
(``app.main.WalletApp``) hands a delivery to it directly, after giving it its correlation id and
metrics (:func:`app.web.http.tracked`) but skipping Starlette's routing and middleware, which on
the hot path was about a tenth of a worker's time per event. The same handler is the endpoint of
the route below, which keeps the webhook in the app's table: other methods are answered 405 by
the router, and the OpenAPI document finds it there.
"""

from __future__ import annotations

import logging

import orjson
from starlette.requests import ClientDisconnect
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app.seamless import envelope
from app.seamless.outcome import Outcome, Reason
from app.seamless.service import Reply
from app.state import Wallet
from app.web.http import BodyTimedOut, BodyTooLarge, receive_body, route_path

log = logging.getLogger(__name__)

PREFIX = "/v1/seamless/"
ROUTE = PREFIX + "{provider}"
JSON = (b"content-type", b"application/json")


async def answer(
    w: Wallet, provider: str, key_id: str | None, body: bytes | BodyTooLarge | BodyTimedOut
) -> bytes:
    """The response body for one delivery; a body not read whole (over the size limit, or not
    arrived in time) is refused with a plain R2, as it cannot be authenticated."""
    if not isinstance(body, bytes):
        message = (
            f"the body did not arrive in time (within {body.timeout_ms} ms)"
            if isinstance(body, BodyTimedOut)
            else str(body)
        )
        reply = Reply(Outcome(Reason.BAD_SIGNATURE, message).to_object(), None)
    else:
        try:
            reply = await w.seamless.handle(provider, key_id, body)
        except Exception:  # noqa: BLE001 - the last guard: never a 500 or a trace to a provider
            log.exception("seamless request failed unexpectedly")
            reply = Reply(
                Outcome(Reason.INTERNAL_ERROR, Reason.INTERNAL_ERROR.message).to_object(), None
            )
    content = orjson.dumps(reply.obj)
    if reply.key is not None:
        content = orjson.dumps({"payload": envelope.seal(reply.key, provider, content)})
    return content


def provider_of(scope: Scope) -> str | None:
    """The provider of a webhook delivery (a POST to the route), else None."""
    if scope["method"] != "POST":
        return None
    path = route_path(scope)
    if not path.startswith(PREFIX):
        return None
    provider = path[len(PREFIX) :]
    return provider if provider and "/" not in provider else None


class Webhook:
    """The ASGI handler of ``POST /v1/seamless/{provider}``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        provider = provider_of(scope)
        assert provider is not None, "routed here only for a delivery"
        w: Wallet = scope["state"]["wallet"]
        key_id = declared = None
        for name, value in scope["headers"]:
            # The first of repeated headers counts, as Starlette's Headers.get() reads them.
            if name == b"x-key-id" and key_id is None:
                key_id = value.decode("latin-1")
            elif name == b"content-length" and declared is None:
                declared = value
        body: bytes | BodyTooLarge | BodyTimedOut
        try:
            body = await receive_body(
                receive, declared, w.settings.max_body_bytes, w.settings.body_timeout_ms
            )
        except (BodyTooLarge, BodyTimedOut) as refused:
            body = refused
        except ClientDisconnect:
            return  # nobody to answer; the metrics count it as such
        content = await answer(w, provider, key_id, body)
        headers = [JSON, (b"content-length", b"%d" % len(content))]
        if isinstance(body, BodyTimedOut):
            headers.append((b"connection", b"close"))  # the missing bytes are never read
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})


webhook = Webhook()
routes = [Route(ROUTE, webhook, methods=["POST"])]
