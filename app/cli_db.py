"""What every ``wallet`` command that reads or writes the database shares: who it is in the
audit log, one connection, and the servers it runs against."""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from app import db
from app.audit import Actor
from app.config import Settings
from app.dev import local

T = TypeVar("T")
# Changes made from the command line are audited as the machine user who made them.
CLI_ACTOR = Actor(f"cli:{getpass.getuser()}")


async def with_conn(dsn: str, work: Callable[[asyncpg.Connection, db.Queries], Awaitable[T]]) -> T:
    conn = await db.connect(dsn)
    try:
        return await work(conn, db.Queries.load())
    finally:
        await conn.close()


def run_db(settings: Settings, work: Callable[[asyncpg.Connection, db.Queries], Awaitable[T]]) -> T:
    """``work`` on one connection to the configured database (or the local servers)."""
    with local.services(settings) as s:
        assert s.database_url is not None
        return asyncio.run(with_conn(s.database_url, work))
