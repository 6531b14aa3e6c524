"""The OpenAPI 3.1 document of the operator API (payments and their events included), the
seamless webhook, the PSP webhook and the events the wallet sends to the operator's platform (an
OpenAPI ``webhooks`` entry), and the routes serving it.

``GET /openapi.json`` answers the document and ``GET /docs`` renders it for people with a small
self-contained page: no CDN and no request anywhere but ``/openapi.json`` (its
Content-Security-Policy forbids any other).

The document is written by hand next to the code it describes, but it cannot drift quietly: the
roles of each operation come from :data:`app.operator.endpoints.PERMISSIONS`, enums and patterns
from the modules that own them, and ``tests/test_openapi.py`` checks that every route is
documented and that real responses validate against the schemas here.

The seamless webhook is encrypted end to end, which OpenAPI cannot express: its operation
describes the envelope, and the decrypted events and answers are component schemas that the
operation names in ``x-decrypted-request`` and ``x-decrypted-response``.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from app.ledger.service import CHECKS, SAMPLE
from app.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from app.operator import endpoints, service
from app.payments import outbox, signing
from app.payments.events import DELIVERY, DELIVERY_TIMEOUT, OPERATOR_WEBHOOK
from app.payments.models import DEPOSIT_STATUSES as DEPOSIT_STATUSES  # re-exported for tests
from app.payments.models import WITHDRAWAL_STATUSES as WITHDRAWAL_STATUSES
from app.payments.psp_messages import PSP_STATUSES as PSP_STATUSES  # re-exported for tests
from app.payments.psp_messages import PspEvent
from app.payments.service import WEBHOOK_OUTCOMES as WEBHOOK_OUTCOMES
from app.payments.webhook import WebhookOutcome
from app.seamless import envelope
from app.seamless.events import MAX_AMOUNT, MAX_TOKEN_LENGTH, MODELS
from app.seamless.outcome import CODES, MESSAGES, REASONS
from app.web import docgen, http, pagination, routing
from app.web.auth import READ, ROLES
from app.web.errors import WalletError

Schema = dict[str, Any]

OPENAPI_VERSION = "3.1.0"
TITLE = "Wallet API"
JSON = "application/json"
EVENTS = tuple(MODELS)
KINDS = ("bet", "cancel", "result", "result_change", "adjustment")
AUDIT_ACTIONS = (
    "provider.create",
    "provider.rotate_key",
    "player.create",
    "player.status",
    "player.kyc",
    "player.limits",
    "player.adjust",
    "apikey.create",
    "apikey.revoke",
    "event.replay",
)
# The seamless examples are sealed for real, under a key everyone may know, so that integrators
# can test their envelope code against them (and the test proves they open).
EXAMPLE_PROVIDER = "acme"
EXAMPLE_KEY = bytes(range(32))
EXAMPLE_TIME = 1779104538

KYC_TIERS = (0, 3)  # the lowest and the highest tier (players.kyc_tier)
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
CURRENCY: Schema = {"type": "string", "pattern": _anchored(http.CURRENCY), "examples": ["EUR"]}
TIME: Schema = {"type": "string", "format": "date-time", "description": "RFC 3339, UTC"}
DIGITS_ID: Schema = {"type": "string", "pattern": "^[0-9]+$", "description": "a string of digits"}


def _text(description: str = "", **extra: Any) -> Schema:
    schema: Schema = {"type": "string", **extra}
    if description:
        schema["description"] = description
    return schema


def _kyc_tier(description: str) -> Schema:
    low, high = KYC_TIERS
    return {"type": "integer", "minimum": low, "maximum": high, "description": description}


def _int64(description: str, **bounds: int) -> Schema:
    """A money amount or a count: always an integer, never a JSON number with a fraction."""
    return {"type": "integer", "format": "int64", **bounds, "description": description}


def _nullable(schema: Schema) -> Schema:
    kind = schema["type"]
    return {**schema, "type": [*(kind if isinstance(kind, list) else [kind]), "null"]}


def _object(
    properties: dict[str, Schema],
    *,
    optional: tuple[str, ...] = (),
    closed: bool = True,
    description: str = "",
) -> Schema:
    """An object whose properties are all required but ``optional``; ``closed`` objects are the
    answers whose shape the code fixes, so that an extra field in a real answer fails the test."""
    schema: Schema = {
        "type": "object",
        "required": [name for name in properties if name not in optional],
        "properties": properties,
    }
    if closed:
        schema["additionalProperties"] = False
    if description:
        schema["description"] = description
    return schema


def _page(item: str) -> Schema:
    return _object(
        {
            "data": {"type": "array", "items": _ref(item)},
            "next_cursor": {
                "type": ["string", "null"],
                "description": "pass back as `cursor` for the next page; null on the last page",
            },
        },
        description=f"A page of {item} objects, keyset-paged.",
    )


# --- component schemas: operator API ------------------------------------------------------------


def _error_schemas() -> dict[str, Schema]:
    codes = sorted({cls.code for cls in _subclasses(WalletError)} | {WalletError.code})
    error = _object(
        {
            "code": {"type": "string", "enum": codes},
            "message": _text("for people; names the problem"),
            "http_status": {"type": "integer"},
            "docs_url": _text(format="uri"),
            "request_id": {"type": ["string", "null"], "description": "the X-Request-Id"},
            "field": _text("the offending field of a validation error (the first, if several)"),
            "errors": {
                "type": "array",
                "minItems": 1,
                "items": _object({"field": _text(), "message": _text()}),
                "description": "every bad field of a request body or query, when it has several "
                "checks (a typed message)",
            },
        },
        optional=("field", "errors"),
    )
    return {"Error": _object({"error": error}, description="Every operator API error.")}


def _subclasses(cls: type[WalletError]) -> list[type[WalletError]]:
    found: list[type[WalletError]] = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def _player_schemas() -> dict[str, Schema]:
    base: dict[str, Schema] = {
        "player_id": IDENTIFIER,
        "currency": CURRENCY,
        "status": {"type": "string", "enum": list(service.STATUSES)},
        "kyc_tier": _kyc_tier("the player's KYC tier: 0 (the default) to 3"),
        "balance": _int64("minor units", minimum=0),
        "created_at": TIME,
        "updated_at": TIME,
    }
    periods = {period: _int64("minor units", minimum=0) for period in service.LIMIT_PERIODS}
    return {
        "PlayerSummary": _object(base, description="A player as listed (without limits)."),
        "Player": _object(
            {
                **base,
                "limits": _ref("Limits"),
                "pending_limits": {"type": "array", "items": _ref("PendingLimit")},
            }
        ),
        "Limits": _object(
            {kind: _ref("LimitAmounts") for kind in service.LIMIT_KINDS},
            description="The limits in force, per kind and period.",
        ),
        "LimitAmounts": _object(periods, optional=tuple(periods)),
        "PendingLimit": _object(
            {
                "kind": {"type": "string", "enum": list(service.LIMIT_KINDS)},
                "period": {"type": "string", "enum": list(service.LIMIT_PERIODS)},
                "amount": _nullable(_int64("the coming limit; null removes it", minimum=0)),
                "effective_at": TIME,
            },
            description="A raise or removal waiting for its cooling-off period to end.",
        ),
        "Session": _object({"session_token": _text("shown only here"), "expires_at": TIME}),
        "Adjustment": _object(
            {
                "id": DIGITS_ID,
                "player_id": IDENTIFIER,
                "amount": _int64("signed: a credit (> 0) or a debit (< 0)"),
                "delta": _int64("the change of the balance; equals amount"),
                "balance_after": _int64("minor units", minimum=0),
                "currency": CURRENCY,
                "reason": _text(),
                "idempotency_key": _text("the Idempotency-Key header"),
                "created_at": TIME,
            }
        ),
        "Statement": _object(
            {
                "player_id": IDENTIFIER,
                "currency": CURRENCY,
                "from": TIME,
                "to": TIME,
                "opening_balance": _int64("balance just before `from`", minimum=0),
                "closing_balance": _int64("balance just before `to`", minimum=0),
                "totals": {
                    "type": "object",
                    "propertyNames": {"enum": list(KINDS)},
                    "additionalProperties": _ref("StatementTotal"),
                    "description": "per kind of posting, the kinds that occurred",
                },
            }
        ),
        "StatementTotal": _object(
            {"count": {"type": "integer", "minimum": 1}, "total": _int64("sum of balance changes")}
        ),
    }


def _history_schemas() -> dict[str, Schema]:
    nullable_text = {"type": ["string", "null"]}
    return {
        "Transaction": _object(
            {
                "id": DIGITS_ID,
                "kind": {"type": "string", "enum": list(KINDS)},
                "provider": _nullable(_text("null for adjustments")),
                "transaction_id": _text("the provider's id, or an adjustment's Idempotency-Key"),
                "round_id": nullable_text,
                "game_id": nullable_text,
                "ref_transaction_id": nullable_text,
                "amount": _int64("as sent (a cancel's refund, an adjustment's signed amount)"),
                "delta": _int64("the change of the player's balance"),
                "balance_after": _int64("minor units", minimum=0),
                "currency": CURRENCY,
                "request_id": nullable_text,
                "metadata": {"type": ["object", "null"]},
                "created_at": TIME,
            },
            description="One posting of the player's ledger.",
        ),
        "Call": _object(
            {
                "id": DIGITS_ID,
                "provider": _text(),
                "event": {"type": ["string", "null"], "enum": [*EVENTS, None]},
                "request_id": nullable_text,
                "player_id": nullable_text,
                "transaction_id": nullable_text,
                "code": {"type": "string", "enum": list(CODES)},
                "reason": {"type": "string", "enum": list(MESSAGES)},
                "wallet_transaction_id": _nullable(DIGITS_ID),
                "duplicate": {"type": "boolean"},
                "replayed": {"type": "boolean"},
                "latency_us": {"type": "integer", "minimum": 0},
                "created_at": TIME,
            },
            description="One seamless webhook call as the wallet answered it.",
        ),
        "AuditEntry": _object(
            {
                "id": DIGITS_ID,
                "actor": _text("admin:bootstrap, apikey:<id> or cli:<user>"),
                "action": {"type": "string", "enum": list(AUDIT_ACTIONS)},
                "target": _text("like player:<id>, provider:<code>, apikey:<id>"),
                "before": {"type": ["object", "null"]},
                "after": {"type": ["object", "null"]},
                "request_id": nullable_text,
                "created_at": TIME,
            }
        ),
    }


def _admin_schemas() -> dict[str, Schema]:
    api_key: dict[str, Schema] = {
        "id": IDENTIFIER,
        "role": {"type": "string", "enum": list(ROLES)},
        "name": _text(),
        "created_by": _text("the actor who created it"),
        "created_at": TIME,
        "revoked_at": _nullable(TIME),
    }
    rows = {"type": "array", "maxItems": SAMPLE, "items": {"type": "object"}}
    return {
        "ApiKey": _object(api_key, description="An API key, never its secret."),
        "ApiKeyCreated": _object({**api_key, "key": _text("the secret, shown only here")}),
        "LedgerCheck": {
            **_object(
                {
                    "ok": {"type": "boolean"},
                    "problems": {
                        "type": "object",
                        "propertyNames": {"enum": list(CHECKS)},
                        "additionalProperties": rows,
                        "description": f"up to {SAMPLE} offending rows per broken invariant",
                    },
                },
                optional=("problems",),
            ),
            "if": {"properties": {"ok": {"const": False}}},
            "then": {"required": ["problems"]},
            "else": {"not": {"required": ["problems"]}},
        },
        "DailyReport": _object(
            {
                "date": _text(format="date"),
                "time_zone": {"const": "UTC"},
                "rows": {"type": "array", "items": _ref("DailyReportRow")},
            }
        ),
        "DailyReportRow": _object(
            {
                "provider": _text(),
                "currency": CURRENCY,
                "bet_count": {"type": "integer", "minimum": 0},
                "bet_sum": _int64("bets placed"),
                "result_count": {"type": "integer", "minimum": 0},
                "win_sum": _int64("results plus corrections"),
                "cancel_count": {"type": "integer", "minimum": 0},
                "cancel_sum": _int64("refunds"),
                "ggr": _int64("bets - refunds - wins"),
            }
        ),
        "Health": _object({"status": {"const": "ok"}}),
        "Ready": _object(
            {
                "status": {"type": "string", "enum": ["ok", "unavailable"]},
                "checks": _object(
                    {
                        "database": _text('"ok" or "unavailable: <error>"'),
                        "redis": _text('"ok" or "unavailable: <error>"'),
                    }
                ),
            }
        ),
    }


def _request_schemas() -> dict[str, Schema]:
    """Bodies the operator API accepts. Left open: the code ignores fields it does not read."""
    limit_amount = _nullable(_int64("null removes the limit", minimum=0, maximum=MAX_AMOUNT))
    periods = {period: limit_amount for period in service.LIMIT_PERIODS}
    return {
        "ProviderCreate": _object(
            {"code": IDENTIFIER, "name": _text(minLength=1, maxLength=200)}, closed=False
        ),
        "PlayerCreate": _object({"player_id": IDENTIFIER, "currency": CURRENCY}, closed=False),
        "PlayerStatusChange": _object(
            {"status": {"type": "string", "enum": list(service.STATUSES)}}, closed=False
        ),
        "KycTierChange": _object(
            {"tier": _kyc_tier("the new KYC tier (400 on `tier` unless an integer 0 to 3)")},
            closed=False,
        ),
        # Unknown kinds and periods are refused with 400, so these two are closed.
        "LimitsChange": _object(
            {kind: _object(periods, optional=tuple(periods)) for kind in service.LIMIT_KINDS},
            optional=service.LIMIT_KINDS,
            description="Only the limits named change; see docs/operator.md, Limits.",
        ),
        "SessionIssue": _object({"provider": IDENTIFIER, "game_id": IDENTIFIER}, closed=False),
        "AdjustmentCreate": _object(
            {
                "amount": {
                    **_int64("signed, not zero", minimum=-MAX_AMOUNT, maximum=MAX_AMOUNT),
                    "not": {"const": 0},
                },
                "reason": _text(minLength=1, maxLength=500),
            },
            closed=False,
        ),
        "ApiKeyCreate": _object(
            {
                "role": {"type": "string", "enum": list(ROLES)},
                "name": _text(minLength=1, maxLength=200),
            },
            closed=False,
        ),
    }


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


def _event(
    name: str, fields: dict[str, Schema], optional: tuple[str, ...], example: Schema
) -> Schema:
    base: dict[str, Schema] = {
        "event": {"const": name},
        "request_id": IDENTIFIER,
        "timestamp": _int64("unix seconds; more than 300 s off the wallet's clock is R2"),
        "player_id": IDENTIFIER,
    }
    schema = _object(
        {**base, **fields},
        optional=optional,
        closed=False,  # the contract: unknown extra fields are ignored
        description=f"The decrypted `{name}` event.",
    )
    schema["examples"] = [example]
    return schema


def _seamless_schemas() -> dict[str, Schema]:
    token = _text("issued by POST /v1/players/{player_id}/sessions", minLength=1)
    token["maxLength"] = MAX_TOKEN_LENGTH
    stake = _int64("minor units", minimum=1, maximum=MAX_AMOUNT)
    win = _int64("minor units", minimum=0, maximum=MAX_AMOUNT)
    money = {
        "transaction_id": IDENTIFIER,
        "round_id": IDENTIFIER,
        "currency": CURRENCY,
    }
    fields: dict[str, tuple[dict[str, Schema], tuple[str, ...]]] = {
        "login": ({"session_token": token}, ()),
        "balance": ({"session_token": _nullable(token)}, ("session_token",)),
        "bet": (
            {"session_token": token, **money, "game_id": IDENTIFIER, "amount": stake},
            (),
        ),
        "cancel": (
            {
                **money,
                "ref_transaction_id": {**IDENTIFIER, "description": "the bet"},
                "amount": _nullable({**stake, "description": "must equal the bet's"}),
            },
            ("amount",),
        ),
        "result": (
            {
                **money,
                "game_id": IDENTIFIER,
                "amount": {**win, "description": "the win; 0 records a loss"},
                "round_closed": {"type": ["boolean", "null"], "default": True},
            },
            ("round_closed",),
        ),
        "result_change": (
            {
                **money,
                "ref_transaction_id": {**IDENTIFIER, "description": "the result"},
                "amount": {**win, "description": "the corrected total of the result"},
            },
            (),
        ),
        "logout": ({"session_token": token}, ()),
    }
    examples = {name: event for name, event, _ in _SEAMLESS_EXAMPLES}
    schemas = {
        event_schema_name(name): _event(name, props, optional, examples[name])
        for name, (props, optional) in fields.items()
    }
    schemas["SeamlessEnvelope"] = _object(
        {
            "payload": _text(
                "base64 (standard alphabet, padded) of nonce (12 B) || ciphertext || tag (16 B)",
                contentEncoding="base64",
                pattern="^[A-Za-z0-9+/]*={0,2}$",
            )
        },
        description="The encrypted body of a request or an answer.",
    )
    schemas["SeamlessResponse"] = _seamless_response()
    return schemas


def event_schema_name(event: str) -> str:
    """`bet` -> `BetEvent`, `result_change` -> `ResultChangeEvent`."""
    return "".join(part.title() for part in event.split("_")) + "Event"


def _seamless_response() -> Schema:
    schema = _object(
        {
            "code": {"type": "string", "enum": list(CODES)},
            "reason": {"type": "string", "enum": list(MESSAGES)},
            "message": _text("for people; may name the offending field"),
            "request_id": {**IDENTIFIER, "description": "echoed whenever it could be read"},
            "player_id": IDENTIFIER,
            "balance": _int64("minor units", minimum=0),
            "currency": CURRENCY,
            "transaction_id": {**DIGITS_ID, "description": "the wallet's id of the posting"},
            "duplicate": {"const": True, "description": "an idempotent repeat"},
        },
        optional=(
            "request_id",
            "player_id",
            "balance",
            "currency",
            "transaction_id",
            "duplicate",
        ),
        description="The answer to every event (decrypted), or a plain R2 answer.",
    )
    schema["dependentRequired"] = {
        "balance": ["player_id", "currency"],
        "duplicate": ["transaction_id"],
    }
    schema["allOf"] = [_reasons_of(code) for code in CODES]
    schema["examples"] = [answer for _, _, answer in _SEAMLESS_EXAMPLES]
    return schema


def _reasons_of(code: str) -> Schema:
    """Each code allows its own reasons; only R0 carries a posting, and R2 never a balance."""
    then: Schema = {"properties": {"reason": {"enum": list(REASONS[code])}}}
    if code != "R0":
        then["properties"].update(transaction_id=False, duplicate=False)
    if code == "R2":
        then["properties"].update(player_id=False, balance=False, currency=False)
    return {"if": {"properties": {"code": {"const": code}}}, "then": then}


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


# --- parameters and shared responses -----------------------------------------------------------


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _path_param(name: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": IDENTIFIER,
        "description": description + " (400 when not 1 to 64 characters of [A-Za-z0-9_.:-])",
    }


def _idempotency_key(description: str, *, required: bool = True) -> Schema:
    return {
        "name": "Idempotency-Key",
        "in": "header",
        "required": required,
        "schema": {"type": "string", "minLength": 1, "maxLength": endpoints.IDEMPOTENCY_KEY_MAX},
        "description": description,
    }


def _parameters() -> dict[str, Schema]:
    time_note = "RFC 3339 time with a zone, like 2026-05-18T11:42:18Z"
    filter_id = {**IDENTIFIER, "description": "exact match"}
    return {
        "Limit": _query(
            "limit",
            {
                "type": "integer",
                "minimum": 1,
                "maximum": pagination.MAX_LIMIT,
                "default": pagination.DEFAULT_LIMIT,
            },
            "page size",
        ),
        "Cursor": _query("cursor", _text(), "`next_cursor` of the previous page"),
        "From": _query("from", TIME, f"inclusive lower bound: {time_note}"),
        "To": _query("to", TIME, f"exclusive upper bound: {time_note}"),
        "PlayerStatus": _query(
            "status", {"type": "string", "enum": list(service.STATUSES)}, "only these players"
        ),
        "CallProvider": _query("provider", filter_id, "provider code"),
        "CallEvent": _query("event", {"type": "string", "enum": list(EVENTS)}, "event name"),
        "CallCode": _query("code", {"type": "string", "enum": list(CODES)}, "R-code"),
        "CallPlayer": _query("player_id", filter_id, "player"),
        "AuditActor": _query("actor", _text(), "exact actor, like apikey:ak_1a2b3c4d5e6f"),
        "AuditAction": _query("action", _text(), "exact action, like player.status"),
        "AuditTarget": _query("target", _text(), "exact target, like player:p-42"),
        "ReportDate": _query("date", _text(format="date"), "YYYY-MM-DD; default today (UTC)"),
        "PlayerId": _path_param("player_id", "the player"),
        "ProviderCode": _path_param("code", "the provider"),
        "KeyId": _path_param("key_id", "the API key's id"),
        "PspName": _path_param("psp", "the PSP route's name, as configured in WALLET_PSPS"),
        "IdempotencyKey": _idempotency_key(
            "printable; the same key and body again answers the same adjustment"
        ),
        "PaymentIdempotencyKey": _idempotency_key(
            "printable (400 on `Idempotency-Key` when missing); the same key and body again "
            "gets the first answer again without side effects (201 and the same body, or the "
            "same 503 when every route was degraded or a payout's outcome is unknown); another "
            "body, or the same while the first request is still at the PSP, is 409"
        ),
        "ActionIdempotencyKey": _idempotency_key(
            "optional, printable: the same key and request (method, path, body) again get the "
            "first answer again, whatever it was, without acting again; another request with "
            "the key is 409; requests racing with one key act once",
            required=False,
        ),
        "ResolveIdempotencyKey": _idempotency_key(
            "printable (400 on `Idempotency-Key` when missing): the same key and body again get "
            "the first answer again; another request with the key is 409"
        ),
        "RequestId": {
            "name": "X-Request-Id",
            "in": "header",
            "required": False,
            "schema": IDENTIFIER,
            "description": "your correlation id, echoed; the wallet makes one when absent",
        },
    }


ERROR_RESPONSES: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "invalid_request: a parameter or a body field is wrong (see `field`)"),
    401: ("Unauthorized", "authentication_failed: no, unknown or revoked API key"),
    403: ("Forbidden", "forbidden_for_tenant: the key's role may not call this route"),
    404: ("NotFound", "resource_not_found"),
    409: ("Conflict", "idempotency_conflict"),
    422: (
        "Unprocessable",
        "method_unavailable (field `method`: no payment route serves the method and currency, "
        "or the player's KYC tier is below the method's minimum) or player_limit_exceeded (a "
        "deposit limit)",
    ),
    429: (
        "RateLimited",
        "rate_limited: more requests in this second than WALLET_RATE_LIMIT_API_KEY allows this "
        "API key; send again after the Retry-After header's seconds",
    ),
    503: (
        "RouteDegraded",
        "route_degraded: the database is unreachable or gave no connection in time (nothing "
        "changed; send again after the Retry-After header's seconds), or, creating a payment, "
        "every payment route failed with a retryable error; the payment is failed (a "
        "withdrawal's hold released), so retry with a new Idempotency-Key",
    ),
}
# Added to a route's own 503 note: any route may answer so (app.main.DATABASE_UNAVAILABLE).
DATABASE_DOWN = (
    "or the database is unreachable or gave no connection in time: nothing changed, send again "
    "after the Retry-After header's seconds"
)
REQUEST_ID_HEADER = {"X-Request-Id": {"$ref": "#/components/headers/XRequestId"}}


def _json_response(description: str, schema: Schema, **extra: Any) -> Schema:
    content = {JSON: {"schema": schema, **extra}}
    return {"description": description, "headers": REQUEST_ID_HEADER, "content": content}


def _responses() -> dict[str, Schema]:
    responses = {
        name: _json_response(description, _ref("Error"))
        for name, description in ERROR_RESPONSES.values()
    }
    responses["Unexpected"] = _json_response("internal_error: a bug (HTTP 500)", _ref("Error"))
    responses["RateLimited"]["headers"] = {
        **REQUEST_ID_HEADER,
        "Retry-After": {
            "description": "seconds to wait before the next request with this key",
            "schema": {"type": "integer", "minimum": 1},
        },
    }
    responses["RouteDegraded"]["headers"] = {
        **REQUEST_ID_HEADER,
        "Retry-After": {
            "description": "seconds to wait, when the database is unreachable",
            "schema": {"type": "integer", "minimum": 1},
        },
    }
    return responses


# --- operations -------------------------------------------------------------------------------


def _p(name: str) -> Schema:
    return {"$ref": f"#/components/parameters/{name}"}


@dataclass(frozen=True, slots=True)
class Op:
    """One operator operation: what the route does and what it answers."""

    operation_id: str
    tag: str
    summary: str
    answers: tuple[tuple[int, str, str], ...]  # (status, description, component schema)
    errors: tuple[int, ...] = ()  # statuses besides 401 and 403, which the document adds
    parameters: tuple[str, ...] = ()
    body: str | None = None
    description: str = ""
    # Errors whose answer this operation describes itself, instead of the shared description.
    error_notes: tuple[tuple[int, str], ...] = ()


PAGE = ("Limit", "Cursor")
RANGE = ("From", "To")

_HOURS = round(outbox.RETRY_WINDOW / 3600)
IDEMPOTENT_ACTION = (
    "\n\nWith an `Idempotency-Key`, the same key and request again get the first answer "
    "again, refusals included, and racing requests with one key act once; another request "
    "with the key: 409 `idempotency_conflict`."
)
SEALED_ANSWER = (
    " The first answer, secret included, is stored sealed under the master key, so the same "
    "key and request show it again."
)
CALL_FILTERS = ("CallProvider", "CallEvent", "CallCode", "CallPlayer", *RANGE, *PAGE)

OPERATIONS: dict[tuple[str, str], Op] = {
    ("POST", "/v1/players"): Op(
        "createPlayer",
        "players",
        "Create a player",
        (
            (201, "Created: balance 0, status active", "Player"),
            (200, "The player already existed with this currency", "Player"),
        ),
        (400, 409),
        ("ActionIdempotencyKey",),
        body="PlayerCreate",
        description="Creating it again with the same currency is harmless (200); with another "
        "currency it is 409 `idempotency_conflict` on `currency`." + IDEMPOTENT_ACTION,
    ),
    ("GET", "/v1/players"): Op(
        "listPlayers",
        "players",
        "List players, by id",
        ((200, "A page of players (without limits)", "PlayerSummaryPage"),),
        (400,),
        ("PlayerStatus", *PAGE),
    ),
    ("GET", "/v1/players/{player_id}"): Op(
        "getPlayer",
        "players",
        "Read a player with its limits",
        ((200, "The player", "Player"),),
        (400, 404),
        ("PlayerId",),
    ),
    ("PUT", "/v1/players/{player_id}/status"): Op(
        "setPlayerStatus",
        "players",
        "Change a player's status",
        ((200, "The player", "Player"),),
        (400, 404),
        ("PlayerId",),
        body="PlayerStatusChange",
    ),
    ("PUT", "/v1/players/{player_id}/kyc"): Op(
        "setPlayerKycTier",
        "players",
        "Change a player's KYC tier",
        ((200, "The player, with its new `kyc_tier`", "Player"),),
        (400, 404),
        ("PlayerId",),
        body="KycTierChange",
        description="Sets the player's know-your-customer tier, 0 (every player's at first) to "
        "3, and records it in the audit log as `player.kyc` (before and after: "
        '`{"kyc_tier": n}`). Payment methods may require a minimum tier per kind '
        '(WALLET_KYC_METHOD_TIERS, like `{"deposit": {"upi": 1}, "withdrawal": '
        '{"*": 1}}`, `*` for any method; by default none): a deposit or a withdrawal below '
        "it is 422 `method_unavailable`.\n\n"
        "400 on `tier` unless an integer from 0 to 3; 404 for an unknown player.",
    ),
    ("PUT", "/v1/players/{player_id}/limits"): Op(
        "setPlayerLimits",
        "players",
        "Set or remove responsible-gaming limits",
        ((200, "The player, with limits in force and pending", "Player"),),
        (400, 404),
        ("PlayerId",),
        body="LimitsChange",
        description="A new or lower limit applies at once and drops a pending raise; a raise or "
        "a removal (null) applies after the cooling-off period "
        "(WALLET_LIMIT_COOLING_OFF_SECONDS) and shows under `pending_limits` until then.",
    ),
    ("POST", "/v1/players/{player_id}/sessions"): Op(
        "issueSession",
        "players",
        "Issue a session token for one provider",
        ((201, "The token (shown only here; stored as its SHA-256)", "Session"),),
        (400, 404, 409),
        ("PlayerId", "ActionIdempotencyKey"),
        body="SessionIssue",
        description="404 for an unknown player; 400 on `provider` for an unknown provider. "
        "From then on the player is in that provider's scope, for good: the provider may read "
        "and move the player's money on the seamless webhook (docs/seamless.md, Provider scope)."
        + IDEMPOTENT_ACTION
        + SEALED_ANSWER,
    ),
    ("POST", "/v1/players/{player_id}/adjustments"): Op(
        "adjustBalance",
        "players",
        "Credit or debit a player's balance by hand",
        (
            (201, "The adjustment, posted", "Adjustment"),
            (200, "The same Idempotency-Key and body again: the first adjustment", "Adjustment"),
        ),
        (400, 404, 409),
        ("PlayerId", "IdempotencyKey"),
        body="AdjustmentCreate",
        description="A debit beyond the balance is 400 on `amount`. The same Idempotency-Key with "
        "another body is 409.",
    ),
    ("GET", "/v1/players/{player_id}/transactions"): Op(
        "listPlayerTransactions",
        "history",
        "A player's postings, newest first",
        ((200, "A page of postings", "TransactionPage"),),
        (400, 404),
        ("PlayerId", *RANGE, *PAGE),
    ),
    ("GET", "/v1/players/{player_id}/statement"): Op(
        "getPlayerStatement",
        "history",
        "Opening and closing balance over a period, and totals by kind",
        ((200, "The statement", "Statement"),),
        (400, 404),
        ("PlayerId", *RANGE),
        description="By default the last 30 days up to now. `to` must be after `from`.",
    ),
    ("GET", "/v1/webhooks/calls"): Op(
        "listCalls",
        "history",
        "The seamless call history, newest first",
        ((200, "A page of calls", "CallPage"),),
        (400,),
        CALL_FILTERS,
    ),
    ("GET", "/v1/webhooks/failures"): Op(
        "listFailures",
        "history",
        "Only the calls answered R1 to R3, newest first",
        ((200, "A page of calls", "CallPage"),),
        (400,),
        CALL_FILTERS,
        description="R4 is the player's balance, not a fault, so it is not listed here.",
    ),
    ("GET", "/v1/ledger/check"): Op(
        "checkLedger",
        "reports",
        "Check the ledger's invariants in one snapshot",
        ((200, "ok, or what broke", "LedgerCheck"),),
    ),
    ("GET", "/v1/reports/daily"): Op(
        "dailyReport",
        "reports",
        "Bets, wins, refunds and GGR per provider and currency for one UTC day",
        ((200, "The report", "DailyReport"),),
        (400,),
        ("ReportDate",),
    ),
    ("GET", "/v1/audit"): Op(
        "listAudit",
        "reports",
        "The audit log, newest first",
        ((200, "A page of audit entries", "AuditEntryPage"),),
        (400,),
        ("AuditActor", "AuditAction", "AuditTarget", *RANGE, *PAGE),
    ),
    ("POST", "/v1/api-keys"): Op(
        "createApiKey",
        "api-keys",
        "Create an API key",
        ((201, "The key, with its secret shown only here", "ApiKeyCreated"),),
        (400, 409),
        ("ActionIdempotencyKey",),
        body="ApiKeyCreate",
        description=IDEMPOTENT_ACTION.strip() + SEALED_ANSWER,
    ),
    ("GET", "/v1/api-keys"): Op(
        "listApiKeys",
        "api-keys",
        "List API keys, by id (never their secrets)",
        ((200, "A page of keys", "ApiKeyPage"),),
        (400,),
        PAGE,
    ),
    ("DELETE", "/v1/api-keys/{key_id}"): Op(
        "revokeApiKey",
        "api-keys",
        "Revoke an API key",
        ((200, "The revoked key", "ApiKey"),),
        (400, 404),
        ("KeyId",),
        description="404 when there is no active key with this id (also when already revoked).",
    ),
}


def _operator_operation(op: Op, roles: frozenset[str] | None) -> Schema:
    responses: dict[str, Schema] = {
        str(status): _json_response(description, _ref(schema))
        for status, description, schema in op.answers
    }
    # Every route authenticates (against the database: 503 when it cannot be reached) and counts
    # against its key's rate limit; only routes closed to some role can answer 403.
    statuses = {*op.errors, 401, 429, 503} | ({403} if roles != READ else set())
    notes = dict(op.error_notes)
    assert notes.keys() <= statuses, (op.operation_id, notes.keys() - statuses)
    if 503 in notes:
        notes[503] = f"{notes[503]}; {DATABASE_DOWN}"
    for status in statuses:
        if status in notes:
            responses[str(status)] = _json_response(notes[status], _ref("Error"))
        else:
            name = ERROR_RESPONSES[status][0]
            responses[str(status)] = {"$ref": f"#/components/responses/{name}"}
    responses["default"] = {"$ref": "#/components/responses/Unexpected"}
    operation: Schema = {
        "operationId": op.operation_id,
        "tags": [op.tag],
        "summary": op.summary,
        "parameters": [_p(name) for name in op.parameters],
        "responses": dict(sorted(responses.items())),
    }
    if op.description:
        operation["description"] = op.description
    if op.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": _ref(op.body)}},
        }
    if roles is not None:
        operation["x-roles"] = [role for role in ROLES if role in roles]
        operation["description"] = (
            operation.get("description", "") + f"\n\nRoles: {', '.join(operation['x-roles'])}."
        ).strip()
    return operation


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


PSP_WEBHOOK_DESCRIPTION = f"""\
Where a PSP route (WALLET_PSPS) sends its events about the payments it holds: the path names the \
route. Not authenticated by an API key but by the body's signature, with the route's webhook \
secret:

