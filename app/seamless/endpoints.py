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
from starlette.types import Receive, Scope, Send

from app import tracing
from app.seamless import envelope, events
from app.seamless.outcome import Outcome, Reason
from app.seamless.service import Reply
from app.state import Wallet
from app.web.http import BodyTimedOut, BodyTooLarge, receive_body, route_path
from app.web.routing import Header, Media, Operation, OperationRoute

log = logging.getLogger(__name__)

PREFIX = "/v1/seamless/"
ROUTE = PREFIX + "{provider}"
JSON = (b"content-type", b"application/json")


async def reply_to(
    w: Wallet, provider: str, key_id: str | None, body: bytes | BodyTooLarge | BodyTimedOut
) -> Reply:
    """The reply to one delivery; a body not read whole (over the size limit, or not arrived in
    time) is refused with a plain R2, as it cannot be authenticated."""
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
    return reply


def sealed(reply: Reply, provider: str) -> bytes:
    """The response body of ``reply``: sealed with its key, or plain when it has none."""
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
        reply = await reply_to(w, provider, key_id, body)
        with tracing.span("seamless.response", {"wallet.sealed": reply.key is not None}):
            content = sealed(reply, provider)
            headers = [JSON, (b"content-length", b"%d" % len(content))]
            if isinstance(body, BodyTimedOut):
                headers.append((b"connection", b"close"))  # the missing bytes are never read
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": content})


def _schema(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


DESCRIPTION = """\
One endpoint receives every game action of a provider. It always answers HTTP 200: the outcome \
is the `code` of the response object (R0 success, R1 failed processing, R2 unauthorized, R3 \
validation failed, R4 not enough balance). The full contract (freshness, delivery replay, \
idempotency, sessions, limits) is docs/seamless.md.

**Envelope.** The body is `{"payload": "<base64>"}`, standard alphabet with padding. The \
decoded bytes are `nonce (12 B) || ciphertext || tag (16 B)`: AES-256-GCM under the provider's \
32-byte key, with the provider code (UTF-8 bytes) as the associated data. The plaintext is one \
event, a UTF-8 JSON object: one of the schemas in `x-decrypted-request` (LoginEvent, \
BalanceEvent, BetEvent, CancelEvent, ResultEvent, ResultChangeEvent, LogoutEvent). The answer \
is `{"payload": ...}` sealed the same way, with the key that opened the request and a fresh \
nonce; its plaintext is a SeamlessResponse (`x-decrypted-response`).

**Plain answers.** R2 answers are plain JSON SeamlessResponse objects, without the `payload` \
wrapper, because the wallet could not or would not authenticate the request; they never carry \
a balance. So is the R1 `internal_error` sent when no key of the provider can be loaded.

**Keys.** Send `X-Key-Id` to name the key you used: then only that key is tried, and an \
unknown or mismatched one is a plain R2 `bad_signature`. Without it the wallet tries your \
current key, then your previous one. Bodies over 64 KiB (WALLET_MAX_BODY_BYTES) get a plain R2 \
`bad_signature` without being read whole."""

# The webhook as the document shows it: its envelope, and under x-decrypted-* the events and
# the answer inside (the components named by events.schema_name), which OpenAPI cannot express.
OPERATION = Operation(
    method="POST",
    path=ROUTE,
    operation_id="seamlessWebhook",
    tag="seamless",
    summary="The game provider webhook: every event, encrypted",
    description=DESCRIPTION,
    roles=frozenset(),
    public=True,
    path_params={"provider": "your provider code (anything else: plain R2 unknown_provider)"},
    headers=(Header("X-Key-Id", "the key_id of the key that sealed the payload", required=False),),
    raw_body=envelope.SeamlessEnvelope,
    answers=(
        (
            200,
            Media(
                ("application/json",),
                {"oneOf": [_schema("SeamlessEnvelope"), _schema("SeamlessResponse")]},
            ),
            "Always 200: the sealed answer, or a plain R2 (or key-less R1) answer",
        ),
    ),
    extensions={
        "x-decrypted-request": {
            "oneOf": [_schema(events.schema_name(name)) for name in events.MODELS],
            "discriminator": {
                "propertyName": "event",
                "mapping": {
                    name: _schema(events.schema_name(name))["$ref"] for name in events.MODELS
                },
            },
        },
        "x-decrypted-response": {"oneOf": [_schema("SeamlessResponse")]},
    },
)
webhook = Webhook()
routes = [OperationRoute(OPERATION, webhook)]
