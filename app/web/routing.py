"""Routes that carry their own documentation, and the one wrapper every authenticated call takes.

A domain declares its operations on an :class:`Api`::

    api = Api("providers", path_params={"code": "the provider's code"})

    @api.post(
        "/v1/providers",
        summary="Register a provider with its first key",
        roles=ADMIN,
        body=ProviderCreate,
        answers=[(201, ProviderCreated, "The provider and its first key, shown only here")],
        errors=(400, 409),
        idempotency="optional",
        secret=True,
    )
    async def create_provider(c: Call, body: ProviderCreate) -> ProviderCreated: ...

and exports ``api.routes``, which ``app.main`` concatenates. Each route keeps its
:class:`Operation`: the document (:mod:`app.web.docgen`) and the role matrix
(:func:`permissions`) are read off the app's routes, never kept in a table beside them.

The wrapper, in order: a pooled connection (bounded wait), authentication, the role check, the
key's rate limit, the ``Idempotency-Key`` (``once``), then the path parameters, the query and the
body, each validated by its declared type, and the handler. What the handler returns is encoded
as the answer of the operation's first declared status, unless it returns a :class:`Reply`.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from app.audit import Actor
from app.fields import IDENTIFIER, IDENTIFIER_RULE
from app.state import Wallet, wallet
from app.web import http, messages
from app.web.auth import Principal, authenticate, authorize
from app.web.errors import InvalidRequest, NotFound, RateLimited
from app.web.idempotency import key_of, once, required_key

# "optional" / "required": app.web.idempotency stores the first answer (``once``). "own": the key
# is required, but the domain keeps its own record of it (a payment row), so the handler reads it
# with ``required_key`` and nothing else stores the answer.
Idempotency = Literal["optional", "required", "own"]
_PATH_PARAM = re.compile(r"{([a-z_]+)}")


@dataclass(frozen=True, slots=True)
class Call:
    """One authorised call: the app's resources, a connection, who is calling, the request."""

    w: Wallet
    conn: asyncpg.Connection
    principal: Principal
    actor: Actor
    request: Request


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer with a status other than the operation's first (a 200 beside a 201)."""

    answer: BaseModel
    status: int


@dataclass(frozen=True, slots=True)
class Media:
    """An answer that is not a JSON message (Prometheus text, a page, a file): its media types,
    and the schema of its content when one can be given."""

    types: tuple[str, ...]
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})


@dataclass(frozen=True, slots=True)
class Header:
    """A request header an operation reads itself (a signature), documented as a string."""

    name: str
    description: str
    required: bool = True


@dataclass(frozen=True, slots=True)
class KeyParameter:
    """An ``Idempotency-Key`` that means more on some routes than the shared one says: its
    component name, shared by the routes that name it, and its description."""

    name: str
    description: str


Answers = tuple[tuple[int, type[BaseModel] | Media, str], ...]


@dataclass(frozen=True)
class Operation:
    """What one route does, who may call it, what it takes and what it answers."""

    method: str
    path: str
    operation_id: str
    tag: str
    summary: str
    roles: frozenset[str]
    answers: Answers
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    description: str = ""
    idempotency: Idempotency | None = None
    secret: bool = False
    path_params: dict[str, str] = field(default_factory=dict)
    # Errors whose answer this operation describes itself, instead of the shared description.
    error_notes: tuple[tuple[int, str], ...] = ()
    # Called without an API key (health probes): no roles, no rate limit, no connection taken;
    # the handler takes the ``request`` instead of a :class:`Call`.
    public: bool = False
    # The document's Idempotency-Key parameter, when it says more than the shared one (a shared
    # one's name, or a parameter of its own).
    key_parameter: str | KeyParameter | None = None
    # A body the handler reads itself (its bytes are signed), documented as this message, or
    # one that is no JSON (a CSV file), documented as its media.
    raw_body: type[BaseModel] | Media | None = None
    headers: tuple[Header, ...] = ()
    # Path parameters that take one of these values: anything else is 404, not 400.
    path_values: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # What OpenAPI's own fields cannot say (the seamless webhook's decrypted messages, as
    # ``x-decrypted-request`` / ``x-decrypted-response``), added to the operation as it is.
    extensions: dict[str, Any] = field(default_factory=dict)