`X-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of the bytes "{{t}}." followed by the raw \
body>`

The MAC is checked in constant time, then the time, with a 300 s tolerance either way. A missing, \
malformed, stale or wrong signature is 401 and changes nothing. Several `v1=` entries may be sent \
(while a secret is rotated); entries of other schemes are ignored.

Events are matched by `data.reference`, the wallet's payment id. Each event `id` is applied once: \
a repeat answers `duplicate`. An event that does not match the payment's amount, currency or PSP \
payment id answers `refused_<reason>` and flags the payment. An event out of order (like \
`processing` after `succeeded`) answers `ignored`. 404 for an unknown route or payment is not \
recorded, so the PSP's retry may succeed later. Fields are strictly typed: an amount that is not a \
JSON integer (a string, a float, a boolean), a field of the wrong type or format, an unknown event \
type or status is 400 naming the field, and changes nothing. Full rules: docs/payments.md, \
section 5.

**Example.** The example's signature is real: it signs the compact JSON of the example (no \
spaces, in the order shown) at t={EXAMPLE_TIME} with the secret \
`{EXAMPLE_WEBHOOK_SECRET.decode()}`."""


def _psp_webhook_operation() -> Schema:
    return {
        "operationId": "pspWebhook",
        "tags": ["payments"],
        "summary": "A PSP's signed event about one of its payments",
        "description": PSP_WEBHOOK_DESCRIPTION,
        "security": [],
        "parameters": [
            _p("PspName"),
            {
                "name": "X-Signature",
                "in": "header",
                "required": True,
                "schema": _text(minLength=1),
                "description": "t=<unix seconds>,v1=<hex HMAC-SHA256 of `{t}.{raw body}`> "
                "(401 when missing, malformed, stale or wrong)",
                "example": psp_example_signature(),
            },
        ],
        "requestBody": {
            "required": True,
            "content": {
                JSON: {
                    "schema": _ref("PspEvent"),
                    "examples": {
                        "succeeded": {
                            "summary": "a deposit succeeded",
                            "value": PSP_EVENT_EXAMPLE,
                        }
                    },
                }
            },
        },
        "responses": {
            "200": _json_response(
                "Verified: applied, applied before, ignored or refused (see `outcome`)",
                _ref("WebhookOutcome"),
            ),
            "400": {"$ref": "#/components/responses/BadRequest"},
            "401": _json_response(
                "authentication_failed: X-Signature is missing, malformed, stale or wrong; "
                "nothing changed",
                _ref("Error"),
            ),
            "404": _json_response(
                "resource_not_found: no such PSP route, or no payment with the event's reference "
                "at this route; not recorded, so a retry may succeed",
                _ref("Error"),
            ),
            "503": {"$ref": "#/components/responses/RouteDegraded"},
            "default": {"$ref": "#/components/responses/Unexpected"},
        },
    }


