"""``Idempotency-Key`` for operator actions (approve, reject, resolve, replay, ...).

The key is claimed by inserting its row in a transaction that also holds the action itself, on
the call's connection: a request racing with the same key waits at that insert until the first
one commits, then reads its answer instead of acting (one effect, never a 500). The first answer
is stored whatever it was, refusals included, so the same key and request always get it again;
the same key with another method, path or body is 409 ``idempotency_conflict``. An action that
fails with an unexpected error stores nothing: its transaction rolls back with the key.

Routes that keep their own idempotency record (payments, adjustments) do not use this: their
record is the payment row or the ledger posting. The answers of routes that show a secret once
(a provider's first key, a rotated key, an API key, a session token) are stored sealed under
the master key (AES-256-GCM, bound to the Idempotency-Key), like provider keys at rest: a
database dump does not show them, and the same request with the key shows them again.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import Response

from app.aead import open_raw, seal_raw
from app.db import Queries
from app.web import http
from app.web.errors import IdempotencyConflict, InProgress, InvalidRequest, WalletError

KEY_MAX = 255
# 1 to KEY_MAX printable characters: what ``str.isprintable`` accepts of Latin-1, the charset
# header values are read in, as a regular expression that the OpenAPI document carries too.
KEY = re.compile(r"[\x20-\x7e\xa1-\xac\xae-\xff]{1,255}")
# What a route's description says of ``once`` (idempotency="optional"), and of a secret answer.
IDEMPOTENT_ACTION = (
    "\n\nWith an `Idempotency-Key`, the same key and request again get the first answer "
    "again, refusals included, and racing requests with one key act once; another request "
    "with the key: 409 `idempotency_conflict`."
)
SHOWN_ONCE = (
    " The first answer, secret included, is stored sealed under the master key, so the same "
    "key and request show it again."
)


def key_of(request: Request) -> str | None:
    """The request's ``Idempotency-Key``, validated; None when it has none."""
    if request.headers.get("idempotency-key") is None:
        return None
    return required_key(request)


def required_key(request: Request) -> str:
    """The request's ``Idempotency-Key``, validated; 400 naming it when absent or malformed."""
    key = request.headers.get("idempotency-key")
    if key is None or KEY.fullmatch(key) is None:
        raise InvalidRequest(
            f"send an Idempotency-Key header of 1 to {KEY_MAX} printable characters",
            field="Idempotency-Key",
        )
    return key


async def once(
    request: Request,
    conn: asyncpg.Connection,
    q: Queries,
    key: str,
    act: Callable[[], Awaitable[Response]],
    *,
    seal: bytes | None = None,
) -> Response:
    """Run ``act`` once for ``key``; see the module's docstring. ``seal``: the master key, for
    a route whose answer shows a secret."""
    try:
        body = await http.read_body(request, http.MAX_JSON_BYTES)
    except http.BodyTooLarge as exc:
        raise InvalidRequest(str(exc)) from None
    # The handler reads the body again: Starlette's stream serves a body already read.
    request._body = body
    digest = hashlib.sha256(
        b"\0".join((request.method.encode(), request.url.path.encode(), body))
    ).digest()
    async with conn.transaction():
        if (
            await conn.fetchval(*q.claim_operator_request(idempotency_key=key, request_hash=digest))
            is None
        ):
            first = await conn.fetchrow(*q.operator_request(idempotency_key=key))
            if bytes(first["request_hash"]) != digest:
                raise IdempotencyConflict("Idempotency-Key was already used for another request")
            return http.json_response(_opened(first["response"], seal, key), first["status"])
        try:
            response = await act()
        except InProgress:
            raise  # not an answer: the same request later gets one (the key rolls back)
        except WalletError as exc:
            answer = exc.body(http.request_id(request), http.service_url(request))
            await conn.execute(
                *q.answer_operator_request(
                    idempotency_key=key, status=exc.http_status, response=answer
                )
            )
            return http.json_response(answer, exc.http_status, exc.headers())
        body = bytes(response.body)
        answer = orjson.loads(body)
        if seal is not None:
            sealed = seal_raw(seal, _bound(key), body)
            answer = {"sealed": base64.b64encode(sealed).decode()}
        await conn.execute(
            *q.answer_operator_request(
                idempotency_key=key, status=response.status_code, response=answer
            )
        )
        return response


def _bound(key: str) -> bytes:
    """What a sealed answer is bound to: it opens for its own Idempotency-Key only."""
    return b"operator-request:" + key.encode()


def _opened(stored: Any, seal: bytes | None, key: str) -> Any:
    """A stored answer as it was given; a sealed one opened with the master key."""
    if not (isinstance(stored, dict) and set(stored) == {"sealed"}):
        return stored
    if seal is None:
        raise RuntimeError("a sealed answer is stored for a route that does not seal")
    plain = open_raw(seal, _bound(key), base64.b64decode(stored["sealed"]))
    if plain is None:
        raise RuntimeError("the stored answer does not open under the master key")
    return orjson.loads(plain)
