"""Postgres access: the pool factory, the migration runner and the named-query loader.

Query functions elsewhere take a connection, never the pool: the caller owns the transaction.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson

log = logging.getLogger(__name__)

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
# Any migration holds this advisory lock, so two workers starting together apply each file once.
_MIGRATION_LOCK = 0x77616C6C6574  # "wallet"


def sql_dir() -> Path:
    """The project's ``sql/`` folder (``WALLET_SQL_DIR`` overrides, e.g. in an image)."""
    override = os.environ.get("WALLET_SQL_DIR")
    return Path(override) if override else Path(__file__).resolve().parent.parent / "sql"


class Queries:
    """Named SQL statements from ``sql/queries/*.sql``, read once at start-up.

    A file holds blocks that each start with a ``-- name: some_name`` line, in the aiosql way.
    Attribute access returns the statement text; asyncpg prepares and caches it per connection.
    """

    def __init__(self, statements: dict[str, str]) -> None:
        self._statements = statements

    @classmethod
    def load(cls, folder: Path | None = None) -> Queries:
        folder = folder or sql_dir() / "queries"
        statements: dict[str, str] = {}
        for path in sorted(folder.glob("*.sql")):
            parts = _NAME.split(path.read_text())
            for name, body in zip(parts[1::2], parts[2::2], strict=True):
                if name in statements:
                    raise ValueError(f"query {name!r} is defined twice ({path.name})")
                statements[name] = body.strip().rstrip(";")
        return cls(statements)

    def __getattr__(self, name: str) -> str:
        try:
            return self._statements[name]
        except KeyError:
            raise AttributeError(f"no SQL query named {name!r}") from None


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(
            kind,
            schema="pg_catalog",
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            format="text",
        )


async def connect(dsn: str) -> asyncpg.Connection:
    """One connection outside the pool (CLI, seeding), with the same codecs as pooled ones."""
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    await _init_connection(conn)
    return conn


# What a failing server or connection raises: the statement either committed whole or not at all.
# asyncpg raises InternalClientError, not InterfaceError, when it uses a pooled connection that
# the server has terminated (pg_terminate_backend, a restart) before it noticed the close.
CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Released connections skip asyncpg's reset query (``RESET ALL``, ``UNLISTEN *``, advisory
    unlock), one more round trip per request: the wallet never changes session state. Its
    settings are fixed per connection (below) and its advisory locks are per transaction.
    asyncpg still rolls back a transaction left open before this runs."""


async def create_pool(
    dsn: str,
    *,
    min_size: int = 2,
    max_size: int = 10,
    statement_timeout_ms: int = 5000,
    statement_cache_size: int = 100,
) -> asyncpg.Pool:
    """A pool whose connections decode JSON with orjson and cap each statement's run time."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        statement_cache_size=statement_cache_size,
        server_settings={
            "application_name": "wallet",
            "statement_timeout": str(statement_timeout_ms),
            # A connection left idle inside a transaction holds player row locks: bound it.
            "idle_in_transaction_session_timeout": "30000",
            "timezone": "UTC",
        },
    )
    return pool


@dataclass(frozen=True)
class Migration:
    """A numbered, append-only migration: tables, indexes, types, triggers and data changes."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class FunctionFile:
    """One domain's function file: the current definition of its functions, as ``CREATE OR
    REPLACE FUNCTION`` statements that can run again and again (a Flyway repeatable migration)."""

    name: str  # "functions/ledger", as recorded and reported
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations(folder: Path | None = None) -> list[Migration]:
    """The numbered migration files (``migrations/001_name.sql`` under the SQL folder), in order."""
    found = []
    for path in sorted(((folder or sql_dir()) / "migrations").glob("[0-9][0-9][0-9]_*.sql")):
        found.append(Migration(int(path.name[:3]), path.stem, path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two migrations share a number: {versions}")
    return found


def function_files(folder: Path | None = None) -> list[FunctionFile]:
    """The function files (``functions/<domain>.sql`` under the SQL folder), in name order."""
    paths = sorted(((folder or sql_dir()) / "functions").glob("*.sql"))
    return [FunctionFile(f"functions/{path.stem}", path.read_text()) for path in paths]


async def migrate(conn: asyncpg.Connection, folder: Path | None = None) -> list[str]:
    """Bring the schema up to date; the names of what was applied, in order.

    First the numbered migrations not yet recorded, in order. An applied migration whose text
    has changed since is an error, not something to paper over: the fix is a new numbered
    migration. Then the function files: each is applied again when its checksum differs from
    the recorded one, and all of them after any numbered migration ran (a migration may drop
    what a file defines, or change a table a function reads). A function whose signature (its
    argument types, or its result type) changes needs a ``DROP FUNCTION`` in a numbered
    migration first: ``CREATE OR REPLACE`` would add an overload, or refuse.

    All of it is one transaction under one advisory lock: two workers starting together apply
    each thing once, and a file that fails leaves nothing of the run behind.
    """
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_functions (
                   file text PRIMARY KEY,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = dict(await conn.fetch("SELECT version, checksum FROM schema_migrations"))
        for migration in migrations(folder):
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise RuntimeError(
                        f"migration {migration.name} changed after it was applied; "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
            applied.append(migration.name)
            log.info("applied migration %s", migration.name)
        migrated = bool(applied)
        recorded = dict(await conn.fetch("SELECT file, checksum FROM schema_functions"))
        for file in function_files(folder):
            if migrated or recorded.get(file.name) != file.checksum:
                await conn.execute(file.sql)
                await conn.execute(
                    """INSERT INTO schema_functions (file, checksum) VALUES ($1, $2)
                       ON CONFLICT (file) DO UPDATE
                       SET checksum = excluded.checksum, applied_at = now()""",
                    file.name,
                    file.checksum,
                )
                applied.append(file.name)
                log.info("applied %s", file.name)
    return applied


async def ensure_database(dsn: str, name: str) -> str:
    """Create database ``name`` on the server of ``dsn`` if missing; the DSN of that database."""
    conn = await asyncpg.connect(dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(dsn, name)


def with_database(dsn: str, name: str) -> str:
    """``dsn`` pointing at database ``name`` instead."""
    base, _, query = dsn.partition("?")
    scheme, _, rest = base.partition("://")
    authority = rest.split("/", 1)[0]
    return f"{scheme}://{authority}/{name}" + (f"?{query}" if query else "")


def record(row: asyncpg.Record | None) -> dict[str, Any] | None:
    """A row as a plain dict (None stays None)."""
    return dict(row) if row is not None else None
