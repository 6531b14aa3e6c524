"""The OpenAPI 3.1 document of the operator API (payments and their events included), the
seamless webhook, the PSP webhook and the events the wallet sends to the operator's platform (an
OpenAPI ``webhooks`` entry), and the routes serving it.

``GET /openapi.json`` answers the document; ``GET /docs`` (:mod:`app.web.docs`) renders it for
people with Swagger UI, served from this origin.

Every route but the seamless webhook is declared on an :class:`app.web.routing.Api` (the public
ones too: health, metrics, the PSP webhook, this document and its page), and its operation is
generated from that declaration by :mod:`app.web.docgen`, with the shared error answers, headers
and security scheme of app/web. What no declaration can say is here: the info and tags, the
``webhooks`` entry, the seamless webhook's operation, and the examples, which are sealed or
signed for real (the PSP webhook's is added to its generated operation).
``tests/web/test_openapi.py`` checks that every route is documented and that real responses
validate against the document.

The seamless webhook is encrypted end to end, which OpenAPI cannot express: its operation
describes the envelope, and the decrypted events and answers are component schemas that the
operation names in ``x-decrypted-request`` and ``x-decrypted-response``.
"""

from __future__ import annotations

import base64
import importlib.metadata
import re
from functools import lru_cache
from typing import Any, Literal

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import Response

from app.payments import outbox, signing, webhook
from app.payments.events import DELIVERY, DELIVERY_TIMEOUT, OPERATOR_WEBHOOK
from app.payments.models import DEPOSIT_STATUSES as DEPOSIT_STATUSES  # re-exported for tests
from app.payments.models import WITHDRAWAL_STATUSES as WITHDRAWAL_STATUSES
from app.payments.psp_messages import PSP_STATUSES as PSP_STATUSES  # re-exported for tests
from app.payments.service import WEBHOOK_OUTCOMES as WEBHOOK_OUTCOMES
from app.seamless import envelope
from app.seamless.events import MODELS, Answer
from app.seamless.outcome import MESSAGES
from app.web import docgen, http, routing

Schema = dict[str, Any]

OPENAPI_VERSION = "3.1.0"
TITLE = "Wallet API"
JSON = "application/json"
PSP_WEBHOOK = webhook.PATH
EVENTS = tuple(MODELS)
# The seamless examples are sealed for real, under a key everyone may know, so that integrators
# can test their envelope code against them (and the test proves they open).
EXAMPLE_PROVIDER = "acme"
EXAMPLE_KEY = bytes(range(32))
EXAMPLE_TIME = 1779104538

# The PSP webhook's and the operator events' examples are signed for real, with an example secret
# everyone may know.
EXAMPLE_WEBHOOK_SECRET = b"whsec_example"


# --- schema building blocks ---------------------------------------------------------------------


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _anchored(pattern: re.Pattern[str]) -> str:
    # JSON Schema patterns search anywhere in the string; the code's patterns must match whole.
    return f"^(?:{pattern.pattern})$"


IDENTIFIER: Schema = {
    "type": "string",
    "pattern": _anchored(http.IDENTIFIER),
    "description": "1 to 64 characters of [A-Za-z0-9_.:-]",
}


def _text(description: str = "", **extra: Any) -> Schema:
    schema: Schema = {"type": "string", **extra}
    if description:
        schema["description"] = description
    return schema


# --- component schemas: payments ----------------------------------------------------------------


PSP_EVENT_EXAMPLE: Schema = {
    "id": "evt_8c1d0f3e5a7b9c2d4e6f8a0b",
    "type": "payment.succeeded",
    "created": EXAMPLE_TIME,
    "data": {
        "psp_payment_id": "psp_3f9c2a7d1e5b4c8a",
        "reference": "dep_4f1c9a2b7e3d8c6a5b0f",
        "kind": "deposit",
        "amount": 2500,
        "currency": "EUR",
        "status": "succeeded",
    },
}


