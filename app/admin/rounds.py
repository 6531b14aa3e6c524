"""Rounds: a player's (or every player's stale ones), a round's timeline, and settling a stale
round."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from app.admin.actions import Action
from app.admin.pages import Visit, operation_of, screen
from app.operator import players, rounds
from app.web.routing import path_param

LIST = operation_of(rounds.routes, rounds.list_rounds_route)
READ = operation_of(rounds.routes, rounds.get_round)
SETTLE = operation_of(rounds.routes, rounds.settle_round)
PARAMS = ("provider", "player_id", "round_id")


@screen(LIST, "rounds.html")
async def listing(v: Visit) -> Response:
    if not v.form():
        return v.render("rounds.html", rows=[], next_link=None, states=rounds.FILTERS)
    page = await rounds.list_rounds_route(v.call, v.query(rounds.RoundQuery))
    return v.render(
        "rounds.html",
        rows=page.data,
        next_link=v.next_page(page.next_cursor),
        states=rounds.FILTERS,
    )


@screen(READ, "missing.html")
async def timeline(v: Visit) -> Response:
    found = await rounds.get_round(v.call, *(path_param(v.request, p) for p in PARAMS))
    # A round's amounts are in its player's one currency.
    player = await players.get_player(v.call.conn, v.call.w.queries, found.player_id)
    return v.render(
        "round.html",
        round=found,
        currency=player.currency,
        may_settle=found.stale and v.can(SETTLE),
    )


async def _load(v: Visit, params: dict[str, str]) -> dict[str, Any]:
    found = await rounds.get_round(v.call, *(params[p] for p in PARAMS))
    path = "/rounds/" + "/".join(params[p] for p in PARAMS)
    return {
        "item": {
            "Provider": found.provider,
            "Player": found.player_id,
            "Round": found.round_id,
            "State": found.state + (" (stale)" if found.stale else ""),
            "Bets": str(found.bets),
            "Cancelled bets": str(found.cancelled_bets),
            "Results": str(found.results),
        },
        "back": path,
        "settle_actions": rounds.SETTLE_ACTIONS,
    }


settle = Action(
    "settle",
    SETTLE,
    rounds.settle_round,
    "settle.html",
    _load,
    lambda params: "/rounds/" + "/".join(params[p] for p in PARAMS),
    body=rounds.RoundSettle,
    title="Settle this stale round",
    effect="Refund gives back every bet not yet cancelled; close closes the round as it "
    "stands, its bets lost. The provider's late result on it is then refused.",
)
