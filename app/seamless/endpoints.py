"""HTTP for the seamless webhook: read the capped body, hand it to the service, seal the answer.

Always HTTP 200: the outcome is in the response object's ``code``.

Every delivery is served by :func:`serve`, a plain ASGI handler that the app calls before its
routing and middleware (``app.main.WalletApp``): it does what they would do for this one route (a
correlation id bound for the log lines and sent back as ``X-Request-Id``, the HTTP metrics) and
nothing else, which on the hot path is about a tenth of a worker's time per event. The Starlette
route below serves the same handler when the fast path does not apply (an app mounted under a
root path) and keeps the route in the app's table, so other methods are answered 405.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app import logs
from app.seamless import envelope
from app.seamless.outcome import Outcome, Reason
from app.seamless.service import Reply
from app.state import Wallet, wallet
from app.web.http import BodyTimedOut, BodyTooLarge, correlation_id, read_body

log = logging.getLogger(__name__)

PREFIX = "/v1/seamless/"
ROUTE = PREFIX + "{provider}"
JSON = (b"content-type", b"application/json")
# The metrics' status of a request whose client disconnected before sending its body (nginx's
# number for it): nobody was answered.
CLIENT_GONE = 499


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
    """The provider of a webhook delivery that :func:`serve` takes, else None."""
    if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
        return None
    path: str = scope["path"]
    if not path.startswith(PREFIX):
        return None
    provider = path[len(PREFIX) :]
    return provider if provider and "/" not in provider else None


class ClientGone(Exception):
    """The client disconnected before its body was read: there is nobody to answer."""


async def serve(scope: Scope, receive: Receive, send: Send, provider: str) -> None:
    started = time.perf_counter()
    w: Wallet = scope["state"]["wallet"]
    rid = correlation_id(scope["headers"])
    bound = logs.bind_request_id(rid)
    key_id = declared = None
    for name, value in scope["headers"]:
        # The first of repeated headers counts, as Starlette's Headers.get() reads them.
        if name == b"x-key-id" and key_id is None:
            key_id = value.decode("latin-1")
        elif name == b"content-length" and declared is None:
            declared = value
    status = 500  # as the server answers when something below raises
    try:
        body: bytes | BodyTooLarge | BodyTimedOut
        try:
            body = await _body(
                receive, declared, w.settings.max_body_bytes, w.settings.body_timeout_ms
            )
        except (BodyTooLarge, BodyTimedOut) as refused:
            body = refused
        content = await answer(w, provider, key_id, body)
        headers = [JSON, (b"content-length", b"%d" % len(content)), (b"x-request-id", rid.encode())]
        if isinstance(body, BodyTimedOut):
            headers.append((b"connection", b"close"))  # the missing bytes are never read
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        status = 200
        await send({"type": "http.response.body", "body": content})
    except ClientGone:
        status = CLIENT_GONE
    finally:
        w.metrics.http_request(ROUTE, "POST", status, time.perf_counter() - started)
    # Not reached when something raised, on purpose, as in app.web.http.RequestIdMiddleware: the
    # server logs the escaped exception next, in this same task, and that line needs the id too.
    logs.reset_request_id(bound)


async def _body(receive: Receive, declared: bytes | None, limit: int, timeout_ms: int) -> bytes:
    """The body; :class:`BodyTooLarge` when it passes ``limit`` bytes (refused before reading it
    all), :class:`BodyTimedOut` when it has not arrived whole within ``timeout_ms``."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_ms / 1000):
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    raise ClientGone
                chunk: bytes = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(f"body exceeds {limit} bytes")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except TimeoutError:
        raise BodyTimedOut(timeout_ms) from None


async def webhook(request: Request) -> Response:
    w = wallet(request)
    body: bytes | BodyTooLarge | BodyTimedOut
    try:
        body = await read_body(request, w.settings.max_body_bytes)
    except (BodyTooLarge, BodyTimedOut) as refused:
        body = refused
    content = await answer(
        w, request.path_params["provider"], request.headers.get("x-key-id"), body
    )
    headers = body.headers() if isinstance(body, BodyTimedOut) else None
    return Response(content, 200, headers, media_type="application/json")


routes = [Route(ROUTE, webhook, methods=["POST"])]
