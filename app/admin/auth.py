"""Back-office sign-in, sessions and CSRF.

- **Sign-in** takes an API key in a form (the bootstrap ``WALLET_ADMIN_API_KEY`` or a key from
  ``POST /v1/api-keys``), checked by :func:`app.web.auth.principal_of`, the API's own check.
  Failures are counted per client address in Redis (:data:`SIGN_IN_FAILURES` per
  :data:`FAILURE_WINDOW_SECONDS`, then 429), and each is logged with the address, never the key.
- **The session** is a random token in the ``__Host-`` cookie :data:`COOKIE` (``Secure;
  HttpOnly; SameSite=Strict; Path=/``: the prefix demands that path, and it pins the cookie to
  this host). Postgres keeps only the token's SHA-256, the SHA-256 of the API key and an expiry
  (sql/migrations/023_admin_sessions.sql). Every request joins it to ``api_keys`` again, so a
  revoked key ends its sessions at once; signing out deletes the row.
- **CSRF**: every POST carries the session's token in a hidden field, compared in constant time,
  and an ``Origin`` (or, without one, ``Referer``) of this host; anything else is 403.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

import asyncpg
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from app.db import Queries
from app.state import Wallet
from app.web.auth import Principal, key_hash, principal_of
from app.web.errors import AuthenticationFailed

log = logging.getLogger(__name__)

COOKIE = "__Host-wallet_admin"
SESSION_SECONDS = 8 * 3600  # a working day; signing in again is cheap
# Failed sign-ins per client address within the window, after which it must wait: plenty for a
# person mistyping, nothing for a key guesser (a key has 256 bits anyway).
SIGN_IN_FAILURES = 10
FAILURE_WINDOW_SECONDS = 300
CSRF_FIELD = "csrf"
BOOTSTRAP = "admin:bootstrap"


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in visitor: who (the API's :class:`Principal`) and the session's CSRF token."""

    principal: Principal
    csrf: str


def session_hash(token: str) -> bytes:
    return hashlib.sha256(b"admin session\x00" + token.encode()).digest()


def _csrf_of(token: str) -> str:
    # Derived from the token, so nothing more is stored; a database copy (which holds only the
    # token's hash) cannot forge it.
    return hmac.new(token.encode(), b"admin csrf", hashlib.sha256).hexdigest()


def _admin_key(w: Wallet) -> str | None:
    key = w.settings.admin_api_key
    return str(key) if key is not None else None


async def sign_in(
    conn: asyncpg.Connection, w: Wallet, api_key: str, client: str
) -> tuple[str, Session] | None:
    """A new session for ``api_key`` (its token and the session), or None for a wrong key."""
    try:
        principal = await principal_of(api_key, conn, w.queries, _admin_key(w))
    except AuthenticationFailed:
        log.warning("back office: sign-in refused for %s", client)
        await _count_failure(w, client)
        return None
    token = secrets.token_urlsafe(32)
    q: Queries = w.queries
    await conn.execute(*q.prune_admin_sessions())
    await conn.execute(
        *q.insert_admin_session(
            token_hash=session_hash(token),
            key_hash=key_hash(api_key),
            actor=principal.actor,
            ttl_seconds=float(SESSION_SECONDS),
        )
    )
    log.info("back office: %s signed in as %s", principal.actor, principal.role)
    return token, Session(principal, _csrf_of(token))


def _failures_key(client: str) -> str:
    return f"wallet:admin-sign-in-failures:{client}"


async def too_many_failures(w: Wallet, client: str) -> bool:
    """Has ``client`` failed to sign in :data:`SIGN_IN_FAILURES` times within the last window?

    Fails open, like the API's limiter: this guards against guessing, and a Redis outage must
    not lock everyone out."""
    try:
        failures = await w.redis.get(_failures_key(client))
    except RedisError as exc:
        log.warning("back office: sign-in failures not checked: %s", exc)
        return False
    return failures is not None and int(failures) >= SIGN_IN_FAILURES


async def _count_failure(w: Wallet, client: str) -> None:
    try:
        async with w.redis.pipeline(transaction=False) as pipe:
            pipe.incr(_failures_key(client))
            pipe.expire(_failures_key(client), FAILURE_WINDOW_SECONDS, nx=True)
            await pipe.execute()
    except RedisError as exc:
        log.warning("back office: sign-in failure not counted: %s", exc)


async def current(request: Request, conn: asyncpg.Connection, w: Wallet) -> Session | None:
    """The request's live session, or None (no cookie, expired, signed out, key revoked)."""
    token = request.cookies.get(COOKIE)
    if not token or len(token) > 100:
        return None
    row = await conn.fetchrow(*w.queries.admin_session(token_hash=session_hash(token)))
    if row is None:
        return None
    if row["actor"] == BOOTSTRAP:
        admin = _admin_key(w)
        # The bootstrap key has no row to revoke: changing WALLET_ADMIN_API_KEY is its revocation.
        if admin is None or not hmac.compare_digest(bytes(row["key_hash"]), key_hash(admin)):
            return None
        return Session(Principal(BOOTSTRAP, "admin"), _csrf_of(token))
    if row["role"] is None:
        return None  # the API key was revoked
    return Session(Principal(row["actor"], row["role"]), _csrf_of(token))


async def sign_out(request: Request, conn: asyncpg.Connection, w: Wallet) -> None:
    token = request.cookies.get(COOKIE)
    if token:
        await conn.execute(*w.queries.delete_admin_session(token_hash=session_hash(token)))


def set_cookie(response: Response, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=SESSION_SECONDS,
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )


def clear_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")


def same_origin(request: Request) -> bool:
    """The POST comes from a page of this host: its ``Origin``, or else its ``Referer``."""
    source = request.headers.get("origin") or request.headers.get("referer")
    host = request.headers.get("host")
    if not source or not host or source == "null":
        return False
    return urlsplit(source).netloc == host


def csrf_ok(request: Request, session: Session, sent: str | None) -> bool:
    """Both CSRF checks of a POST: this host's origin, and the session's token."""
    return (
        same_origin(request)
        and sent is not None
        and hmac.compare_digest(sent.encode(), session.csrf.encode())
    )
