"""The pieces of the wallet command's parser that its modules share: argument types that say
what to write when a value is wrong, the version, and the walk over every command."""

from __future__ import annotations

import argparse
from datetime import date, datetime
from importlib import metadata
from typing import Any

from app import db


def leaves(sub: argparse._SubParsersAction[Any]) -> list[argparse.ArgumentParser]:
    """The parsers of the commands that run (``wallet player show``, not ``wallet player``)."""
    found: list[argparse.ArgumentParser] = []
    for command in dict.fromkeys(sub.choices.values()):
        nested = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
        found += leaves(nested[0]) if nested else [command]
    return found


def progress_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action="store_true",
        help="progress lines on stderr even when it is not a terminal",
    )


def version_text() -> str:
    """The package's version and the schema this code migrates to (its last migration)."""
    latest = db.migrations()[-1]
    return f"wallet {metadata.version('wallet')} (schema {latest.version:03d})"


TIME_HELP = "ISO 8601 with a time zone, e.g. 2026-05-18T00:00:00Z"


def day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid date {text!r}: use YYYY-MM-DD") from None


def utc_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"invalid time {text!r}: use {TIME_HELP}")
    return moment
