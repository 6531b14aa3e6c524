"""``wallet serve`` as a process of its own, as an operator runs it, and waiting for it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.config import Settings
from app.dev.devstack import free_port
from tests.support.keys import ADMIN_KEY, MASTER_KEY


@dataclass
class WalletProcess:
    """A ``wallet serve`` process (the uvicorn supervisor when it runs several workers)."""

    base: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def start_wallet(
    settings: Settings, log: Path, *, workers: int, env: dict[str, str] | None = None
) -> WalletProcess:
    """``wallet serve`` on a free port against the session's Postgres and Redis, as an operator
    runs it: every setting from the environment, nothing inherited from the test process."""
    assert settings.database_url is not None and settings.redis_url is not None
    port = free_port()
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    child_env.update(
        WALLET_DATABASE_URL=settings.database_url,
        WALLET_REDIS_URL=settings.redis_url,
        WALLET_ADMIN_API_KEY=ADMIN_KEY,
        WALLET_MASTER_KEY=MASTER_KEY,
        WALLET_LOG_FORMAT="text",
        **(env or {}),
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
            + ["--workers", str(workers)],
            env=child_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: cleaned up whole, and only it
        )
    return WalletProcess(f"http://127.0.0.1:{port}", proc, log)


def wait_ready(*servers: WalletProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    for server in servers:
        while True:
            if server.proc.poll() is not None:
                raise AssertionError(
                    f"wallet serve exited with {server.proc.returncode}:\n" + server.output()
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.base}/readyz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"{server.base} not ready in {timeout} s:\n" + server.output())
            time.sleep(0.1)


def stop_wallet(server: WalletProcess, timeout: float = 20) -> int | None:
    """SIGTERM, then wait; a process group that outlives ``timeout`` is killed (the supervisor's
    workers with it). The exit status, or None when it had to be killed."""
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
    try:
        return server.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(5)
        return None
    finally:
        # Workers of a supervisor that died first would be orphans: end the group, by its id.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.proc.pid, signal.SIGKILL)


def wait_for_text(path: Path, text: str, proc: subprocess.Popen[str], timeout: float = 30) -> str:
    """What ``proc`` wrote to ``path``, once it holds ``text`` (a banner printed after start)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        written = path.read_text()
        if text in written:
            return written
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode} before printing {text!r}")
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not printed in {timeout} s")


def wait_for(url: str, proc: subprocess.Popen[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"wallet serve exited early with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready in {timeout} s")


@contextlib.contextmanager
def demo_serving(
    env: dict[str, str], log: Path, port: int
) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """``wallet serve --demo --port PORT``, its output in ``log``: (the process, its base URL,
    what it printed) once it serves and has printed its banner. Stopped at the end with SIGINT
    (as Ctrl+C), its process group killed if it has not stopped in 30 s."""
    from app.dev.demo import STOP_LINE

    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--demo", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(f"{base}/readyz", proc)
            yield proc, base, wait_for_text(log, STOP_LINE, proc)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
