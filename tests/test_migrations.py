"""`wallet migrate` (app/db.py `migrate`): numbered migrations once, function files as the
current source of every function, all in one transaction under one lock (see sql/README.md).

Each test migrates a database of its own, so it can start fresh or break things."""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from app import db
from tests.conftest import Services

# The last migration written before sql/functions/ held every function. Later migrations
# change tables and data, and drop a function whose signature changes; they define none.
LAST_WITH_FUNCTIONS = 13
DEFINES = re.compile(r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+(\w+)\s*\(", re.I | re.M)

# Every function of the public schema but those of extensions (pgcrypto's, were it installed).
OWN_FUNCTIONS = """
    SELECT p.oid::regprocedure::text AS signature, p.xmin::text AS version,
           pg_get_functiondef(p.oid) AS definition
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname = 'public'
       AND NOT EXISTS (SELECT 1 FROM pg_depend d
                        WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                          AND d.deptype = 'e')"""


@pytest.fixture
async def fresh(services: Services) -> AsyncIterator[str]:
    """The DSN of a new, empty database."""
    yield await db.ensure_database(services.database_url, "wallet_mig_" + secrets.token_hex(4))


@pytest.fixture
async def conn(fresh: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(fresh)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def sql_copy(tmp_path: Path) -> Path:
    """A copy of the project's SQL folder, to edit."""
    copy = tmp_path / "sql"
    shutil.copytree(db.sql_dir(), copy)
    return copy


async def functions(conn: asyncpg.Connection) -> dict[str, tuple[str, str]]:
    """signature -> (row version, definition) of every function the project defines."""
    return {
        r["signature"]: (r["version"], r["definition"]) for r in await conn.fetch(OWN_FUNCTIONS)
    }


async def test_every_function_has_its_one_definition_in_a_function_file(
    conn: asyncpg.Connection,
) -> None:
    """Running each function file again over a migrated database rewrites functions that exist,
    with the definitions they already have; between them the files rewrite every function, and
    none twice. So the files are where a reader finds the function as it runs."""
    await db.migrate(conn)
    before = await functions(conn)
    assert before, "no functions found"
    defined_by: dict[str, list[str]] = {}
    for file in db.function_files():
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute(file.sql)
            after = await functions(conn)
        finally:
            await tx.rollback()
        # Same set of functions: the file creates none the database lacks (a new signature).
        assert set(after) == set(before), f"{file.name} defines a function the database lacks"
        for signature, (version, definition) in after.items():
            if version != before[signature][0]:  # the row was rewritten by this file
                defined_by.setdefault(signature, []).append(file.name)
                assert definition == before[signature][1], f"{signature} differs in {file.name}"
    assert {s: files for s, files in defined_by.items() if len(files) > 1} == {}
    assert sorted(set(before) - set(defined_by)) == [], "functions in no function file"
    # And each CREATE in the files is one of them (no statement shadowed by a later one).
    creates = [name for f in db.function_files() for name in DEFINES.findall(f.sql)]
    assert len(creates) == len(before)


def test_later_migrations_define_no_function() -> None:
    """A function's current source is its function file; a numbered migration after the switch
    may drop one (a signature change), never define one, or there would be two sources."""
    for migration in db.migrations():
        if migration.version > LAST_WITH_FUNCTIONS:
            assert not DEFINES.findall(migration.sql), migration.name
    for file in db.function_files():
        statements = len(DEFINES.findall(file.sql))
        assert len(re.findall(r"CREATE OR REPLACE FUNCTION", file.sql)) == statements, file.name


async def test_a_fresh_database_applies_everything_once_then_nothing(
    conn: asyncpg.Connection,
) -> None:
    migrations = [m.name for m in db.migrations()]
    files = [f.name for f in db.function_files()]
    assert await db.migrate(conn) == migrations + files
    assert await db.migrate(conn) == []
    recorded = await conn.fetch("SELECT file, checksum FROM schema_functions ORDER BY file")
    assert [tuple(r) for r in recorded] == [(f.name, f.checksum) for f in db.function_files()]


async def test_a_changed_function_file_is_applied_again_and_only_it(
    conn: asyncpg.Connection, sql_copy: Path
) -> None:
    await db.migrate(conn, sql_copy)
    operator = sql_copy / "functions" / "operator.sql"
    operator.write_text(
        operator.read_text()
        + "\nCREATE OR REPLACE FUNCTION wallet_test_marker() RETURNS integer"
        + " LANGUAGE sql AS $$ SELECT 7 $$;\n"
    )
    versions = await functions(conn)
    assert await db.migrate(conn, sql_copy) == ["functions/operator"]
    assert await conn.fetchval("SELECT wallet_test_marker()") == 7
    after = await functions(conn)
    # The other files' functions were not touched; the changed file's were rewritten.
    operator_functions = {"wallet_adjust", "wallet_set_limit"}
    for signature, (version, _) in versions.items():
        rewritten = signature.split("(")[0] in operator_functions
        assert (after[signature][0] != version) == rewritten, signature
    checksum = await conn.fetchval(
        "SELECT checksum FROM schema_functions WHERE file = 'functions/operator'"
    )
    assert checksum == db.FunctionFile("functions/operator", operator.read_text()).checksum
    assert await db.migrate(conn, sql_copy) == []


async def test_a_new_migration_applies_every_function_file_again(
    conn: asyncpg.Connection, sql_copy: Path
) -> None:
    """A migration may drop what a file defines (here, as a signature change would, or through
    DROP TYPE ... CASCADE); the files run after it, so the function is back."""
    await db.migrate(conn, sql_copy)
    (sql_copy / "migrations" / "900_drop.sql").write_text(
        "DROP FUNCTION seamless_in_scope(text, text);\n"
    )
    files = [f.name for f in db.function_files()]
    assert await db.migrate(conn, sql_copy) == ["900_drop", *files]
    assert await conn.fetchval("SELECT to_regprocedure('seamless_in_scope(text, text)')")


async def test_a_failing_function_file_leaves_nothing_of_the_run(
    conn: asyncpg.Connection, sql_copy: Path
) -> None:
    await db.migrate(conn, sql_copy)
    before = await functions(conn)
    (sql_copy / "migrations" / "900_table.sql").write_text("CREATE TABLE wallet_test_t (x int);\n")
    payments = sql_copy / "functions" / "payments.sql"
    payments.write_text(
        payments.read_text()
        + "\nCREATE OR REPLACE FUNCTION wallet_test_broken() RETURNS int LANGUAGE sql AS $$"
        + " SELECT FROM nowhere $$;\n"
    )
    with pytest.raises(asyncpg.PostgresError):
        await db.migrate(conn, sql_copy)
    assert await conn.fetchval("SELECT to_regclass('wallet_test_t')") is None
    assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == max(
        m.version for m in db.migrations()
    )
    assert await functions(conn) == before
    checksums = dict(await conn.fetch("SELECT file, checksum FROM schema_functions"))
    assert checksums == {f.name: f.checksum for f in db.function_files()}


async def test_a_failing_first_migrate_leaves_an_empty_database(
    conn: asyncpg.Connection, sql_copy: Path
) -> None:
    seamless = sql_copy / "functions" / "seamless.sql"
    seamless.write_text(seamless.read_text() + "\nCREATE OR REPLACE FUNCTION oops(;\n")
    with pytest.raises(asyncpg.PostgresSyntaxError):
        await db.migrate(conn, sql_copy)
    for table in ("schema_migrations", "schema_functions", "ledger_transactions"):
        assert await conn.fetchval("SELECT to_regclass($1)", table) is None
    assert await db.migrate(conn) != []


async def test_an_edited_migration_is_refused(conn: asyncpg.Connection, sql_copy: Path) -> None:
    await db.migrate(conn, sql_copy)
    (first,) = (sql_copy / "migrations").glob("001_*.sql")
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(RuntimeError, match="changed after it was applied"):
        await db.migrate(conn, sql_copy)


async def test_two_migrates_at_once_apply_each_thing_once(fresh: str) -> None:
    """Two workers starting together on a fresh database: one applies everything, the other
    waits on the lock and then finds nothing to do."""
    conns = [await asyncpg.connect(fresh) for _ in range(2)]
    try:
        results = await asyncio.gather(*(db.migrate(c) for c in conns))
        everything = [m.name for m in db.migrations()] + [f.name for f in db.function_files()]
        assert sorted(results, key=len) == [[], everything]
        count = await conns[0].fetchval("SELECT count(*) FROM schema_migrations")
        assert count == len(db.migrations())
    finally:
        for c in conns:
            await c.close()
