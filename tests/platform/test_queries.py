"""Named queries (sql/queries/*.sql) and the code that uses them agree: every name the code
reads exists, every query is read somewhere, and every call passes exactly the query's named
parameters, so a renamed or dead query or parameter fails here rather than at the first request
that needs it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from app.db import Queries, Query

ROOT = Path(__file__).resolve().parents[2]
# `q.name`, `self.q.name`, `self._queries.name`, `w.queries.name`, `QUERIES.name` ...
USE = re.compile(r"\b(?:q|queries|_queries|QUERIES|seeding)\.([a-z_][a-z0-9_]*)\b")
CODE = ("app", "loadtests")


def _sources() -> dict[Path, str]:
    return {p: p.read_text() for folder in CODE for p in sorted((ROOT / folder).rglob("*.py"))}


def _queries() -> dict[str, Query]:
    return Queries.load()._statements | Queries.load(ROOT / "loadtests" / "sql")._statements


def _defined() -> set[str]:
    return set(_queries())


def test_every_query_the_code_names_exists() -> None:
    defined = _defined()
    missing = {
        f"{path.relative_to(ROOT)}: {name}"
        for path, text in _sources().items()
        for name in USE.findall(text)
        if name not in defined and name not in ("load",)
    }
    assert not missing, sorted(missing)


def test_every_query_is_used() -> None:
    text = "\n".join(_sources().values())
    # Read by attribute, or named in a string (the ledger check's table of checks).
    unused = {
        name
        for name in _defined()
        if not re.search(rf"\.{name}\b", text) and f'"{name}"' not in text
    }
    assert not unused, sorted(unused)


OWNERS = {"q", "queries", "_queries", "QUERIES", "seeding"}


def _calls() -> list[tuple[str, str, set[str] | None]]:
    """Every call of a named query in the code: where, which, and the keywords it passes (None
    when it passes ``**values``, which only the run can check)."""
    found = []
    for path, text in _sources().items():
        for node in ast.walk(ast.parse(text)):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            query = node.func
            if query.attr == "many":  # q.name.many(rows): the rows' keys are not in the source
                continue
            owner = query.value
            name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", None)
            if name not in OWNERS:
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            keywords = {k.arg for k in node.keywords if k.arg is not None}
            dynamic = any(k.arg is None for k in node.keywords)
            found.append((where, query.attr, None if dynamic else keywords))
    return found


def test_every_call_passes_exactly_the_parameters_of_its_query() -> None:
    queries = _queries()
    calls = [c for c in _calls() if c[1] in queries]
    assert len(calls) > 50, "the walk found too few calls: has the calling style changed?"
    wrong = {
        f"{where} {name}: passes {sorted(keywords)}, takes {sorted(queries[name].params)}"
        for where, name, keywords in calls
        if keywords is not None and keywords != set(queries[name].params)
    }
    assert not wrong, sorted(wrong)


def test_every_query_names_its_parameters() -> None:
    """The two styles never mix: a named query with ``$1`` is refused when loaded."""
    assert _queries(), "loading every query file refuses any that uses $n"
    with pytest.raises(ValueError, match=r"uses \$n"):
        Query("mixed", "SELECT * FROM players WHERE player_id = :player_id AND status = $2")


def test_a_query_compiles_names_once_and_checks_them_on_every_call() -> None:
    query = Query(
        "example",
        """-- Players from :first (this comment names :unused, which the SQL does not use).
        SELECT :first::bigint + :step::int AS next,  -- :first again, then a cast
               now()::date AS day
         WHERE :first > 0""",
    )
    assert query.params == ("first", "step")
    assert query.sql.split() == (
        "SELECT $1::bigint + $2::int AS next, now()::date AS day WHERE $1 > 0".split()
    )
    assert query(step=2, first=1) == (query.sql, 1, 2)
    with pytest.raises(TypeError, match=r"missing \['step'\], unknown \[\]"):
        query(first=1)
    with pytest.raises(TypeError, match=r"missing \[\], unknown \['stepp'\]"):
        query(first=1, step=2, stepp=3)
    with pytest.raises(TypeError, match=r"missing \['step'\], unknown \['stepp'\]"):
        query(first=1, stepp=3)
    assert query.many([{"first": 1, "step": 2}, {"step": 4, "first": 3}]) == (
        query.sql,
        [(1, 2), (3, 4)],
    )


async def test_a_named_query_runs_with_its_casts(services: object) -> None:
    """What asyncpg receives is plain ``$n`` SQL; casts and repeated names still work."""
    import asyncpg

    from tests.fixtures.servers import Services

    assert isinstance(services, Services)
    conn = await asyncpg.connect(services.database_url)
    try:
        query = Query("sum", "SELECT :a::bigint + :b::bigint + :a::bigint AS total")
        assert await conn.fetchval(*query(a=1, b=10)) == 12
    finally:
        await conn.close()