class OperationRoute(Route):
    """A Starlette route that keeps its :class:`Operation`; its endpoint is a request handler,
    or a plain ASGI app (the seamless webhook's)."""

    def __init__(
        self, operation: Operation, endpoint: Callable[[Request], Awaitable[Response]] | ASGIApp
    ):
        super().__init__(operation.path, endpoint, methods=[operation.method])
        self.operation = operation


Handler = Callable[..., Awaitable[Any]]


class Api:
    """The documented routes of one domain (its OpenAPI tag)."""

    def __init__(
        self,
        tag: str,
        *,
        path_params: dict[str, str] | None = None,
        path_values: dict[str, tuple[str, ...]] | None = None,
    ) -> None:
        self.tag = tag
        self.path_params = path_params or {}
        self.path_values = path_values or {}
        self.routes: list[OperationRoute] = []

    def get(self, path: str, **declared: Any) -> Callable[[Handler], Handler]:
        return self.operation("GET", path, **declared)

    def post(self, path: str, **declared: Any) -> Callable[[Handler], Handler]:
        return self.operation("POST", path, **declared)

    def put(self, path: str, **declared: Any) -> Callable[[Handler], Handler]:
        return self.operation("PUT", path, **declared)

    def delete(self, path: str, **declared: Any) -> Callable[[Handler], Handler]:
        return self.operation("DELETE", path, **declared)

    def operation(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        roles: frozenset[str] = frozenset(),
        answers: Sequence[tuple[int, type[BaseModel] | Media, str]],
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        errors: tuple[int, ...] = (),
        description: str = "",
        idempotency: Idempotency | None = None,
        secret: bool = False,
        error_notes: tuple[tuple[int, str], ...] = (),
        operation_id: str | None = None,
        public: bool = False,
        key_parameter: str | KeyParameter | None = None,
        raw_body: type[BaseModel] | Media | None = None,
        headers: tuple[Header, ...] = (),
    ) -> Callable[[Handler], Handler]:
        assert public != bool(roles), f"{path}: give roles, or declare it public"
        assert not (public and idempotency), f"{path}: a public route takes no Idempotency-Key"
        names = _PATH_PARAM.findall(path)
        unknown = [n for n in names if n not in self.path_params]
        assert not unknown, f"{path}: describe path parameters {unknown} on the Api"
        assert idempotency != "own" or key_parameter, f"{path}: document its own key"
        assert not (body and raw_body), f"{path}: a body is parsed, or read by the handler"

        def register(handler: Handler) -> Handler:
            operation = Operation(
                method=method,
                path=path,
                operation_id=operation_id or _camel(handler.__name__),
                tag=self.tag,
                summary=summary,
                roles=roles,
                answers=tuple(answers),
                body=body,
                query=query,
                errors=errors,
                description=description,
                idempotency=idempotency,
                secret=secret,
                path_params={n: self.path_params[n] for n in names},
                error_notes=error_notes,
                public=public,
                key_parameter=key_parameter,
                raw_body=raw_body,
                headers=headers,
                path_values={n: v for n, v in self.path_values.items() if n in names},
            )
            _check_signature(handler, operation)
            endpoint = (_public_endpoint if public else _endpoint)(operation, handler)
            self.routes.append(OperationRoute(operation, endpoint))
            return handler

        return register


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _check_signature(handler: Handler, op: Operation) -> None:
    """The handler takes ``c`` and exactly the inputs the operation declares, by name."""
    wanted = [
        "request" if op.public else "c",
        *op.path_params,
        *(["query"] if op.query else []),
        *(["body"] if op.body else []),
    ]
    got = list(inspect.signature(handler).parameters)
    assert sorted(got) == sorted(wanted), f"{handler.__name__}({got}) must take {wanted}"