def psp_example_signature() -> str:
    """The X-Signature of the compact JSON of :data:`PSP_EVENT_EXAMPLE`, sent at EXAMPLE_TIME under
    the example secret."""
    return signing.sign(EXAMPLE_WEBHOOK_SECRET, orjson.dumps(PSP_EVENT_EXAMPLE), EXAMPLE_TIME)


# In the order a delivery's body has them (Postgres jsonb's: shorter keys first).
OPERATOR_EVENT_EXAMPLE: Schema = {
    "id": "evt_5b2e8f0c1d3a4e6f9b7c8d0e1f2a3b4c",
    "data": {
        "id": "dep_4f1c9a2b7e3d8c6a5b0f",
        "kind": "deposit",
        "amount": 2500,
        "method": "card",
        "status": "succeeded",
        "currency": "EUR",
        "player_id": "p-42",
        "reference": "order-1",
        "failure_code": None,
    },
    "type": "deposit.succeeded",
    "created": EXAMPLE_TIME,
}


def operator_example_signature() -> str:
    """The X-Signature of the compact JSON of :data:`OPERATOR_EVENT_EXAMPLE`, sent at
    EXAMPLE_TIME under the example secret."""
    return signing.sign(EXAMPLE_WEBHOOK_SECRET, orjson.dumps(OPERATOR_EVENT_EXAMPLE), EXAMPLE_TIME)


# --- component schemas: the seamless webhook ---------------------------------------------------


def _seamless_schemas() -> dict[str, Schema]:
    """The decrypted events and answer, generated from their models (:mod:`app.seamless.events`)
    under the names the document gives them, each with its example; and the envelope."""
    generated = docgen.schemas(
        [*((model, "validation") for model in MODELS.values()), (Answer, "serialization")]
    )
    examples = {name: event for name, event, _ in _SEAMLESS_EXAMPLES}
    schemas = {
        event_schema_name(name): {
            **generated[model.__name__],
            "title": event_schema_name(name),
            "examples": [examples[name]],
        }
        for name, model in MODELS.items()
    }
    schemas["SeamlessResponse"] = {
        **generated[Answer.__name__],
        "title": "SeamlessResponse",
        "examples": [answer for _, _, answer in _SEAMLESS_EXAMPLES],
    }
    schemas["SeamlessEnvelope"] = {
        "type": "object",
        "required": ["payload"],
        "properties": {
            "payload": {
                "type": "string",
                "contentEncoding": "base64",
                "pattern": "^[A-Za-z0-9+/]*={0,2}$",
                "description": "base64 (standard alphabet, padded) of nonce (12 B) || "
                "ciphertext || tag (16 B)",
            }
        },
        "additionalProperties": False,
        "description": "The encrypted body of a request or an answer.",
    }
    return schemas


def event_schema_name(event: str) -> str:
    """`bet` -> `BetEvent`, `result_change` -> `ResultChangeEvent`."""
    return "".join(part.title() for part in event.split("_")) + "Event"


def _event_example(name: str, n: int, **fields: Any) -> Schema:
    return {
        "event": name,
        "request_id": f"req-{n}",
        "timestamp": EXAMPLE_TIME,
        "player_id": "p-42",
        **fields,
    }


def _answer(n: int, balance: int, transaction_id: int | None = None) -> Schema:
    answer: Schema = {
        "code": "R0",
        "reason": "ok",
        "message": MESSAGES["ok"],
        "request_id": f"req-{n}",
        "player_id": "p-42",
        "balance": balance,
        "currency": "EUR",
    }
    if transaction_id is not None:
        answer["transaction_id"] = str(transaction_id)
    return answer


