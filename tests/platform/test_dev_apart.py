"""Dev tools stay apart: what serves production never imports ``app.dev``.

``app/dev/`` holds the embedded servers, local mode and the sandbox PSP, for development, tests
and demos. The ASGI app (``app.main`` and everything it imports, here and when it is created) must
run without them, and no other module may import them, even lazily. The one exception is the
command line (``app/cli.py``, and ``app/cli_db.py`` which its database commands share): it is
also how a developer runs those tools (``wallet serve --demo``, ``wallet sandbox-psp``).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app"
# The command line runs the dev tools too (local servers for --demo, the sandbox PSP).
MAY_IMPORT_DEV = {APP / "cli.py", APP / "cli_db.py"}

IMPORT_THE_APP = """
import sys
from dataclasses import replace

from app.config import Settings
from app.main import create_app

settings = replace(
    Settings.from_env(),
    database_url="postgresql://wallet@127.0.0.1:1/wallet",
    redis_url="redis://127.0.0.1:1/0",
)
create_app(settings)
print(",".join(sorted(m for m in sys.modules if m == "app.dev" or m.startswith("app.dev."))))
"""


def test_the_app_runs_without_importing_dev_code() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    env["WALLET_ADMIN_API_KEY"] = "not-a-real-key"
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_THE_APP],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"app.main imported {done.stdout.strip()}"


def dev_imports(path: Path) -> list[str]:
    """The ``app.dev`` modules a file imports, at any depth of its code."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found += [n for n in names if n == "app.dev" or n.startswith("app.dev.")]
    return found


def test_no_production_module_imports_dev_code() -> None:
    modules = [
        p for p in APP.rglob("*.py") if APP / "dev" not in p.parents and p not in MAY_IMPORT_DEV
    ]
    assert APP / "main.py" in modules and len(modules) > 20
    offenders = {str(p.relative_to(ROOT)): dev_imports(p) for p in modules if dev_imports(p)}
    assert offenders == {}


def test_the_check_sees_an_import_of_dev_code(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        "def f():\n    from app.dev import local\n    import app.dev.devstack\n"
        "from app.dev.sandbox_psp.app import create_sandbox_app\nfrom app.payments import psp\n"
    )
    assert set(dev_imports(planted)) == {
        "app.dev",
        "app.dev.local",
        "app.dev.devstack",
        "app.dev.sandbox_psp.app",
        "app.dev.sandbox_psp.app.create_sandbox_app",
    }
