"""Named queries (sql/queries/*.sql) and the code that uses them agree: every name the code
reads exists, and every query is read somewhere, so a renamed or dead query fails here rather
than at the first request that needs it."""

from __future__ import annotations

import re
from pathlib import Path

from app.db import Queries

ROOT = Path(__file__).resolve().parents[2]
# `q.name`, `self.q.name`, `self._queries.name`, `w.queries.name`, `QUERIES.name` ...
USE = re.compile(r"\b(?:q|queries|_queries|QUERIES|seeding)\.([a-z_][a-z0-9_]*)\b")
CODE = ("app", "loadtests")


def _sources() -> dict[Path, str]:
    return {p: p.read_text() for folder in CODE for p in sorted((ROOT / folder).rglob("*.py"))}


def _defined() -> set[str]:
    names = set(Queries.load()._statements)
    return names | set(Queries.load(ROOT / "loadtests" / "sql")._statements)


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
