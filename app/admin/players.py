"""Player search, the player page (balance, status, limits, sessions, transactions, rounds, calls)
and a player's transactions."""

from __future__ import annotations

from starlette.responses import Response

from app.admin.pages import Visit, operation_of, redirect, screen
from app.fields import IDENTIFIER, IDENTIFIER_RULE
from app.operator import players, postings, rounds
from app.operator.reports import CallQuery, history, list_calls
from app.web.errors import InvalidRequest
from app.web.pagination import PageQuery
from app.web.query import TimeRange
from app.web.routing import path_param

LIST = operation_of(players.routes, players.list_players)
READ = operation_of(players.routes, players.get_player_route)
TRANSACTIONS = operation_of(postings.routes, postings.list_player_transactions)
ROUNDS = operation_of(rounds.routes, rounds.list_rounds_route)
CALLS = operation_of(history.routes, list_calls)
SESSIONS = operation_of(players.routes, players.list_player_sessions)
SHOWN = 10  # of each list on the player page; the whole list is a link away


@screen(LIST, "players.html")
async def search(v: Visit) -> Response:
    wanted = v.form().get("player_id")
    if wanted is not None:
        if IDENTIFIER.fullmatch(wanted) is None:
            raise InvalidRequest(f"player_id must be {IDENTIFIER_RULE}")
        return redirect(v.request, f"/players/{wanted}")
    page = await players.list_players(v.call, v.query(players.PlayerQuery))
    return v.render(
        "players.html",
        rows=page.data,
        next_link=v.next_page(page.next_cursor),
        statuses=players.STATUSES,
    )


@screen(READ, "missing.html")
async def player(v: Visit) -> Response:
    player_id = path_param(v.request, "player_id")
    found = await players.get_player_route(v.call, player_id)
    first = {"limit": SHOWN}
    transactions = (
        await postings.list_player_transactions(v.call, player_id, TimeRange.model_validate(first))
        if v.can(TRANSACTIONS)
        else None
    )
    played = (
        await rounds.list_rounds_route(
            v.call, rounds.RoundQuery.model_validate({**first, "player_id": player_id})
        )
        if v.can(ROUNDS)
        else None
    )
    calls = (
        await list_calls(v.call, CallQuery.model_validate({**first, "player_id": player_id}))
        if v.can(CALLS)
        else None
    )
    sessions = (
        await players.list_player_sessions(v.call, player_id, PageQuery.model_validate(first))
        if v.can(SESSIONS)
        else None
    )
    return v.render(
        "player.html",
        player=found,
        transactions=transactions,
        rounds=played,
        calls=calls,
        sessions=sessions,
    )


@screen(TRANSACTIONS, "transactions.html")
async def transactions(v: Visit) -> Response:
    player_id = path_param(v.request, "player_id")
    page = await postings.list_player_transactions(v.call, player_id, v.query(TimeRange))
    return v.render(
        "transactions.html",
        player_id=player_id,
        rows=page.data,
        next_link=v.next_page(page.next_cursor),
    )