async def _inputs(op: Operation, request: Request) -> dict[str, Any]:
    """The path parameters, query and body the operation declares, each validated."""
    values: dict[str, Any] = {
        name: path_param(request, name, op.path_values.get(name)) for name in op.path_params
    }
    if op.query is not None:
        values["query"] = messages.parse(op.query, dict(request.query_params))
    if op.body is not None:
        values["body"] = messages.parse(op.body, await http.read_json(request))
    return values


def _response(op: Operation, result: Any) -> Response:
    if isinstance(result, Response):
        return result
    if isinstance(result, Reply):
        return messages.reply(result.answer, result.status)
    return messages.reply(result, op.answers[0][0])


def _public_endpoint(op: Operation, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return _response(op, await handler(request, **await _inputs(op, request)))

    endpoint.__name__ = handler.__name__
    return endpoint


def _endpoint(op: Operation, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def act(c: Call) -> Response:
        return _response(op, await handler(c, **await _inputs(op, c.request)))

    async def endpoint(request: Request) -> Response:
        w = wallet(request)
        admin = w.settings.admin_api_key
        if op.body is not None and not await http.read_body_first(request, http.MAX_JSON_BYTES):
            raise InvalidRequest(f"body exceeds {http.MAX_JSON_BYTES} bytes")
        # Bounded like the webhook's: a full pool answers 503 in time (app.main), not never.
        async with w.pool.acquire(timeout=w.settings.db_acquire_timeout_ms / 1000) as conn:
            principal = await authenticate(
                request, conn, w.queries, str(admin) if admin is not None else None
            )
            authorize(principal, op.roles, op.summary[0].lower() + op.summary[1:])
            await _within_rate_limit(w, principal)
            c = Call(w, conn, principal, Actor(principal.actor, http.request_id(request)), request)
            key = (
                None
                if op.idempotency is None
                else key_of(request)
                if op.idempotency == "optional"
                else required_key(request)
            )
            if key is None or op.idempotency == "own":
                return await act(c)
            return await once(
                request,
                conn,
                w.queries,
                key,
                lambda: act(c),
                seal=w.keys.master_key if op.secret else None,
            )

    endpoint.__name__ = handler.__name__
    return endpoint


def path_param(request: Request, name: str, values: tuple[str, ...] | None = None) -> str:
    """A path parameter: an identifier (400 naming it otherwise), or one of ``values`` (404
    otherwise, as for a path no route serves)."""
    value: str = request.path_params[name]
    if values is not None:
        if value not in values:
            raise NotFound(f"no route for {request.url.path}")
    elif not IDENTIFIER.fullmatch(value):
        raise InvalidRequest(f"{name} must be {IDENTIFIER_RULE}", field=name)
    return value


async def _within_rate_limit(w: Wallet, principal: Principal) -> None:
    """Per API key (the bootstrap admin key is one key too); 429 with Retry-After when over."""
    retry_after = await w.limiter.check(principal.actor)
    if retry_after is not None:
        w.metrics.rate_limited.labels("api_key").inc()
        raise RateLimited(
            f"more than {w.limiter.per_second} requests per second with this API key",
            retry_after=retry_after,
        )


def operations(routes: Iterable[BaseRoute]) -> list[Operation]:
    """The operations of ``routes`` (an app's, or a domain's), in route order."""
    return [r.operation for r in routes if isinstance(r, OperationRoute)]


def permissions(routes: Iterable[BaseRoute]) -> dict[tuple[str, str], frozenset[str]]:
    """The role matrix: which roles may call each ``(method, path)`` (public routes are not in
    it: they take no API key)."""
    return {(op.method, op.path): op.roles for op in operations(routes) if not op.public}
