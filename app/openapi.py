"""The OpenAPI 3.1 document: the operator and payments APIs, the seamless webhook, the PSP
webhook, the events the wallet sends to the operator's platform (an OpenAPI ``webhooks`` entry),
and the route serving it (``GET /openapi.json``; ``/docs`` renders it, :mod:`app.web.docs`).

Every route declares itself (:class:`app.web.routing.Operation`, mostly through an ``Api``): the
operations and the schemas are generated from those declarations and their typed messages by
:mod:`app.web.docgen`. What no declaration can say is here: the info and tags, the ``webhooks``
entry, and the examples, which are sealed or signed for real. The seamless webhook is encrypted
end to end, which OpenAPI cannot express: its route (:mod:`app.seamless.endpoints`) describes the
envelope and names the decrypted events and answer in ``x-decrypted-request`` and
``x-decrypted-response``. ``tests/web/test_openapi.py`` checks that every route is documented and
that real responses validate against the document.
"""

from __future__ import annotations

import base64
import importlib.metadata
from functools import lru_cache
from typing import Any, Literal

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import Response

from app import aead
from app.payments import outbox, signing, webhook
from app.payments.events import DELIVERY, DELIVERY_TIMEOUT, OPERATOR_WEBHOOK
from app.seamless import endpoints as seamless_endpoints
from app.seamless import envelope
from app.seamless.events import MODELS, Answer, schema_name
from app.seamless.outcome import MESSAGES
from app.web import docgen, routing

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
        [
            *((model, "validation") for model in MODELS.values()),
            (Answer, "serialization"),
            (envelope.SeamlessEnvelope, "validation"),
        ]
    )
    examples = {name: event for name, event, _ in _SEAMLESS_EXAMPLES}
    schemas = {
        schema_name(name): {
            **generated[model.__name__],
            "title": schema_name(name),
            "examples": [examples[name]],
        }
        for name, model in MODELS.items()
    }
    schemas["SeamlessResponse"] = {
        **generated[Answer.__name__],
        "title": "SeamlessResponse",
        "examples": [answer for _, _, answer in _SEAMLESS_EXAMPLES],
    }
    schemas["SeamlessEnvelope"] = generated["SeamlessEnvelope"]
    return schemas


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
# One short story in order: each answer's balance follows from the one before. docs/seamless.md
# quotes it (Examples), with the bet and its answer as the published test vectors that the samples
# in docs/clients/ check themselves against; tests/seamless/test_docs_examples.py keeps them equal.
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
    (
        "end_round",
        _event_example("end_round", 7, round_id="r-3", game_id="slot-7"),
        _answer(7, 10_800),
    ),
    (
        "promo_win",
        _event_example(
            "promo_win",
            8,
            transaction_id="pw-1",
            promo_id="spring-cup",
            amount=5000,
            currency="EUR",
        ),
        _answer(8, 15_800, 1191),
    ),
    ("logout", _event_example("logout", 9, session_token=TOKEN_EXAMPLE), _answer(9, 15_800)),
)
_EXAMPLE_NOTES = {
    "login": "Opens the game: checks the session, answers the balance.",
    "balance": "The balance; a session token is accepted but not checked.",
    "bet": "Debits 250.",
    "cancel": "Refunds bet b-1 (the bet's round has no result yet).",
    "result": "A free-round win: a round without a bet is allowed.",
    "result_change": "Corrects result w-1 from 1000 to 800: posts -200.",
    "end_round": "Closes round r-3 without a result (a closed or unknown round: ok, unchanged).",
    "promo_win": "A tournament prize of 5000, outside any round.",
    "logout": "Ends the session; results and refunds may still arrive.",
}


def seal_example(plaintext: Schema, nonce_seed: int) -> str:
    """``plaintext`` sealed for the example provider under the example key, with a fixed nonce
    so that the document is the same every time (never do this with a real key)."""
    nonce = nonce_seed.to_bytes(aead.NONCE_BYTES, "big")
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
{outbox.MAX_ATTEMPTS} attempts, about {round(outbox.RETRY_WINDOW / 3600)} h), then \
dead-lettered. `GET /v1/events` lists events and their delivery state; a replay \
(`POST /v1/events/{{event_id}}/replay`) carries `X-Wallet-Replay: true`.

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
                "schema": {"type": "string", "minLength": 1},
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
            {
                "name": "X-Request-Id",
                "in": "header",
                "required": True,
                "schema": {"type": "string", "minLength": 1},
                "description": "the delivery's correlation id for both sides' logs: the "
                "event's `id`, as deliveries are background work",
            },
            {
                "name": "traceparent",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "W3C trace context of the delivery's span, sent when the "
                "wallet's tracing is on (docs/deployment.md, Tracing)",
            },
        ],
        "requestBody": {
            "required": True,
            "content": {
                JSON: {
                    "schema": docgen.ref("schemas", "OperatorEventPayload"),
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

    return routing.operations([*seamless_endpoints.routes, *API_ROUTES])


def _paths() -> Schema:
    """The app's routes, as they declare themselves, and the seamless webhook."""
    operations = {(op.method, op.path): docgen.operation(op) for op in _operations()}
    _seal_seamless_examples(operations["POST", seamless_endpoints.ROUTE])
    _sign_psp_example(operations["POST", PSP_WEBHOOK])
    paths: dict[str, dict[str, Schema]] = {}
    for (method, path), operation in operations.items():
        operation["parameters"] = [
            *operation.get("parameters", []),
            docgen.ref("parameters", "RequestId"),
        ]
        paths.setdefault(path, {})[method.lower()] = operation
    return paths


def _seal_seamless_examples(operation: Schema) -> None:
    """Every event and answer of the story above, sealed for real under the example key."""
    requests, answers = _seamless_examples()
    operation["requestBody"]["content"][JSON]["examples"] = requests
    operation["responses"]["200"]["content"][JSON]["examples"] = answers
    operation["description"] += (
        "\n\n**Examples.** Every example payload is real: sealed for provider "
        f"`{EXAMPLE_PROVIDER}` with the example key `{base64.b64encode(EXAMPLE_KEY).decode()}` "
        "(bytes 0 to 31), so you can check your envelope code against them. `x-decrypted` "
        "shows the plaintext of each. docs/seamless.md (Test vectors) lists the bet's key, nonce, "
        "plaintext and payload, and docs/clients/ has envelope code in Node.js, Java, Go and PHP "
        "that checks itself against them."
    )


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
