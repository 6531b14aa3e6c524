"""The command line, run as ``wallet`` would be."""

from __future__ import annotations

import os
import subprocess
import sys


def wallet_cli(
    database_url: str,
    redis_url: str,
    *args: str,
    master: str | None = None,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``wallet <args>`` as a process of its own, with only these servers (and master key, and
    ``env``) from the environment's WALLET_* settings; ``stdin`` as its standard input."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    child_env.update(WALLET_DATABASE_URL=database_url, WALLET_REDIS_URL=redis_url)
    if master is not None:
        child_env["WALLET_MASTER_KEY"] = master
    child_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=child_env,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