TOKEN_EXAMPLE = "q3VbX0s9y2jz0Nq5m8p7tK1c4wR6vH2dL5fA9gE3uJ0"
# One short story in order: each answer's balance follows from the one before.
_SEAMLESS_EXAMPLES: tuple[tuple[str, Schema, Schema], ...] = (
    ("login", _event_example("login", 1, session_token=TOKEN_EXAMPLE), _answer(1, 10_000)),
    ("balance", _event_example("balance", 2), _answer(2, 10_000)),
    (
        "bet",
        _event_example(
            "bet",
            3,
            session_token=TOKEN_EXAMPLE,
            transaction_id="b-1",
            round_id="r-1",
            game_id="slot-7",
            amount=250,
            currency="EUR",
        ),
        _answer(3, 9_750, 1187),
    ),
    (
        "cancel",
        _event_example(
            "cancel",
            4,
            transaction_id="c-1",
            ref_transaction_id="b-1",
            round_id="r-1",
            currency="EUR",
        ),
        _answer(4, 10_000, 1188),
    ),
    (
        "result",
        _event_example(
            "result",
            5,
            transaction_id="w-1",
            round_id="r-2",
            game_id="slot-7",
            amount=1000,
            currency="EUR",
            round_closed=True,
        ),
        _answer(5, 11_000, 1189),
    ),
    (
        "result_change",
        _event_example(
            "result_change",
            6,
            transaction_id="w-1-fix",
            ref_transaction_id="w-1",
            round_id="r-2",
            amount=800,
            currency="EUR",
        ),
        _answer(6, 10_800, 1190),
    ),
    ("logout", _event_example("logout", 7, session_token=TOKEN_EXAMPLE), _answer(7, 10_800)),
)
_EXAMPLE_NOTES = {
    "login": "Opens the game: checks the session, answers the balance.",
    "balance": "The balance; a session token is accepted but not checked.",
    "bet": "Debits 250.",
    "cancel": "Refunds bet b-1 (the bet's round has no result yet).",
    "result": "A free-round win: a round without a bet is allowed.",
    "result_change": "Corrects result w-1 from 1000 to 800: posts -200.",
    "logout": "Ends the session; results and refunds may still arrive.",
}


def seal_example(plaintext: Schema, nonce_seed: int) -> str:
    """``plaintext`` sealed for the example provider under the example key, with a fixed nonce
    so that the document is the same every time (never do this with a real key)."""
    nonce = nonce_seed.to_bytes(envelope.NONCE_BYTES, "big")
    sealed = AESGCM(EXAMPLE_KEY).encrypt(nonce, orjson.dumps(plaintext), EXAMPLE_PROVIDER.encode())
    return base64.b64encode(nonce + sealed).decode("ascii")


def _seamless_examples() -> tuple[dict[str, Schema], dict[str, Schema]]:
    """(request examples, answer examples), each sealed, each with its ``x-decrypted`` form."""
    requests: dict[str, Schema] = {}
    answers: dict[str, Schema] = {}
    for i, (name, event, answer) in enumerate(_SEAMLESS_EXAMPLES):
        note = _EXAMPLE_NOTES[name]
        requests[name] = {
            "summary": f"{name}: {note}",
            "value": {"payload": seal_example(event, 2 * i + 1)},
            "x-decrypted": event,
        }
        answers[name] = {
            "summary": f"the answer to {name}",
            "value": {"payload": seal_example(answer, 2 * i + 2)},
            "x-decrypted": answer,
        }
    answers["r2_plain"] = {
        "summary": "a plain R2 answer: the request could not be authenticated",
        "value": {"code": "R2", "reason": "bad_signature", "message": MESSAGES["bad_signature"]},
    }
    return requests, answers


# --- shared responses ---------------------------------------------------------------------------


def _json_response(description: str, schema: Schema, **extra: Any) -> Schema:
    content = {JSON: {"schema": schema, **extra}}
    return {"description": description, "headers": docgen.REQUEST_ID_HEADER, "content": content}


# --- operations -------------------------------------------------------------------------------


