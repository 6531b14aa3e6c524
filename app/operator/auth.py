"""Operator API authentication: ``Authorization: Bearer <api key>``.

For now the one key is the bootstrap admin key from ``WALLET_ADMIN_API_KEY``, compared in
constant time; stored, hashed, role-scoped keys come with the full operator API.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request

from app.errors import AuthenticationFailed


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("send Authorization: Bearer <api key>")
    return token.strip()


def authenticate(request: Request, admin_key: str | None) -> str:
    """The caller's actor name (for the audit trail), or :class:`AuthenticationFailed`."""
    token = bearer(request)
    if admin_key is not None and hmac.compare_digest(token.encode(), admin_key.encode()):
        return "admin"
    raise AuthenticationFailed("unknown or revoked API key")
