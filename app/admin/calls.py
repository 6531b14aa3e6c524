"""The seamless call history and its failures, filtered as the API filters them, and one call's
detail. What is shown is what the API's call history answers: the history never stores a
session token, a key or a body (app/seamless/calls.py)."""

from __future__ import annotations

from starlette.responses import Response

from app.admin.pages import Visit, operation_of, screen
from app.operator.reports import EVENTS, CallQuery, history, list_calls, list_failures
from app.seamless.outcome import CODES, MESSAGES, REASONS
from app.web import pagination
from app.web.errors import NotFound
from app.web.routing import path_param

CALLS = operation_of(history.routes, list_calls)
FAILURES = operation_of(history.routes, list_failures)
# Each R-code with its reasons, for the filter's choices.
CODE_CHOICES = [(code, ", ".join(REASONS[code])) for code in CODES]


@screen(CALLS, "calls.html")
async def calls(v: Visit) -> Response:
    failures = v.form().get("failures") == "on"
    query = v.query(CallQuery)
    page = await (list_failures if failures else list_calls)(v.call, query)
    return v.render(
        "calls.html",
        rows=page.data,
        next_link=v.next_page(page.next_cursor),
        events=EVENTS,
        codes=CODE_CHOICES,
        reasons=list(MESSAGES),
        failures=failures,
    )


@screen(CALLS, "missing.html")
async def call(v: Visit) -> Response:
    """One call: the history's page that starts at it (its cursor is the id after it)."""
    raw = path_param(v.request, "call_id")
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound(f"call {raw!r} not found")
    wanted = int(raw)
    query = CallQuery.model_validate({"limit": 1, "cursor": pagination.encode([wanted + 1])})
    page = await list_calls(v.call, query)
    if not page.data or page.data[0].id != raw:
        raise NotFound(f"call {raw!r} not found")
    return v.render("call.html", call=page.data[0])
