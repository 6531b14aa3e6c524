"""The old ``route`` decorator, kept only for ``app.payments.endpoints`` until its routes are
declared on an :class:`app.web.routing.Api` too; then this module goes.

Every operator route is declared by its resource (players, providers, api keys, reports: see
:mod:`app.operator`). A route registered here is in :data:`PERMISSIONS`, which ``app.main``
merges into the role matrix, and its document is the hand-written ``Op`` in ``app.openapi``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.audit import Actor
from app.state import Wallet, wallet
from app.web import http
from app.web.auth import Principal, authenticate, authorize
from app.web.idempotency import key_of, once, required_key
from app.web.routing import within_rate_limit


@dataclass(frozen=True, slots=True)
class Call:
    """One authorised operator call: the app's resources, a connection, and who is calling."""

    w: Wallet
    conn: asyncpg.Connection
    principal: Principal
    actor: Actor


Handler = Callable[[Request, Call], Awaitable[Response]]
routes: list[Route] = []
PERMISSIONS: dict[tuple[str, str], frozenset[str]] = {}


def route(
    method: str,
    path: str,
    roles: frozenset[str],
    what: str,
    *,
    idempotency: str | None = None,
    secret: bool = False,
) -> Callable[[Handler], Handler]:
    """Register ``handler`` for ``method path``, callable by ``roles`` only.

    ``idempotency`` ``"optional"`` or ``"required"``: the route takes an ``Idempotency-Key``
    (:mod:`app.web.idempotency`); routes with their own record of it leave this None.
    ``secret``: its answer shows a secret, stored sealed under the master key.
    """

    def register(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            w = wallet(request)
            admin = w.settings.admin_api_key
            # Bounded like the webhook's: a full pool answers 503 in time (app.main), not never.
            async with w.pool.acquire(timeout=w.settings.db_acquire_timeout_ms / 1000) as conn:
                principal = await authenticate(
                    request, conn, w.queries, str(admin) if admin is not None else None
                )
                authorize(principal, roles, what)
                await within_rate_limit(w, principal)
                actor = Actor(principal.actor, http.request_id(request))
                call = Call(w, conn, principal, actor)
                key = (
                    None
                    if idempotency is None
                    else required_key(request)
                    if idempotency == "required"
                    else key_of(request)
                )
                if key is None:
                    return await handler(request, call)
                return await once(
                    request,
                    conn,
                    w.queries,
                    key,
                    lambda: handler(request, call),
                    seal=w.keys.master_key if secret else None,
                )

        routes.append(Route(path, endpoint, methods=[method]))
        PERMISSIONS[(method, path)] = roles
        return handler

    return register
