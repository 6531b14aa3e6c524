"""Providers and their keys: register a provider, list them, rotate a provider's key.

A provider's key opens and seals its seamless deliveries (``app.seamless.envelope``); it is shown
once, in the answer that made it, and stored sealed under the master key.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from app.fields import Identifier, Text, Time
from app.operator import service
from app.web import pagination
from app.web.auth import ADMIN, READ
from app.web.messages import Answer, Body, Page
from app.web.routing import Api, Call

SHOWN_ONCE = (
    " The first answer, secret included, is stored sealed under the master key, so the same "
    "key and request show it again."
)
IDEMPOTENT_ACTION = (
    "\n\nWith an `Idempotency-Key`, the same key and request again get the first answer "
    "again, refusals included, and racing requests with one key act once; another request "
    "with the key: 409 `idempotency_conflict`."
)

api = Api("providers", path_params={"code": "provider code"})


class ProviderCreate(Body):
    code: Identifier
    name: Text


class Provider(Answer):
    code: Identifier
    name: Text
    created_at: Time


class ProviderPage(Page[Provider]):
    """A page of Provider objects, keyset-paged."""


class ProviderKey(Answer):
    key_id: Identifier
    key: Annotated[
        str,
        Field(
            min_length=44,
            max_length=44,
            description="base64 of 32 random bytes; shown only in this answer",
            json_schema_extra={"contentEncoding": "base64"},
        ),
    ]


class ProviderCreated(Answer):
    code: Identifier
    name: Text
    keys: list[ProviderKey]


class ActiveKey(Answer):
    key_id: Identifier
    state: Literal["current", "previous"]


class KeyRotation(Answer):
    code: Identifier
    keys: list[ProviderKey]
    active: list[ActiveKey]


@api.post(
    "/v1/providers",
    summary="Register a provider with its first key",
    roles=ADMIN,
    body=ProviderCreate,
    answers=[(201, ProviderCreated, "The provider and its first key, shown only here")],
    errors=(400, 409),
    description="409 `idempotency_conflict` (field `code`) when the code exists."
    + IDEMPOTENT_ACTION
    + SHOWN_ONCE,
    idempotency="optional",
    secret=True,
)
async def create_provider(c: Call, body: ProviderCreate) -> ProviderCreated:
    created = await service.create_provider(
        c.conn, c.w.queries, body.code, body.name, c.actor, master_key=c.w.keys.master_key
    )
    return ProviderCreated.model_validate(created)


@api.get(
    "/v1/providers",
    summary="List providers, by code",
    roles=READ,
    query=pagination.PageQuery,
    answers=[(200, ProviderPage, "A page of providers")],
    errors=(400,),
)
async def list_providers(c: Call, query: pagination.PageQuery) -> ProviderPage:
    after = pagination.decode(query.cursor, 1)
    last = pagination.cursor_text(after[0]) if after else None
    rows = await c.conn.fetch(c.w.queries.providers_page, last, query.limit + 1)
    shown, next_cursor = pagination.window(rows, query.limit, lambda r: [r["code"]])
    return ProviderPage(data=[Provider(**r) for r in shown], next_cursor=next_cursor)


@api.post(
    "/v1/providers/{code}/keys",
    summary="Rotate a provider's key",
    roles=ADMIN,
    answers=[(201, KeyRotation, "The new current key (shown only here) and the active keys")],
    errors=(400, 404, 409),
    description="The new key becomes current; the old current stays active as previous; "
    "the old previous retires." + IDEMPOTENT_ACTION + SHOWN_ONCE,
    idempotency="optional",
    secret=True,
)
async def rotate_provider_key(c: Call, code: str) -> KeyRotation:
    rotated = await service.rotate_key(
        c.conn, c.w.queries, code, c.actor, master_key=c.w.keys.master_key
    )
    c.w.keys.forget(code)
    return KeyRotation.model_validate(rotated)


routes = api.routes
