"""Providers and their keys: register a provider, list them, rotate a provider's key.

A provider's key opens and seals its seamless deliveries (``app.seamless.envelope``); it is shown
once, in the answer that made it, and stored sealed under the master key.
"""

from __future__ import annotations

import base64
import secrets
from typing import Annotated, Literal

import asyncpg
from pydantic import Field

from app.audit import Actor, audit
from app.db import Queries
from app.fields import Identifier, Text, Time
from app.secrets import master_key_from_env, seal_key
from app.web import pagination
from app.web.auth import ADMIN, READ
from app.web.errors import IdempotencyConflict, NotFound
from app.web.idempotency import IDEMPOTENT_ACTION, SHOWN_ONCE
from app.web.messages import Answer, Body, Page
from app.web.routing import Api, Call

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


def _new_key(code: str, master: bytes) -> tuple[ProviderKey, bytes]:
    """A fresh key, as shown (once) and as stored: sealed under ``master``."""
    key_id, secret = "k_" + secrets.token_hex(6), secrets.token_bytes(32)
    shown = ProviderKey(key_id=key_id, key=base64.b64encode(secret).decode())
    return shown, seal_key(master, code, key_id, secret)


def _active(rows: list[asyncpg.Record]) -> list[ActiveKey]:
    return [
        ActiveKey(key_id=r["key_id"], state=r["state"]) for r in rows if r["state"] != "retired"
    ]


async def create_provider(
    conn: asyncpg.Connection,
    q: Queries,
    code: str,
    name: str,
    actor: Actor,
    *,
    master_key: bytes | None = None,
) -> ProviderCreated:
    """Register a provider with its first key; the key is returned once and never again, and
    stored sealed under ``master_key`` (``WALLET_MASTER_KEY`` of the environment by default)."""
    master = master_key if master_key is not None else master_key_from_env()
    async with conn.transaction():
        row = await conn.fetchrow(*q.insert_provider(code=code, name=name))
        if row is None:
            raise IdempotencyConflict(f"provider {code!r} already exists", field="code")
        shown, sealed = _new_key(code, master)
        await conn.execute(*q.insert_current_key(provider=code, key_id=shown.key_id, secret=sealed))
        await audit(
            conn,
            q,
            actor,
            "provider.create",
            f"provider:{code}",
            None,
            {"code": code, "name": name, "keys": [shown.key_id]},
        )
    return ProviderCreated(code=code, name=name, keys=[shown])


async def rotate_key(
    conn: asyncpg.Connection,
    q: Queries,
    code: str,
    actor: Actor,
    *,
    master_key: bytes | None = None,
) -> KeyRotation:
    """A new current key; the old current stays active as previous, the old previous retires.
    The new key is stored sealed like in :func:`create_provider`."""
    master = master_key if master_key is not None else master_key_from_env()
    async with conn.transaction():
        if await conn.fetchrow(*q.lock_provider(code=code)) is None:
            raise NotFound(f"provider {code!r} not found")
        before = _active(await conn.fetch(*q.provider_keys(provider=code)))
        await conn.execute(*q.retire_previous_key(provider=code))
        await conn.execute(*q.demote_current_key(provider=code))
        shown, sealed = _new_key(code, master)
        await conn.execute(*q.insert_current_key(provider=code, key_id=shown.key_id, secret=sealed))
        after = _active(await conn.fetch(*q.provider_keys(provider=code)))
        await audit(
            conn,
            q,
            actor,
            "provider.rotate_key",
            f"provider:{code}",
            {"active": [k.model_dump() for k in before]},
            {"active": [k.model_dump() for k in after]},
        )
    return KeyRotation(code=code, keys=[shown], active=after)


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
    operation_id="createProvider",
    idempotency="optional",
    secret=True,
)
async def create_provider_route(c: Call, body: ProviderCreate) -> ProviderCreated:
    return await create_provider(
        c.conn, c.w.queries, body.code, body.name, c.actor, master_key=c.w.keys.master_key
    )


@api.get(
    "/v1/providers",
    summary="List providers, by code",
    roles=READ,
    query=pagination.PageQuery,
    answers=[(200, ProviderPage, "A page of providers")],
    errors=(400,),
)
async def list_providers(c: Call, query: pagination.PageQuery) -> ProviderPage:
    last = pagination.after_text(query.cursor)
    rows = await c.conn.fetch(*c.w.queries.providers_page(cursor=last, limit=query.limit + 1))
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
    rotated = await rotate_key(c.conn, c.w.queries, code, c.actor, master_key=c.w.keys.master_key)
    c.w.keys.forget(code)
    return rotated


routes = api.routes
