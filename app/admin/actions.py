"""Back-office actions: a confirmation page, then one POST through the API's own handler.

The GET shows what will happen and renders a form holding the CSRF token and an idempotency key
made for that page. The POST checks the CSRF token and origin, the role (the API operation's),
then runs the operation's handler with the visit's ``Call`` inside the API's
:func:`app.web.idempotency.once`: a double submit or a resent form is the same action once, its
first answer given again. The handler audits with the signed-in actor, as the API's does. A
success is a 303 to the result page with a fixed message; a refusal shows the confirmation page
again with the API's message.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.admin import auth, pages
from app.state import wallet
from app.web import http, messages, routing
from app.web.errors import InvalidRequest, NotFound, WalletError
from app.web.idempotency import KEY, once
from app.web.routing import Handler, Operation

MAX_FORM_BYTES = 8 * 1024
KEY_PREFIX = "admin:"  # the back office's keys, apart from any an API caller picks


@dataclass(frozen=True)
class Action:
    """One action: the API operation and handler it runs, what its confirmation page shows
    (``load``: the template's context, from the path parameters), and where a success lands."""

    name: str
    op: Operation
    handler: Handler
    template: str
    load: Callable[[pages.Visit, dict[str, str]], Awaitable[dict[str, Any]]]
    done: Callable[[dict[str, str]], str]
    title: str
    effect: str
    body: type[BaseModel] | None = None

    def routes(self, path: str) -> list[Route]:
        return [
            Route(path, self.confirm, methods=["GET"], name=f"{self.name}-confirm"),
            Route(path, self.perform, methods=["POST"], name=self.name),
        ]

    def _params(self, request: Request) -> dict[str, str]:
        return {name: routing.path_param(request, name) for name in self.op.path_params}

    async def _page(
        self, visit: pages.Visit, params: dict[str, str], status: int = 200, **extra: Any
    ) -> Response:
        context = await self.load(visit, params)
        return visit.render(
            self.template,
            status,
            action=self,
            key=secrets.token_urlsafe(16),
            **context,
            **extra,
        )

    async def confirm(self, request: Request) -> Response:
        w = wallet(request)
        async with w.pool.acquire(timeout=w.settings.db_acquire_timeout_ms / 1000) as conn:
            visit = await pages.visit_of(request, conn, w)
            if visit is None:
                return pages.redirect(request, "/sign-in")
            if not visit.can(self.op):
                return pages.forbidden(visit, self.op)
            try:
                return await self._page(visit, self._params(request))
            except (InvalidRequest, NotFound) as exc:
                return visit.render("missing.html", exc.http_status, error=exc.message)

    async def perform(self, request: Request) -> Response:
        w = wallet(request)
        whole = await http.read_body_first(request, MAX_FORM_BYTES)
        async with w.pool.acquire(timeout=w.settings.db_acquire_timeout_ms / 1000) as conn:
            visit = await pages.visit_of(request, conn, w)
            if visit is None:
                return pages.page(request, "signed_out.html", 403)
            if not whole:
                return visit.render("missing.html", 413, error="The form is too large.")
            raw = await http.read_body(request, MAX_FORM_BYTES)  # as read above, kept
            fields = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
            refused = pages.refusal(visit, self.op, fields.get(auth.CSRF_FIELD))
            if refused is not None:
                return refused
            try:
                params = self._params(request)
                inputs: dict[str, Any] = dict(params)
                if self.body is not None:
                    inputs["body"] = messages.parse(self.body, _without_form_fields(fields))
                key = fields.get("key", "")
                if not key or KEY.fullmatch(KEY_PREFIX + key) is None:
                    raise InvalidRequest("the form's key is missing: open the page again")
            except InvalidRequest as exc:
                return await self._again(visit, request, 400, exc.message)

            async def act() -> Response:
                result = await self.handler(visit.call, **inputs)
                return messages.reply(result, self.op.answers[0][0])

            try:
                answer = await once(request, conn, w.queries, KEY_PREFIX + key, act)
            except WalletError as exc:  # a key already used by another form, an action under way
                return await self._again(visit, request, exc.http_status, exc.message)
            if answer.status_code < 400:
                return pages.redirect(request, f"{self.done(params)}?done={self.name}")
            error = orjson.loads(bytes(answer.body))["error"]["message"]
            return await self._again(visit, request, answer.status_code, error)

    async def _again(
        self, visit: pages.Visit, request: Request, status: int, error: str
    ) -> Response:
        """The confirmation page again with the refusal's message; the not-found page when
        there is nothing to confirm (an unknown or malformed id)."""
        try:
            return await self._page(visit, self._params(request), status, error=error)
        except (InvalidRequest, NotFound) as exc:
            return visit.render("missing.html", exc.http_status, error=exc.message)


def _without_form_fields(fields: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in fields.items() if k not in (auth.CSRF_FIELD, "key")}
