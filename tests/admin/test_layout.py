"""What the back office is made of: its files ship with the package, it asks nothing of another
origin, and what each role sees is read off the API operations' roles."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

from starlette.types import ASGIApp

from app.admin.nav import NAV
from app.admin.pages import templates
from app.ledger.service import CHECKS
from app.operator.reports import LedgerCheck
from app.web.auth import ROLES
from tests.fixtures.app import Operator
from tests.support.backoffice import api_key, desk
from tests.support.keys import ADMIN_KEY

ROOT = Path(__file__).resolve().parents[2]
ADMIN = ROOT / "app" / "admin"


def test_templates_and_static_files_are_package_data() -> None:
    with (ROOT / "pyproject.toml").open("rb") as f:
        patterns = tomllib.load(f)["tool"]["setuptools"]["package-data"]["app"]
    files = [p for d in ("templates", "static") for p in (ADMIN / d).iterdir()]
    assert files
    for path in files:
        name = str(path.relative_to(ROOT / "app"))
        assert any(fnmatch.fnmatch(name, p) for p in patterns), name


def test_no_page_names_another_origin_or_carries_a_script() -> None:
    for path in (ADMIN / "templates").iterdir():
        html = path.read_text()
        assert not re.search(r"(src|href|action)=\"(https?:)?//", html), path.name
        assert "<script" not in html and " style=" not in html and " on" + "click" not in html


async def test_each_role_sees_the_screens_its_operations_allow(
    asgi: ASGIApp, operator: Operator
) -> None:
    for role in ROLES:
        key = ADMIN_KEY if role == "admin" else (await api_key(operator, role))["key"]
        async with desk(asgi) as d:
            await d.sign_in(key)
            page = await d.get("/admin/players")
        shown = set(re.findall(r'<a href="/admin(/[a-z/]+)"(?: class="on")?>', page))
        wanted = {path for _, path, op in NAV if role in op.roles}
        assert shown >= wanted and not ({p for _, p, _ in NAV} - wanted) & shown, role


def test_a_broken_ledger_is_shown_with_what_broke() -> None:
    """Rendered alone: the session's own ledger must stay whole (its final check)."""
    broken = LedgerCheck(ok=False, problems={"negative_balances": [{"player_id": "pl-1"}]})
    html = templates.get_template("ledger.html").render(base="/admin", check=broken, checks=CHECKS)
    assert "found problems" in html and "pl-1" in html and "Every invariant holds" not in html
    assert html.count("broken</span>") == 1 and html.count("holds</span>") == len(CHECKS) - 1