def _public_operations() -> dict[tuple[str, str], Schema]:
    """Routes without an API key: health, metrics, this document, and the two webhooks."""

    def plain(op_id: str, tag: str, summary: str, responses: dict[str, Schema]) -> Schema:
        return {
            "operationId": op_id,
            "tags": [tag],
            "summary": summary,
            "security": [],
            "responses": responses,
        }

    text = {"type": "string"}
    return {
        ("GET", "/healthz"): plain(
            "healthz", "health", "Liveness", {"200": _json_response("Alive", _ref("Health"))}
        ),
        ("GET", "/readyz"): plain(
            "readyz",
            "health",
            "Readiness: Postgres and Redis both answer",
            {
                "200": _json_response("Ready", _ref("Ready")),
                "503": _json_response("Not ready; `checks` names what failed", _ref("Ready")),
            },
        ),
        ("GET", "/metrics"): plain(
            "metrics",
            "health",
            "Prometheus metrics of this process (for an internal scraper only)",
            {
                "200": {
                    "description": f"Prometheus text format ({METRICS_CONTENT_TYPE})",
                    "headers": REQUEST_ID_HEADER,
                    "content": {"text/plain": {"schema": text}},
                }
            },
        ),
        ("GET", "/openapi.json"): plain(
            "openapi",
            "docs",
            "This document",
            {"200": _json_response("The OpenAPI 3.1 document", {"type": "object"})},
        ),
        ("GET", "/docs"): plain(
            "docs",
            "docs",
            "This document, rendered for people",
            {
                "200": {
                    "description": "An HTML page that renders /openapi.json",
                    "headers": REQUEST_ID_HEADER,
                    "content": {"text/html": {"schema": text}},
                }
            },
        ),
        ("POST", "/v1/seamless/{provider}"): _seamless_operation(),
        ("POST", "/v1/psp/{psp}/webhook"): _psp_webhook_operation(),
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
    for part in (
        _error_schemas,
        _player_schemas,
        _history_schemas,
        _admin_schemas,
        _request_schemas,
        _seamless_schemas,
    ):
        schemas.update(part())
    schemas.update(docgen.schemas(docgen.models_of(_operations())))
    # The PSP webhook is not an API-key route: its messages are added by hand.
    schemas.update(docgen.schemas([(PspEvent, "validation"), (WebhookOutcome, "serialization")]))
    schemas["PspEvent"]["examples"] = [PSP_EVENT_EXAMPLE]
    pages = ("PlayerSummary", "Transaction", "Call", "AuditEntry", "ApiKey")
    for item in pages:
        schemas[f"{item}Page"] = _page(item)
    schemas["OperatorEventPayload"]["examples"] = [OPERATOR_EVENT_EXAMPLE]
    return {
        "schemas": dict(sorted(schemas.items())),
        "parameters": _parameters(),
        "responses": _responses(),
        "headers": {
            "XRequestId": {
                "description": "the request's correlation id (yours when you sent a sane one)",
                "schema": IDENTIFIER,
            }
        },
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key (wk_<role>_...) or the bootstrap admin key.",
            }
        },
    }


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
    operations = {
        key: _operator_operation(op, endpoints.PERMISSIONS.get(key))
        for key, op in OPERATIONS.items()
    }
    errors = {status: name for status, (name, _) in ERROR_RESPONSES.items()}
    for op in _operations():
        operations[(op.method, op.path)] = docgen.operation(op, errors, database_down=DATABASE_DOWN)
    operations.update(_public_operations())
    paths: dict[str, dict[str, Schema]] = {}
    for (method, path), operation in operations.items():
        operation["parameters"] = [*operation.get("parameters", []), _p("RequestId")]
        paths.setdefault(path, {})[method.lower()] = operation
    return paths


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


