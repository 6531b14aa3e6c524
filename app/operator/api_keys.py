"""Operator API keys: create one (its secret shown once), list them, revoke one.

Only a key's hash is stored (:mod:`app.web.auth`); a revoked key authenticates no more.
"""

from __future__ import annotations

from typing import Annotated

import asyncpg
from pydantic import Field

from app.audit import Actor, audit
from app.db import Queries
from app.fields import Identifier, OneOf, Text, Time
from app.web import pagination
from app.web.auth import ADMIN, ROLES, key_hash, new_key
from app.web.errors import NotFound
from app.web.idempotency import IDEMPOTENT_ACTION, SHOWN_ONCE
from app.web.messages import Answer, Body, Page
from app.web.routing import Api, Call

api = Api("api-keys", path_params={"key_id": "the API key's id"})
Role = Annotated[str, OneOf.of(ROLES)]


class ApiKeyCreate(Body):
    role: Role
    name: Text


class ApiKey(Answer):
    """An API key, never its secret."""

    id: Identifier
    role: Role
    name: str
    created_by: str = Field(description="the actor who created it")
    created_at: Time
    revoked_at: Time | None


class ApiKeyCreated(ApiKey):
    key: str = Field(description="the secret, shown only here")


class ApiKeyPage(Page[ApiKey]):
    """A page of ApiKey objects, keyset-paged."""


async def create_api_key(
    conn: asyncpg.Connection, q: Queries, role: str, name: str, actor: Actor
) -> ApiKeyCreated:
    """A new API key of ``role`` (one of ROLES); the secret is in this answer only."""
    key_id, secret = new_key(role)
    async with conn.transaction():
        row = await conn.fetchrow(
            *q.insert_api_key(
                id=key_id, key_hash=key_hash(secret), role=role, name=name, created_by=actor.name
            )
        )
        await audit(
            conn, q, actor, "apikey.create", f"apikey:{key_id}", None, {"role": role, "name": name}
        )
    return ApiKeyCreated(**row, key=secret)


async def revoke_api_key(conn: asyncpg.Connection, q: Queries, key_id: str, actor: Actor) -> ApiKey:
    async with conn.transaction():
        row = await conn.fetchrow(*q.revoke_api_key(id=key_id))
        if row is None:
            raise NotFound(f"no active API key {key_id!r}")
        await audit(
            conn,
            q,
            actor,
            "apikey.revoke",
            f"apikey:{key_id}",
            {"revoked": False},
            {"revoked": True},
        )
    return ApiKey(**row)


@api.post(
    "/v1/api-keys",
    summary="Create an API key",
    roles=ADMIN,
    body=ApiKeyCreate,
    answers=[(201, ApiKeyCreated, "The key, with its secret shown only here")],
    errors=(400, 409),
    description=IDEMPOTENT_ACTION.strip() + SHOWN_ONCE,
    idempotency="optional",
    secret=True,
    operation_id="createApiKey",
)
async def create_api_key_route(c: Call, body: ApiKeyCreate) -> ApiKeyCreated:
    return await create_api_key(c.conn, c.w.queries, body.role, body.name, c.actor)


@api.get(
    "/v1/api-keys",
    summary="List API keys, by id (never their secrets)",
    roles=ADMIN,
    query=pagination.PageQuery,
    answers=[(200, ApiKeyPage, "A page of keys")],
    errors=(400,),
)
async def list_api_keys(c: Call, query: pagination.PageQuery) -> ApiKeyPage:
    last = pagination.after_text(query.cursor)
    rows = await c.conn.fetch(*c.w.queries.api_keys_page(cursor=last, limit=query.limit + 1))
    shown, next_cursor = pagination.window(rows, query.limit, lambda r: [r["id"]])
    return ApiKeyPage(data=[ApiKey(**r) for r in shown], next_cursor=next_cursor)


@api.delete(
    "/v1/api-keys/{key_id}",
    summary="Revoke an API key",
    roles=ADMIN,
    answers=[(200, ApiKey, "The revoked key")],
    errors=(400, 404),
    description="404 when there is no active key with this id (also when already revoked).",
    operation_id="revokeApiKey",
)
async def revoke_api_key_route(c: Call, key_id: str) -> ApiKey:
    return await revoke_api_key(c.conn, c.w.queries, key_id, c.actor)


routes = api.routes
