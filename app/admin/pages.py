"""What every back-office page shares: the templates, the answer's security headers, the visit
(the session's principal turned into the API's :class:`~app.web.routing.Call`) and the
:func:`screen` wrapper.

A screen names the API operation it stands on, and is shown only to the roles that operation
declares (``Operation.roles``): the back office has no role table of its own. Its data comes from
that operation's handler, called with the visit's ``Call``, so rules, validation and 400
messages are the API's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

import asyncpg
import jinja2
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute

from app.admin import auth
from app.audit import Actor
from app.money import major_units
from app.state import Wallet, wallet
from app.web import http, messages
from app.web.errors import InvalidRequest, NotFound
from app.web.routing import Call, Handler, Operation, OperationRoute

# No inline script or style, nothing from another origin, never framed, never cached.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
TIME_FIELDS = ("from", "to")

templates = jinja2.Environment(
    loader=jinja2.PackageLoader("app.admin", "templates"),
    autoescape=True,
)
# Amounts in major units of their currency (the minor units in each figure's title).
templates.globals["major"] = lambda amount, currency: major_units(amount, currency, grouped=True)

M = TypeVar("M", bound=BaseModel)


def operation_of(routes: Iterable[BaseRoute], handler: Handler) -> Operation:
    """The API operation whose handler is ``handler`` (among a domain's ``routes``)."""
    for route in routes:
        if isinstance(route, OperationRoute) and route.endpoint.__name__ == handler.__name__:
            return route.operation
    raise LookupError(f"no operation for {handler.__name__}")


def base(request: Request) -> str:
    """Where the back office is mounted (``/admin``, behind any proxy prefix): every page is
    inside its ``Mount``, which adds its path to the ``root_path``."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A rendered template with the security headers."""
    html = templates.get_template(template).render(base=base(request), **context)
    return HTMLResponse(html, status, headers=HEADERS)


def redirect(request: Request, to: str) -> RedirectResponse:
    """303 to ``to`` (a path under the back office)."""
    return RedirectResponse(base(request) + to, 303, headers=HEADERS)


@dataclass(frozen=True, slots=True)
class Visit:
    """One signed-in request: its session and the API ``Call`` made from the session's principal."""

    request: Request
    session: auth.Session
    call: Call

    @property
    def w(self) -> Wallet:
        return self.call.w

    def can(self, op: Operation) -> bool:
        """May this visitor's role call ``op`` (as the API would decide)?"""
        return self.session.principal.role in op.roles

    def form(self) -> dict[str, str]:
        """The query's fields as typed, blanks dropped (an empty filter is no filter), without
        the flash of an action just done."""
        return {k: v for k, v in self.request.query_params.items() if v.strip() and k != "done"}

    def query(self, model: type[M], **fixed: Any) -> M:
        """The query parsed as the API parses it (400 messages included); a ``datetime-local``
        time, which has no zone, is read as UTC."""
        values: dict[str, Any] = {**self.form(), **fixed}
        for name in TIME_FIELDS:
            if name in values:
                values[name] = _utc(values[name])
        return messages.parse(model, values)

    def next_page(self, cursor: str | None) -> str | None:
        """This page's link with ``cursor`` for the next one."""
        if cursor is None:
            return None
        params = {**self.form(), "cursor": cursor}
        return f"{self.request.url.path}?{urlencode(params)}"

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        from app.admin.nav import NAV  # the nav names screens of every module, which import this

        return page(
            self.request,
            template,
            status,
            visit=self,
            principal=self.session.principal,
            csrf=self.session.csrf,
            nav=[(label, path) for label, path, op in NAV if self.can(op)],
            here=self.request.url.path,
            flash=FLASHES.get(self.request.query_params.get("done", "")),
            form=self.form(),
            **context,
        )


# What a 303 after an action says on the page it lands on (``?done=...``): fixed texts, so
# nothing a link carries is shown.
FLASHES = {
    "approve": "Withdrawal approved and sent to its payment route.",
    "reject": "Withdrawal rejected; the held amount is back on the balance.",
    "resolve": "Withdrawal resolved.",
    "replay": "Event queued for delivery again.",
    "settle": "Round settled.",
}


def _utc(raw: str) -> str:
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        return raw  # the API's rule then says what is wrong
    return raw + "Z" if moment.tzinfo is None else raw


Screen = Callable[[Visit], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


async def visit_of(request: Request, conn: asyncpg.Connection, w: Wallet) -> Visit | None:
    """The signed-in visit of ``request`` on ``conn``, or None when there is no live session."""
    session = await auth.current(request, conn, w)
    if session is None:
        return None
    principal = session.principal
    actor = Actor(principal.actor, http.request_id(request))
    return Visit(request, session, Call(w, conn, principal, actor, request))


def screen(op: Operation, template: str) -> Callable[[Screen], Endpoint]:
    """A page standing on the API operation ``op``: signed in, and of a role ``op`` allows (403
    otherwise). The API's 400 re-renders ``template`` with its message; its 404 is a 404 page."""

    def wrap(show: Screen) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            w = wallet(request)
            async with w.pool.acquire(timeout=w.settings.db_acquire_timeout_ms / 1000) as conn:
                visit = await visit_of(request, conn, w)
                if visit is None:
                    return redirect(request, "/sign-in")
                if not visit.can(op):
                    return forbidden(visit, op)
                try:
                    return await show(visit)
                except InvalidRequest as exc:
                    return visit.render(template, 400, error=exc.message)
                except NotFound as exc:
                    return visit.render("missing.html", 404, error=exc.message)

        endpoint.__name__ = show.__name__
        return endpoint

    return wrap


def forbidden(visit: Visit, op: Operation) -> HTMLResponse:
    what = op.summary[0].lower() + op.summary[1:]
    return visit.render(
        "forbidden.html",
        403,
        error=f"The {visit.session.principal.role} role may not {what}.",
    )


def refusal(visit: Visit, op: Operation, sent_csrf: str | None) -> HTMLResponse | None:
    """Why a POST of ``visit`` for ``op`` is refused (403: the CSRF checks, then the role), or
    None when it may go on."""
    if not auth.csrf_ok(visit.request, visit.session, sent_csrf):
        return visit.render(
            "forbidden.html",
            403,
            error="This form did not come from this back office's page "
            "(CSRF check failed). Open the page again and resubmit.",
        )
    if not visit.can(op):
        return forbidden(visit, op)
    return None
