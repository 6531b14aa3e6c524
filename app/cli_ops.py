"""The operator's read-and-act commands: ``wallet player show``, ``wallet calls``,
``wallet rounds`` and ``wallet events replay``.

Each calls the service function its operator API route calls, on a connection of its own (as
every database command does), and prints the same objects: ``--json`` gives what the API gives.
"""

from __future__ import annotations

import argparse
from typing import Any

import asyncpg

from app import cli_output, db
from app.cli_db import CLI_ACTOR, run_db
from app.config import Settings
from app.operator import players, postings, reports, rounds
from app.payments import events
from app.web.messages import parse
from app.web.pagination import MAX_LIMIT, PageQuery
from app.web.query import TimeRange

# What `player show` lists of a player's history: enough to answer a call, not a statement.
RECENT = 10


async def player_show(conn: asyncpg.Connection, q: db.Queries, player_id: str) -> dict[str, Any]:
    """The player (balance, status, limits), the latest sessions and postings."""
    player = await players.get_player(conn, q, player_id)
    recent = await postings.transactions(conn, q, player_id, TimeRange(limit=RECENT))
    sessions = await players.list_sessions(conn, q, player_id, PageQuery(limit=RECENT))
    return {
        **cli_output.as_data(player),
        "sessions": cli_output.as_data(sessions.data),
        "recent_transactions": cli_output.as_data(recent.data),
    }


def cmd_player_show(settings: Settings, args: argparse.Namespace) -> int:
    cli_output.show(run_db(settings, lambda c, q: player_show(c, q, args.player_id)), args)
    return 0


def cmd_calls(settings: Settings, args: argparse.Namespace) -> int:
    query = parse(
        reports.CallQuery,
        {
            "provider": args.provider,
            "player_id": args.player,
            "event": args.event,
            "code": args.code,
            "limit": args.limit,
            "cursor": args.cursor,
        },
    )
    page = run_db(settings, lambda c, q: reports.calls(c, q, query, failures_only=args.failures))
    cli_output.show(page, args)
    return 0


def cmd_rounds(settings: Settings, args: argparse.Namespace) -> int:
    if args.player is None and not args.stale:
        raise SystemExit("error: wallet rounds needs --stale or --player P (or both)")
    query = parse(
        rounds.RoundQuery,
        {
            "provider": args.provider,
            "player_id": args.player,
            "state": "stale" if args.stale else args.state,
            "limit": args.limit,
            "cursor": args.cursor,
        },
    )
    page = run_db(
        settings, lambda c, q: rounds.list_rounds(c, q, query, settings.round_stale_seconds)
    )
    cli_output.show(page, args)
    return 0


def cmd_events_replay(settings: Settings, args: argparse.Namespace) -> int:
    replayed = run_db(settings, lambda c, q: events.replay(c, q, args.event_id, CLI_ACTOR))
    cli_output.show(replayed, args)
    return 0


def _page(parser: argparse.ArgumentParser, default: int) -> None:
    parser.add_argument(
        "--limit", type=int, default=default, help=f"at most this many, 1 to {MAX_LIMIT}"
    )
    parser.add_argument("--cursor", help="the next_cursor a previous page printed")


def add_parsers(sub: Any, player: Any) -> None:
    """The commands on the command's subparsers (``player`` is ``wallet player``'s)."""
    show = player.add_parser(
        "show", help="a player's balance, status, limits, sessions and latest postings"
    )
    show.add_argument("player_id")
    show.set_defaults(run=cmd_player_show)

    calls = sub.add_parser(
        "calls",
        help="the seamless call history, newest first",
        description="The webhook calls as the wallet answered them, newest first.",
    )
    calls.add_argument("--failures", action="store_true", help="only the calls answered R1 to R3")
    calls.add_argument("--player", help="only this player's calls")
    calls.add_argument("--provider", help="only this provider's calls")
    calls.add_argument("--event", help="only this event (bet, result...)")
    calls.add_argument("--code", help="only this R-code")
    _page(calls, 20)
    calls.set_defaults(run=cmd_calls)

    listed = sub.add_parser(
        "rounds",
        help="stale rounds, or a player's rounds",
        description="Every player's stale rounds (--stale: open, with a bet not cancelled, "
        "older than WALLET_ROUND_STALE_SECONDS), or one player's rounds (--player).",
    )
    listed.add_argument("--stale", action="store_true", help="only stale rounds")
    listed.add_argument("--player", help="only this player's rounds")
    listed.add_argument("--provider", help="only this provider's rounds")
    listed.add_argument(
        "--state", choices=rounds.STATES, help="only rounds in this state (with --player)"
    )
    _page(listed, 50)
    listed.set_defaults(run=cmd_rounds)

    event_commands = sub.add_parser(
        "events", help="events to the operator's platform"
    ).add_subparsers(dest="action", required=True)
    replay = event_commands.add_parser(
        "replay",
        help="send an event again now, whatever its state (audited as the CLI user)",
    )
    replay.add_argument("event_id")
    replay.set_defaults(run=cmd_events_replay)