_HOURS = round(outbox.RETRY_WINDOW / 3600)
SEAMLESS_DESCRIPTION = f"""\
One endpoint receives every game action of a provider. It always answers HTTP 200: the outcome \
is the `code` of the response object (R0 success, R1 failed processing, R2 unauthorized, R3 \
validation failed, R4 not enough balance). The full contract (freshness, delivery replay, \
idempotency, sessions, limits) is docs/seamless.md.

**Envelope.** The body is `{{"payload": "<base64>"}}`, standard alphabet with padding. The \
decoded bytes are `nonce (12 B) || ciphertext || tag (16 B)`: AES-256-GCM under the provider's \
32-byte key, with the provider code (UTF-8 bytes) as the associated data. The plaintext is one \
event, a UTF-8 JSON object: one of the schemas in `x-decrypted-request` (LoginEvent, \
BalanceEvent, BetEvent, CancelEvent, ResultEvent, ResultChangeEvent, LogoutEvent). The answer \
is `{{"payload": ...}}` sealed the same way, with the key that opened the request and a fresh \
nonce; its plaintext is a SeamlessResponse (`x-decrypted-response`).

**Plain answers.** R2 answers are plain JSON SeamlessResponse objects, without the `payload` \
wrapper, because the wallet could not or would not authenticate the request; they never carry \
a balance. So is the R1 `internal_error` sent when no key of the provider can be loaded.

**Keys.** Send `X-Key-Id` to name the key you used; without it the wallet tries your current \
key, then your previous one. Bodies over 64 KiB (WALLET_MAX_BODY_BYTES) get a plain R2 \
`bad_signature` without being read whole.

**Examples.** Every example payload is real: sealed for provider `{EXAMPLE_PROVIDER}` with the \
example key `{base64.b64encode(EXAMPLE_KEY).decode()}` (bytes 0 to 31), so you can check your \
envelope code against them. `x-decrypted` shows the plaintext of each."""


def _seamless_operation() -> Schema:
    request_examples, answer_examples = _seamless_examples()
    events = [_ref(event_schema_name(name)) for name in EVENTS]
    return {
        "operationId": "seamlessWebhook",
        "tags": ["seamless"],
        "summary": "The game provider webhook: every event, encrypted",
        "description": SEAMLESS_DESCRIPTION,
        "security": [],
        "parameters": [
            {
                "name": "provider",
                "in": "path",
                "required": True,
                "schema": IDENTIFIER,
                "description": "your provider code (anything else: plain R2 unknown_provider)",
            },
            {
                "name": "X-Key-Id",
                "in": "header",
                "required": False,
                "schema": _text(),
                "description": "the key_id of the key that sealed the payload",
            },
        ],
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": _ref("SeamlessEnvelope"), "examples": request_examples}},
        },
        "responses": {
            "200": _json_response(
                "Always 200: the sealed answer, or a plain R2 (or key-less R1) answer",
                {"oneOf": [_ref("SeamlessEnvelope"), _ref("SeamlessResponse")]},
                examples=answer_examples,
            )
        },
        "x-decrypted-request": {
            "oneOf": events,
            "discriminator": {
                "propertyName": "event",
                "mapping": {
                    name: f"#/components/schemas/{event_schema_name(name)}" for name in EVENTS
                },
            },
        },
        "x-decrypted-response": {"oneOf": [_ref("SeamlessResponse")]},
    }


# --- the document -----------------------------------------------------------------------------


