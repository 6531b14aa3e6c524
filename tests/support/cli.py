"""The command line, run as ``wallet`` would be."""

from __future__ import annotations

import os
import subprocess
import sys


def wallet_cli(
    database_url: str, redis_url: str, *args: str, master: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``wallet <args>`` as a process of its own, with only these servers (and master key) from
    the environment's WALLET_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    env.update(WALLET_DATABASE_URL=database_url, WALLET_REDIS_URL=redis_url)
    if master is not None:
        env["WALLET_MASTER_KEY"] = master
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
