"""``wallet sandbox-psp``: the sandbox PSP as a separate process, configured from the environment.

``WALLET_SANDBOX_API_KEY`` and ``WALLET_SANDBOX_WEBHOOK_SECRET`` are generated and printed when
unset; ``WALLET_SANDBOX_PUBLIC_URL`` (the base of the hosted page links) defaults to where it
listens; ``WALLET_SANDBOX_FEE_BPS`` sets the settlement fee. ``WALLET_SANDBOX_PARENT_PID``
(set by ``wallet serve --demo``, which runs it as a child) makes it stop when that process is gone,
even one killed without the chance to stop it.
"""

from __future__ import annotations

import os
import secrets
import signal
import threading
import time
from collections.abc import Mapping

from app.dev.sandbox_psp.app import create_sandbox_app
from app.dev.sandbox_psp.config import SandboxConfig

API_KEY_VAR = "WALLET_SANDBOX_API_KEY"
WEBHOOK_SECRET_VAR = "WALLET_SANDBOX_WEBHOOK_SECRET"
PUBLIC_URL_VAR = "WALLET_SANDBOX_PUBLIC_URL"
FEE_BPS_VAR = "WALLET_SANDBOX_FEE_BPS"
PARENT_PID_VAR = "WALLET_SANDBOX_PARENT_PID"


def config_from_env(
    env: Mapping[str, str], host: str, port: int
) -> tuple[SandboxConfig, dict[str, str]]:
    """The sandbox's config, and the variables that were unset and got generated values."""
    generated: dict[str, str] = {}
    api_key = env.get(API_KEY_VAR) or generated.setdefault(
        API_KEY_VAR, "sk_sandbox_" + secrets.token_urlsafe(24)
    )
    webhook_secret = env.get(WEBHOOK_SECRET_VAR) or generated.setdefault(
        WEBHOOK_SECRET_VAR, "whsec_" + secrets.token_urlsafe(32)
    )
    public_url = env.get(PUBLIC_URL_VAR) or f"http://{host}:{port}"
    fee_text = env.get(FEE_BPS_VAR, "150")
    if not fee_text.isdigit():
        raise ValueError(f"{FEE_BPS_VAR} must be an integer number of basis points")
    config = SandboxConfig(
        api_key=api_key,
        webhook_secret=webhook_secret,
        public_base_url=public_url,
        fee_bps=int(fee_text),
    )
    return config, generated


def watch_parent(pid: int, every: float = 0.5) -> None:
    """SIGTERM to this process (uvicorn's graceful stop) once ``pid`` is no longer its parent.

    Polling the parent id works on every POSIX system, unlike Linux's PR_SET_PDEATHSIG, and an
    orphan is re-parented at once, so the sandbox outlives a killed ``wallet serve`` by at most
    ``every`` seconds.
    """

    def watch() -> None:
        while os.getppid() == pid:
            time.sleep(every)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def serve(host: str, port: int) -> int:
    import uvicorn

    parent = os.environ.get(PARENT_PID_VAR)
    if parent:
        watch_parent(int(parent))
    config, generated = config_from_env(os.environ, host, port)
    lines = ["", "Sandbox PSP (in-memory; nothing survives a restart)"]
    lines.append(f"  listening      http://{host}:{port}")
    lines.append(f"  public URL     {config.base_url}")
    for name, value in generated.items():
        lines.append(f"  {name} (generated)  {value}")
    lines.append("  API            Authorization: Bearer <api key>; see docs/sandbox-psp.md")
    print("\n".join(lines) + "\n", flush=True)
    uvicorn.run(create_sandbox_app(config), host=host, port=port, log_config=None)
    return 0