@lru_cache(maxsize=1)
def document_json() -> bytes:
    return orjson.dumps(document())


# --- the routes -------------------------------------------------------------------------------

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:76rem;padding:1rem 1.5rem;
color:#1b1f24}
h1{margin:.2rem 0}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2rem;margin-top:2rem}
h4{margin:.8rem 0 .3rem}
details{border:1px solid #d0d7de;border-radius:6px;margin:.4rem 0;background:#fff}
summary{cursor:pointer;padding:.45rem .6rem}
summary>span{margin-right:.6rem}
.body{padding:.2rem .9rem .8rem}
.method{display:inline-block;font:600 12px ui-monospace,monospace;padding:.1rem .45rem;
border-radius:4px;color:#fff;min-width:3.6rem;text-align:center}
.get{background:#0969da}.post{background:#1a7f37}.put{background:#9a6700}
.delete{background:#cf222e}
.path{font-family:ui-monospace,monospace;font-weight:600}
.roles{float:right;font-size:12px;color:#57606a}
.desc{white-space:pre-line}
pre{background:#f6f8fa;padding:.6rem;border-radius:6px;overflow:auto;font-size:13px}
table{border-collapse:collapse;width:100%;font-size:14px}
td,th{border:1px solid #d0d7de;padding:.3rem .5rem;text-align:left;vertical-align:top}
code{font-family:ui-monospace,monospace}
.status{font-weight:600}
"""

# Builds the page with DOM calls and text nodes only (never innerHTML), from /openapi.json.
_SCRIPT = """
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function resolve(doc, value) {
  if (!value || typeof value.$ref !== "string") return value;
  const keys = value.$ref.slice(2).split("/");
  return keys.reduce((node, key) => node[key.replace(/~1/g, "/").replace(/~0/g, "~")], doc);
}

function json(value) {
  const pre = el("pre", {});
  write(pre, value, "");
  return pre;
}

function write(out, value, indent) {
  if (Array.isArray(value)) {
    items(out, value, indent, "[", "]", (item, inner) => write(out, item, inner));
  } else if (value !== null && typeof value === "object") {
    items(out, Object.entries(value), indent, "{", "}", ([key, item], inner) => {
      out.append(JSON.stringify(key) + ": ");
      const prefix = "#/components/schemas/";
      if (key === "$ref" && typeof item === "string" && item.startsWith(prefix)) {
        const name = item.slice(prefix.length);
        out.append(el("a", {href: "#schema-" + name}, JSON.stringify(item)));
      } else {
        write(out, item, inner);
      }
    });
  } else {
    out.append(JSON.stringify(value));
  }
}

function items(out, list, indent, open, close, each) {
  if (list.length === 0) {
    out.append(open + close);
    return;
  }
  const inner = indent + "  ";
  out.append(open + "\\n");
  list.forEach((item, i) => {
    out.append(inner);
    each(item, inner);
    out.append(i < list.length - 1 ? ",\\n" : "\\n");
  });
  out.append(indent + close);
}

function parameters(doc, body, list) {
  if (list.length === 0) return;
  const head = ["name", "in", "required", "schema", "description"].map((h) => el("th", {}, h));
  const table = el("table", {}, el("tr", {}, ...head));
  for (const p of list.map((item) => resolve(doc, item))) {
    table.append(el("tr", {},
      el("td", {}, el("code", {}, p.name)),
      el("td", {}, p.in),
      el("td", {}, p.required ? "yes" : "no"),
      el("td", {}, el("code", {}, JSON.stringify(p.schema || {}))),
      el("td", {}, p.description || "")));
  }
  body.append(el("h4", {}, "Parameters"), table);
}

function content(body, media) {
  for (const [type, entry] of Object.entries(media || {})) {
    body.append(el("p", {}, el("code", {}, type)));
    if (entry.schema) body.append(json(entry.schema));
    for (const [name, example] of Object.entries(entry.examples || {})) {
      const inner = el("div", {class: "body"}, json(example.value));
      const plain = example["x-decrypted"];
      if (plain) inner.append(el("p", {}, "decrypted:"), json(plain));
      const title = "example " + (example.summary || name);
      body.append(el("details", {}, el("summary", {}, title), inner));
    }
  }
}

function operation(doc, method, path, op, outgoing) {
  let roles = "";
  if (outgoing) roles = "sent by the wallet";
  else if (op["x-roles"]) roles = "roles: " + op["x-roles"].join(", ");
  else if (op.security && op.security.length === 0) roles = "no authentication";
  const body = el("div", {class: "body"});
  if (op.description) body.append(el("p", {class: "desc"}, op.description));
  parameters(doc, body, op.parameters || []);
  if (op.requestBody) {
    body.append(el("h4", {}, "Request body"));
    content(body, resolve(doc, op.requestBody).content);
  }
  for (const key of ["x-decrypted-request", "x-decrypted-response"]) {
    if (op[key]) body.append(el("h4", {}, key), json(op[key]));
  }
  body.append(el("h4", {}, "Responses"));
  for (const [status, item] of Object.entries(op.responses || {})) {
    const response = resolve(doc, item);
    const line = " " + (response.description || "");
    body.append(el("p", {}, el("span", {class: "status"}, status), line));
    if (response.content) content(body, response.content);
  }
  const summary = el("summary", {},
    el("span", {class: "method " + method}, method.toUpperCase()),
    el("span", {class: "path"}, path),
    el("span", {}, op.summary || ""),
    el("span", {class: "roles"}, roles));
  return el("details", {id: op.operationId || method + path}, summary, body);
}

function schemas(doc) {
  const section = document.getElementById("schemas");
  section.replaceChildren(el("h2", {}, "Schemas"));
  for (const [name, schema] of Object.entries((doc.components || {}).schemas || {})) {
    const line = schema.description ? schema.description.split("\\n")[0] : "";
    section.append(el("details", {id: "schema-" + name},
      el("summary", {}, el("span", {class: "path"}, name), el("span", {}, line)),
      el("div", {class: "body"}, json(schema))));
  }
}

function render(doc) {
  const title = doc.info.title + " " + doc.info.version;
  document.title = title;
  document.getElementById("title").textContent = title;
  const info = el("p", {class: "desc"}, doc.info.description || "");
  document.getElementById("info").replaceChildren(info);
  const byTag = new Map();
  const add = (method, path, op, outgoing) => {
    const tag = (op.tags || ["other"])[0];
    if (!byTag.has(tag)) byTag.set(tag, []);
    byTag.get(tag).push([method, path, op, outgoing]);
  };
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) add(method, path, op, false);
  }
  // Requests the wallet sends (OpenAPI webhooks), shown under their tag by name.
  for (const [name, item] of Object.entries(doc.webhooks || {})) {
    for (const [method, op] of Object.entries(item)) add(method, "webhook " + name, op, true);
  }
  const notes = new Map((doc.tags || []).map((t) => [t.name, t.description || ""]));
  const main = document.getElementById("operations");
  const toc = el("ul", {});
  main.replaceChildren();
  for (const [tag, ops] of byTag) {
    toc.append(el("li", {}, el("a", {href: "#tag-" + tag}, tag)));
    main.append(el("h2", {id: "tag-" + tag}, tag), el("p", {}, notes.get(tag) || ""));
    for (const [method, path, op, outgoing] of ops) {
      main.append(operation(doc, method, path, op, outgoing));
    }
  }
  toc.append(el("li", {}, el("a", {href: "#schemas"}, "schemas")));
  document.getElementById("toc").replaceChildren(toc);
  schemas(doc);
}

function openTarget() {
  const target = document.getElementById(decodeURIComponent(location.hash.slice(1)));
  if (target && target.tagName === "DETAILS") target.open = true;
}

async function main() {
  let doc;
  try {
    const response = await fetch("/openapi.json");
    if (!response.ok) throw new Error("HTTP " + response.status);
    doc = await response.json();
  } catch (error) {
    const message = "Could not load /openapi.json: " + error.message;
    document.getElementById("operations").replaceChildren(el("p", {}, message));
    return;
  }
  render(doc);
  window.addEventListener("hashchange", openTarget);
  openTarget();
}

main();
"""

_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{TITLE}</title>
<style>{_STYLE}</style>
</head>
<body>
<header>
<h1 id="title">{TITLE}</h1>
<p>Rendered from the OpenAPI document <a href="/openapi.json">/openapi.json</a>.</p>
<div id="info"></div>
</header>
<nav id="toc"></nav>
<main id="operations"><p>Loading /openapi.json...</p></main>
<section id="schemas"></section>
<noscript><p>This page needs JavaScript; the document is <a href="/openapi.json">/openapi.json</a>.
</p></noscript>
<script>{_SCRIPT}</script>
</body>
</html>
"""


def _csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


# Only this page's own script and style may run, and it may fetch from this origin only: the page
# can never load anything from elsewhere, even if someone edits it carelessly.
DOCS_CSP = (
    f"default-src 'none'; script-src {_csp_hash(_SCRIPT)}; style-src {_csp_hash(_STYLE)}; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


async def openapi_json(request: Request) -> Response:
    return Response(document_json(), media_type=JSON)


async def docs_page(request: Request) -> Response:
    return HTMLResponse(_PAGE, headers={"Content-Security-Policy": DOCS_CSP})


routes = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs_page, methods=["GET"]),
]