INFO_DESCRIPTION = f"""\
The operator API (JSON over HTTP, `Authorization: Bearer <api key>`), deposits and withdrawals \
included, the encrypted seamless webhook of game providers, the signed webhook of payment \
service providers (PSPs), and the signed events the wallet sends to the operator's platform \
(under `webhooks`: `{OPERATOR_WEBHOOK}`).

- Roles: each operator operation lists the roles that may call it in `x-roles`; any other role \
gets 403 `forbidden_for_tenant`.
- Errors have one shape (Error); `field` names the offending field of a validation error.
- Amounts are integers in minor units, never fractions. Times are RFC 3339 UTC strings.
- Lists take `limit` (1 to 200, default 50) and `cursor`, and answer `{{data, next_cursor}}`; pass \
`next_cursor` back as `cursor` for the next page.
- Every response carries `X-Request-Id`.
- Events: the creation and each status change of a deposit or a withdrawal are POSTed to the \
operator's platform at WALLET_OPERATOR_WEBHOOK_URL, signed \
`X-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "{{t}}.{{body}}">` under \
WALLET_OPERATOR_WEBHOOK_SECRET. Delivery is at least once: deduplicate by the event `id`. \
Failures are retried with exponential backoff and jitter \
({outbox.BASE_DELAY:g} s doubling, capped at {outbox.MAX_DELAY / 3600:g} h, \
{outbox.MAX_ATTEMPTS} attempts, about {_HOURS} h), then dead-lettered. `GET /v1/events` lists \
events and their delivery state; a replay (`POST /v1/events/{{event_id}}/replay`) carries \
`X-Wallet-Replay: true`.

Prose: docs/operator.md, docs/seamless.md and docs/payments.md."""

TAGS = [
    {"name": "providers", "description": "Game providers and their keys (admin)."},
    {"name": "players", "description": "Players, sessions, status, limits, adjustments."},
    {"name": "history", "description": "Postings, statements and the seamless call history."},
    {"name": "reports", "description": "Ledger check, daily report, audit log."},
    {"name": "api-keys", "description": "Operator API keys (admin)."},
    {
        "name": "payments",
        "description": "Deposits and withdrawals through PSPs, the PSPs' signed webhook, and "
        "reconciliation against their settlement reports.",
    },
    {
        "name": "events",
        "description": "Signed events about deposits and withdrawals sent to the operator's "
        "platform: the delivery, its listing and replays.",
    },
    {"name": "seamless", "description": "The webhook for game providers."},
    {"name": "health", "description": "Probes and metrics, without authentication."},
    {"name": "docs", "description": "This document."},
]


def package_version() -> str:
    try:
        return importlib.metadata.version("wallet")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "0.0.0+unknown"


def _components() -> Schema:
    schemas: dict[str, Schema] = {}
    for part in (_seamless_schemas,):
        schemas.update(part())
    schemas.update(docgen.schemas(docgen.models_of(_operations())))
    schemas["PspEvent"]["examples"] = [PSP_EVENT_EXAMPLE]
    schemas["OperatorEventPayload"]["examples"] = [OPERATOR_EVENT_EXAMPLE]
    shared = docgen.components(_operations())
    return {**shared, "schemas": dict(sorted({**schemas, **shared["schemas"]}.items()))}


def _webhooks() -> Schema:
    """Requests the wallet sends (OpenAPI 3.1 ``webhooks``): the events to the operator."""
    operation: Schema = {
        "operationId": "operatorEventDelivery",
        "tags": ["events"],
        "summary": "An event the wallet POSTs to WALLET_OPERATOR_WEBHOOK_URL",
        "description": "Sent by the wallet to the operator's platform, one event per request, "
        "when a deposit or a withdrawal is created and at each status change (listed by "
        "`GET /v1/events`).\n\n"
        f"{DELIVERY}\n\n"
        "**Example.** The example's signature is real: it signs the compact JSON of the example "
        f"(no spaces, in the order shown) at t={EXAMPLE_TIME} with the secret "
        f"`{EXAMPLE_WEBHOOK_SECRET.decode()}`.",
        "security": [],  # the wallet signs the body instead
        "parameters": [
            {
                "name": "X-Signature",
                "in": "header",
                "required": True,
                "schema": _text(minLength=1),
                "description": "t=<unix seconds of this attempt>,v1=<hex HMAC-SHA256 of "
                "`{t}.{raw body}`> under WALLET_OPERATOR_WEBHOOK_SECRET; refuse the request "
                "unless it verifies, and check that t is recent",
                "example": operator_example_signature(),
            },
            {
                "name": "X-Wallet-Replay",
                "in": "header",
                "required": False,
                "schema": {"const": "true"},
                "description": "sent on every delivery of an event that was replayed "
                "(POST /v1/events/{event_id}/replay)",
            },
        ],
        "requestBody": {
            "required": True,
            "content": {
                JSON: {
                    "schema": _ref("OperatorEventPayload"),
                    "examples": {
                        "succeeded": {
                            "summary": "a deposit succeeded",
                            "value": OPERATOR_EVENT_EXAMPLE,
                        }
                    },
                }
            },
        },
        "responses": {
            "2XX": {
                "description": "Received: the event is delivered (not sent again unless replayed)"
            },
            "default": {
                "description": f"Any other answer, or none within {DELIVERY_TIMEOUT:g} s: "
                "retried later, or dead-lettered after the last attempt"
            },
        },
    }
    return {OPERATOR_WEBHOOK: {"post": operation}}


