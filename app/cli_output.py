"""What a ``wallet`` command prints: JSON for machines, plain tables for people.

JSON with ``--json``, or whenever stdout is not a terminal (a pipe or a file keeps getting what
scripts parse); tables at a terminal, or with ``--table``. Either way the same data: a table is
read off the JSON form of the result, so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson
from pydantic_core import to_jsonable_python

# A cell wider than this is cut: a table is for reading, the JSON for every byte.
MAX_CELL = 48


def add_flags(parser: argparse.ArgumentParser) -> None:
    """``--json`` / ``--table`` on a command that prints a result."""
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="print JSON (the default in a pipe)")
    shown.add_argument(
        "--table", action="store_true", help="print tables (the default at a terminal)"
    )


def as_data(obj: Any) -> Any:
    """The JSON form of a result; a typed answer (or a list of them) as the API shows it."""
    return to_jsonable_python(obj, by_alias=True)


def wants_json(args: argparse.Namespace) -> bool:
    if getattr(args, "json", False):
        return True
    if getattr(args, "table", False):
        return False
    return not sys.stdout.isatty()


def show(obj: Any, args: argparse.Namespace) -> None:
    data = as_data(obj)
    if wants_json(args):
        print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render(data))


def render(data: Any) -> str:
    """A result as plain text: a mapping as ``name  value`` lines, a list of objects (a page's
    ``data``, a player's sessions) as a table under its name."""
    if isinstance(data, list):
        return table(data)
    if not isinstance(data, dict):
        return cell(data)
    if isinstance(data.get("data"), list):  # a page: its rows, then where the next begins
        rest = {k: v for k, v in data.items() if k != "data" and v is not None}
        return "\n\n".join([table(data["data"]), *([render(rest)] if rest else [])])
    pairs: list[tuple[str, Any]] = []
    sections: list[str] = []
    for name, value in data.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            sections.append(f"{name}:\n{_indent(table(value))}")
        elif isinstance(value, dict) and value:
            sections.append(f"{name}:\n{_indent(render(value))}")
        else:
            pairs.append((name, value))
    width = max((len(name) for name, _ in pairs), default=0)
    lines = [f"{name.ljust(width)}  {cell(value)}" for name, value in pairs]
    return "\n\n".join(part for part in ["\n".join(lines), *sections] if part)


def table(rows: list[Any]) -> str:
    """Rows of objects as aligned columns (the union of their keys, in order of appearance)."""
    if not rows:
        return "(none)"
    if not all(isinstance(r, dict) for r in rows):
        return "\n".join(cell(r) for r in rows)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    out = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    out += [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(out)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if value == [] or value == {}:
        return "(none)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    # A value chosen by someone else (a request id, a reason) must not move the cursor.
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def _indent(text: str) -> str:
    return "\n".join("  " + line if line else line for line in text.splitlines())
