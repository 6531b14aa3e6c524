"""HTTP plumbing shared by the APIs: JSON in and out, request ids, error rendering, and the
per-request log context and metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import logs, strict_json, tracing
from app.config import Settings
from app.fields import IDENTIFIER
from app.ids import unique_hex
from app.metrics import UNMATCHED_ROUTE
from app.web.errors import InvalidRequest, WalletError

log = logging.getLogger(__name__)

MAX_JSON_BYTES = 64 * 1024


class BodyTooLarge(Exception):
    """The body passed its size limit; it was not read further."""


class BodyTimedOut(InvalidRequest):
    """The body did not arrive whole within ``WALLET_BODY_TIMEOUT_MS``.

    The answer closes the connection: the bytes still missing must never be read as the start
    of a next request, and a client that stalls does not keep its connection.
    """

    def __init__(self, timeout_ms: int) -> None:
        super().__init__(f"the request body was not received in time (within {timeout_ms} ms)")
        self.timeout_ms = timeout_ms

    def headers(self) -> dict[str, str]:
        return {"Connection": "close"}


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(obj), status, headers, media_type="application/json")


def request_id(request: Request) -> str | None:
    rid: str | None = request.scope.get("state", {}).get("request_id")
    return rid


def body_timeout_ms(request: Request) -> int:
    """``WALLET_BODY_TIMEOUT_MS`` of the app serving ``request``."""
    wallet = request.scope.get("state", {}).get("wallet")
    settings = wallet.settings if wallet is not None else Settings()
    timeout: int = settings.body_timeout_ms
    return timeout


async def receive_body(
    receive: Receive, declared: str | bytes | None, limit: int, timeout_ms: int
) -> bytes:
    """The request body, read from ``receive``: the one capped reader of every route.

    Refused as soon as it passes ``limit`` bytes, before reading it all (:class:`BodyTooLarge`;
    a ``declared`` Content-Length over the limit is refused unread), or when it has not arrived
    whole within ``timeout_ms`` (:class:`BodyTimedOut`). A client that disconnects first raises
    Starlette's ``ClientDisconnect``, as its own reader does.
    """
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_ms / 1000):
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    raise ClientDisconnect
                chunk: bytes = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(f"body exceeds {limit} bytes")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except TimeoutError:
        raise BodyTimedOut(timeout_ms) from None


async def read_body(request: Request, limit: int) -> bytes:
    """The body of a routed request (:func:`receive_body` with the app's body timeout). Kept on
    the request, so that reading it again (the handler after the idempotency check) serves it."""
    cached: bytes | None = getattr(request, "_body", None)
    if cached is not None:
        if len(cached) > limit:
            raise BodyTooLarge(f"body exceeds {limit} bytes")
        return cached
    body = await receive_body(
        request.receive, request.headers.get("content-length"), limit, body_timeout_ms(request)
    )
    request._body = body
    return body


async def read_body_first(request: Request, limit: int) -> bool:
    """Read a body (at most ``limit`` bytes) before a pooled connection is taken, kept on the
    request for the parsing after (:func:`read_body` serves it again): a client sending it
    slowly holds its own socket only, for at most ``WALLET_BODY_TIMEOUT_MS`` (whose answer
    closes the connection), never one of the connections the API, the back office and the
    seamless webhook share. False when the body is over ``limit``."""
    try:
        await read_body(request, limit)
    except BodyTooLarge:
        return False
    return True


async def read_json(request: Request) -> dict[str, Any]:
    """A JSON object body, or :class:`InvalidRequest`.

    Strict (:mod:`app.strict_json`): besides invalid JSON, a duplicate key or nesting deeper than
    ``MAX_DEPTH`` levels is refused, and so is the character U+0000 in any string, which Postgres
    cannot store in text or jsonb.
    """
    try:
        raw = await read_body(request, MAX_JSON_BYTES)
    except BodyTooLarge as exc:
        raise InvalidRequest(str(exc)) from None
    try:
        data = strict_json.loads(raw)
    except strict_json.StrictJsonError as exc:
        raise InvalidRequest(f"body: {exc}", field=exc.key) from None
    except ValueError:
        raise InvalidRequest("body is not valid UTF-8 JSON") from None
    if not isinstance(data, dict):
        raise InvalidRequest("body must be a JSON object")
    # JSON can only spell U+0000 as an escape (orjson refuses the raw byte): look closer only then.
    if b"\\u0000" in raw and _holds_nul(data):
        raise InvalidRequest("body: strings must not contain U+0000")
    return data


def _holds_nul(data: Any) -> bool:
    """Whether any string or key in ``data`` holds U+0000 (nesting is bounded by now)."""
    if isinstance(data, str):
        return "\x00" in data
    if isinstance(data, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in data.items())
    if isinstance(data, list):
        return any(_holds_nul(v) for v in data)
    return False


def error_response(exc: WalletError, request: Request) -> Response:
    body = exc.body(request_id(request), service_url(request))
    return json_response(body, exc.http_status, exc.headers())


def service_url(request: Request) -> str:
    """The service's base URL for links in answers (``docs_url``): ``WALLET_PUBLIC_URL`` when
    set, so that no caller's ``Host`` header chooses where they point and a proxy's TLS is kept;
    else the URL the caller reached (with the path prefix, ``root_path``)."""
    w = getattr(request.state, "wallet", None)
    public = w.settings.public_url if w is not None else None
    return public.rstrip("/") if public else str(request.base_url)


def route_template(scope: Scope) -> str:
    """The path template of the route that answered (``/v1/players/{player_id}``), never the raw
    path, so that a metric label has as many values as there are routes."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


def correlation_id(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The caller's ``X-Request-Id`` when it is a sane identifier, else a new one."""
    for name, value in headers:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if IDENTIFIER.fullmatch(candidate):
                return candidate
            break
    return "req_" + unique_hex(8)


def route_path(scope: Scope) -> str:
    """The request's path below the app's root path (as Starlette's router matches it)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("/", ""):
        return path[len(root) :]
    return path


# The metrics' status of a request answered nothing, because its client disconnected before
# sending its body (nginx's number for it).
CLIENT_GONE = 499


async def tracked(
    scope: Scope, receive: Receive, send: Send, app: ASGIApp, route: str | None = None
) -> None:
    """Serve one HTTP request with ``app``: give it a correlation id (the caller's
    ``X-Request-Id`` when sane) sent back as ``X-Request-Id`` and bound for the log lines it
    causes, and count it in the app's metrics under ``route`` (else the route that answered)."""
    started = time.perf_counter()
    rid = correlation_id(scope["headers"])
    state = scope.setdefault("state", {})
    state["request_id"] = rid
    bound = logs.bind_request_id(rid)
    status = 0  # no response started
    header = (b"x-request-id", rid.encode())
    # The HTTP server span, when tracing: the current span here, a child's in send_with_id.
    server = tracing.server_span(rid) if tracing.ON else None

    async def send_with_id(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            message.setdefault("headers", []).append(header)
            if server is not None:
                # Before the body: the span ends with the response's last message.
                tracing.name_server_span(server, scope, route or route_template(scope))
        await send(message)

    try:
        await app(scope, receive, send_with_id)
    except BaseException:
        status = status or 500  # what the server answers when the app raises before a response
        raise
    finally:
        wallet = state.get("wallet")
        if wallet is not None:
            wallet.metrics.http_request(
                route or route_template(scope),
                scope["method"],
                status or CLIENT_GONE,
                time.perf_counter() - started,
            )
    # Not reached when the app raised, on purpose: the server logs the escaped exception next, in
    # this same task, and that line needs the id too.
    logs.reset_request_id(bound)