def _operations() -> list[routing.Operation]:
    from app.main import API_ROUTES  # the app's routes, which import this module's users

    return routing.operations(API_ROUTES)


def _paths() -> Schema:
    """The app's routes, as they declare themselves, and the seamless webhook."""
    operations = {(op.method, op.path): docgen.operation(op) for op in _operations()}
    operations["POST", "/v1/seamless/{provider}"] = _seamless_operation()
    _sign_psp_example(operations["POST", PSP_WEBHOOK])
    paths: dict[str, dict[str, Schema]] = {}
    for (method, path), operation in operations.items():
        operation["parameters"] = [
            *operation.get("parameters", []),
            docgen.ref("parameters", "RequestId"),
        ]
        paths.setdefault(path, {})[method.lower()] = operation
    return paths


def _sign_psp_example(operation: Schema) -> None:
    """The PSP webhook's example event, and its real signature under the example secret."""
    operation["requestBody"]["content"][JSON]["examples"] = {
        "succeeded": {"summary": "a deposit succeeded", "value": PSP_EVENT_EXAMPLE}
    }
    (signature,) = (p for p in operation["parameters"] if p.get("name") == "X-Signature")
    signature["example"] = psp_example_signature()
    operation["description"] += (
        "\n\n**Example.** The example's signature is real: it signs the compact JSON of the "
        f"example (no spaces, in the order shown) at t={EXAMPLE_TIME} with the secret "
        f"`{EXAMPLE_WEBHOOK_SECRET.decode()}`."
    )


@lru_cache(maxsize=1)
def document() -> Schema:
    """The OpenAPI document, built once per process. Callers must not change it."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": TITLE,
            "version": package_version(),
            "description": INFO_DESCRIPTION,
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "tags": TAGS,
        "paths": _paths(),
        "webhooks": _webhooks(),
        "components": _components(),
    }


@lru_cache(maxsize=4)
def document_json(root_path: str = "") -> bytes:
    """The document as served; behind a path prefix (ASGI ``root_path``) the API is there too, so
    "Try it out" in /docs and clients generated from the document call under the prefix."""
    served = {**document(), "servers": [{"url": root_path}]} if root_path else document()
    return orjson.dumps(served)


# --- the route ---------------------------------------------------------------------------------


class OpenApiDocument(BaseModel):
    """An OpenAPI 3.1 document: this one (only its top level is described here)."""

    model_config = ConfigDict(extra="allow")

    openapi: Literal["3.1.0"]
    info: dict[str, Any]
    paths: dict[str, Any]


api = routing.Api("docs")


@api.get(
    "/openapi.json",
    summary="This document",
    answers=[(200, OpenApiDocument, "The OpenAPI 3.1 document")],
    public=True,
    operation_id="openapi",
)
async def openapi_json(request: Request) -> Response:
    return Response(document_json(request.scope.get("root_path", "")), media_type=JSON)


routes = api.routes
