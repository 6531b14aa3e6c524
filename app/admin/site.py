"""The back office's routes, listed in one place, and its sign-in and sign-out.

Mounted at ``/admin`` by :mod:`app.main`, apart from ``API_ROUTES``: these pages are not part of
the API's document or its role matrix; each names the API operation it stands on instead.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from app.admin import auth, calls, deposits, events, players, records, rounds, withdrawals
from app.admin.pages import page, redirect
from app.state import wallet
from app.web import http

STATIC = Path(__file__).parent / "static"
MAX_SIGN_IN_BYTES = 4096


async def home(request: Request) -> Response:
    return redirect(request, "/players")


async def sign_in_form(request: Request) -> Response:
    return page(request, "sign_in.html")


async def sign_in(request: Request) -> Response:
    """Check the key, start a session, set its cookie. No CSRF token exists before a session:
    the origin check stands in for it (a forged sign-in would only sign the victim in)."""
    w = wallet(request)
    client = request.client.host if request.client else "unknown"
    if not auth.same_origin(request):
        return page(request, "sign_in.html", 403, error="This form did not come from this site.")
    if await auth.too_many_failures(w, client):
        response = page(request, "sign_in.html", 429, error="Too many failed sign-ins: wait.")
        response.headers["Retry-After"] = str(auth.FAILURE_WINDOW_SECONDS)
        return response
    try:
        raw = await http.read_body(request, MAX_SIGN_IN_BYTES)
    except http.BodyTooLarge:
        return page(request, "sign_in.html", 400, error="The form is too large.")
    key = dict(parse_qsl(raw.decode("utf-8", "replace"))).get("api_key", "").strip()
    if not key:
        return page(request, "sign_in.html", 400, error="Enter an API key.")
    async with w.pool.acquire(timeout=w.settings.db_acquire_timeout_ms / 1000) as conn:
        started = await auth.sign_in(conn, w, key, client)
        if started is not None:
            await auth.sign_out(request, conn, w)  # the session this browser had, if any
    if started is None:
        return page(request, "sign_in.html", 401, error="Unknown or revoked API key.")
    signed_in = redirect(request, "/players")
    auth.set_cookie(signed_in, started[0])
    return signed_in


async def sign_out(request: Request) -> Response:
    w = wallet(request)
    if not await http.read_body_first(request, MAX_SIGN_IN_BYTES):
        return page(request, "signed_out.html", 413, error="The form is too large.")
    async with w.pool.acquire(timeout=w.settings.db_acquire_timeout_ms / 1000) as conn:
        session = await auth.current(request, conn, w)
        if session is not None:
            raw = await http.read_body(request, MAX_SIGN_IN_BYTES)  # as read above, kept
            sent = dict(parse_qsl(raw.decode("utf-8", "replace"))).get(auth.CSRF_FIELD)
            if not auth.csrf_ok(request, session, sent):
                return page(request, "signed_out.html", 403, error="CSRF check failed.")
            await auth.sign_out(request, conn, w)
    response = redirect(request, "/sign-in")
    auth.clear_cookie(response)
    return response


PAGES: list[BaseRoute] = [
    Route("/", home, methods=["GET"]),
    Route("/sign-in", sign_in_form, methods=["GET"]),
    Route("/sign-in", sign_in, methods=["POST"]),
    Route("/sign-out", sign_out, methods=["POST"]),
    Route("/players", players.search, methods=["GET"]),
    Route("/players/{player_id}", players.player, methods=["GET"]),
    Route("/players/{player_id}/transactions", players.transactions, methods=["GET"]),
    Route("/calls", calls.calls, methods=["GET"]),
    Route("/calls/{call_id}", calls.call, methods=["GET"]),
    Route("/rounds", rounds.listing, methods=["GET"]),
    Route("/rounds/{provider}/{player_id}/{round_id}", rounds.timeline, methods=["GET"]),
    *rounds.settle.routes("/rounds/{provider}/{player_id}/{round_id}/settle"),
    Route("/deposits", deposits.attention, methods=["GET"]),
    Route("/deposits/{payment_id}", deposits.deposit, methods=["GET"]),
    Route("/withdrawals", withdrawals.attention, methods=["GET"]),
    Route("/withdrawals/{payment_id}", withdrawals.withdrawal, methods=["GET"]),
    *withdrawals.approve.routes("/withdrawals/{payment_id}/approve"),
    *withdrawals.reject.routes("/withdrawals/{payment_id}/reject"),
    *withdrawals.resolve.routes("/withdrawals/{payment_id}/resolve"),
    Route("/events", events.listing, methods=["GET"]),
    *events.replay.routes("/events/{event_id}/replay"),
    Route("/audit", records.audit, methods=["GET"]),
    Route("/ledger", records.ledger, methods=["GET"]),
    Route("/reports/daily", records.daily, methods=["GET"]),
    Route("/reports/psp", records.psp, methods=["GET"]),
    Route("/reports/provider", records.provider, methods=["GET"]),
    Route("/reports/provider", records.provider_upload, methods=["POST"]),
    Mount("/static", StaticFiles(directory=STATIC), name="static"),
]

routes: list[BaseRoute] = [Mount("/admin", routes=PAGES)]
