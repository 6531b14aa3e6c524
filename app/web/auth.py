"""Operator API authentication and roles: ``Authorization: Bearer <api key>``.

Keys are created with ``wallet apikey create --role ROLE`` (or ``POST /v1/api-keys``), shown once,
and stored as their SHA-256. The key in ``WALLET_ADMIN_API_KEY`` acts as a bootstrap admin key;
it is compared in constant time. Roles:

- ``admin``: everything, including providers, keys and API keys;
- ``operator``: the player back office: players, sessions, status and limits;
- ``finance``: money: adjustments (and everything a reader may do);
- ``support``: read-only.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import asyncpg
from starlette.requests import Request

from app.db import Queries
from app.web.errors import AuthenticationFailed, Forbidden

ROLES = ("admin", "operator", "support", "finance")
READ = frozenset(ROLES)
PLAYER_ADMIN = frozenset({"admin", "operator"})
MONEY = frozenset({"admin", "finance"})
ADMIN = frozenset({"admin"})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the audit trail's actor and the role that decides what they may do."""

    actor: str
    role: str


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def new_key(role: str) -> tuple[str, str]:
    """(public id, secret key); the role in the key is a hint for people, never trusted."""
    return "ak_" + secrets.token_hex(6), f"wk_{role}_{secrets.token_urlsafe(32)}"


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("send Authorization: Bearer <api key>")
    return token.strip()


async def authenticate(
    request: Request, conn: asyncpg.Connection, queries: Queries, admin_key: str | None
) -> Principal:
    """The caller, or :class:`AuthenticationFailed`."""
    return await principal_of(bearer(request), conn, queries, admin_key)


async def principal_of(
    token: str, conn: asyncpg.Connection, queries: Queries, admin_key: str | None
) -> Principal:
    """Whose API key ``token`` is (the back office's sign-in checks a key this way too), or
    :class:`AuthenticationFailed`."""
    if admin_key is not None and hmac.compare_digest(token.encode(), admin_key.encode()):
        return Principal("admin:bootstrap", "admin")
    # Looked up by hash: timing can only tell about the hash, which gives nothing away.
    row = await conn.fetchrow(*queries.api_key_by_hash(key_hash=key_hash(token)))
    if row is None:
        raise AuthenticationFailed("unknown or revoked API key", invalid_token=True)
    return Principal(f"apikey:{row['id']}", row["role"])


def authorize(principal: Principal, allowed: frozenset[str], what: str) -> None:
    if principal.role not in allowed:
        raise Forbidden(f"the {principal.role} role may not {what}")


PAYMENTS = frozenset({"admin", "operator", "finance"})
