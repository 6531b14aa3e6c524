"""`wallet serve --demo` does the whole job from its banner: the commands it prints work when run
as printed (through a shell), a deposit goes through the sandbox PSP it runs, and nothing of it
outlives the command.

Real processes on the session's Postgres (a database of its own) and Redis; the data folder is
the test's, so the master key, admin key and sandbox keys are made there."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import orjson
import pytest

from app import db
from app.dev.demo import port_for
from app.dev.devstack import free_port
from tests.fixtures.servers import Services
from tests.support.processes import demo_serving

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Banner:
    text: str

    def value(self, label: str) -> str:
        found = re.search(rf"^  {label}\s+(\S+)", self.text, re.MULTILINE)
        assert found, self.text
        return found.group(1)

    def line_after(self, heading: str) -> str:
        lines = self.text.split("\n")
        start = next(i for i, line in enumerate(lines) if line.startswith(heading)) + 1
        return lines[start].strip()

    def command(self, heading: str) -> str:
        """The shell command printed under ``heading`` (its continued lines with it)."""
        lines = self.text.split("\n")
        start = next(i for i, line in enumerate(lines) if line.startswith(heading)) + 1
        command = [lines[start]]
        while command[-1].endswith("\\"):
            command.append(lines[start + len(command)])
        return "\n".join(command)


@dataclass
class Demo:
    proc: subprocess.Popen[str]
    base: str
    banner: Banner
    log: Path

    @property
    def sandbox_port(self) -> int:
        return int(self.banner.value("sandbox PSP").rsplit(":", 1)[1])


@pytest.fixture
def demo_env(tmp_path: Path, services: Services) -> dict[str, str]:
    """The environment of a newcomer's shell: no WALLET_* but the servers, this checkout first."""
    name = "wallet_demo_" + secrets.token_hex(4)
    database_url = asyncio.run(db.ensure_database(services.database_url, name))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    env.update(
        WALLET_DATA_DIR=str(tmp_path / "data"),
        WALLET_DATABASE_URL=database_url,
        WALLET_REDIS_URL=services.redis_url,
        # The printed `wallet` is the venv's script: make it run this checkout's code.
        PYTHONPATH=str(ROOT),
    )
    return env


@contextmanager
def demo(env: dict[str, str], log: Path) -> Iterator[Demo]:
    with demo_serving(env, log, free_port()) as (proc, base, printed):
        yield Demo(proc, base, Banner(printed), log)


def shell(command: str, env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run(
        command, shell=True, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    answer: dict[str, object] = orjson.loads(done.stdout)
    return answer


def sandbox_processes(port: int) -> list[int]:
    """Pids of sandbox PSPs serving ``port`` (read from /proc: nothing to signal by name)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"sandbox-psp" in argv and str(port).encode() in argv:
            found.append(int(entry.name))
    return found


def port_closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def wait_until(check: object, timeout: float = 10.0) -> bool:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return bool(check())


def approve(link: str) -> None:
    """What the depositor's browser does: open the hosted page, submit its Approve form."""
    page = httpx.get(link)
    assert page.status_code == 200
    action = re.search(r'<form method="post" action="([^"]+/approve)"', page.text)
    assert action, page.text
    done = httpx.post(httpx.URL(link).join(action.group(1)))
    assert 'data-status="succeeded"' in done.text


def balance(base: str, admin: str) -> int:
    answer = httpx.get(
        f"{base}/v1/players/demo-alice", headers={"authorization": f"Bearer {admin}"}
    ).json()
    value: int = answer["balance"]
    return value


def test_the_banner_is_the_whole_demo(demo_env: dict[str, str], tmp_path: Path) -> None:
    with demo(demo_env, tmp_path / "first.log") as first:
        admin = first.banner.value("admin key")
        assert admin.startswith("wk_admin_")
        for label in ("API docs", "back office"):
            assert first.banner.value(label) in (f"{first.base}/docs", f"{first.base}/admin")
        assert httpx.get(f"{first.base}/docs").status_code == 200

        bet = shell(first.banner.command("Place a bet"), demo_env)
        assert bet["code"] == "R0", bet
        before = balance(first.base, admin)

        # The deposit the demo made: its hosted page is in the banner.
        waiting = first.banner.line_after("A deposit of 20.00 EUR for demo-alice waits")
        assert waiting.startswith(f"http://127.0.0.1:{first.sandbox_port}/pay/"), waiting
        approve(waiting)
        # The sandbox's webhook reaches the wallet at the public URL the demo gave it.
        assert wait_until(lambda: balance(first.base, admin) == before + 2000), (
            first.log.read_text()
        )

        deposit = shell(first.banner.command("Make another deposit"), demo_env)
        assert deposit["status"] == "awaiting_method" and deposit["amount"] == 2000, deposit
        approve(str(deposit["redirect_url"]))
        assert wait_until(lambda: balance(first.base, admin) == before + 4000)
        paid = httpx.get(
            f"{first.base}/v1/deposits/{deposit['id']}",
            headers={"authorization": f"Bearer {admin}"},
        ).json()
        assert paid["status"] == "succeeded"

        sandbox_port = first.sandbox_port
        (sandbox_pid,) = sandbox_processes(sandbox_port)
    # Stopping serve (SIGINT, as Ctrl+C) stopped the sandbox child.
    assert first.proc.returncode == 0, first.log.read_text()
    assert port_closed(sandbox_port)
    assert sandbox_pid not in sandbox_processes(sandbox_port)

    key_file = Path(demo_env["WALLET_DATA_DIR"]) / "admin.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().strip() == admin

    with demo(demo_env, tmp_path / "second.log") as second:
        # The same admin key; a bet command of its own, not a duplicate of the first run's.
        assert second.banner.value("admin key") == admin
        assert second.banner.command("Place a bet") != first.banner.command("Place a bet")
        again = shell(second.banner.command("Place a bet"), demo_env)
        assert again["code"] == "R0", again
        assert again["balance"] == before + 4000 - 250
        port = second.sandbox_port
        # Killed without a chance to clean up, serve still leaves no sandbox behind.
        second.proc.send_signal(signal.SIGKILL)
        second.proc.wait(10)
        assert wait_until(lambda: not sandbox_processes(port)), sandbox_processes(port)
        assert wait_until(lambda: port_closed(port))


def test_the_admin_key_of_the_environment_is_not_printed(
    demo_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**demo_env, "WALLET_ADMIN_API_KEY": "wk_admin_" + secrets.token_urlsafe(24)}
    with demo(env, tmp_path / "serve.log") as run:
        assert "admin key      from WALLET_ADMIN_API_KEY" in run.banner.text
        assert env["WALLET_ADMIN_API_KEY"] not in run.banner.text
        assert not (Path(env["WALLET_DATA_DIR"]) / "admin.key").exists()
        # The deposit command reads the key from the shell that has it.
        deposit = shell(run.banner.command("Make another deposit"), env)
        assert str(deposit["redirect_url"]).startswith("http://127.0.0.1:")


def test_routes_given_in_wallet_psps_start_no_sandbox(
    demo_env: dict[str, str], tmp_path: Path
) -> None:
    routes = (
        '[{"name": "elsewhere", "base_url": "http://127.0.0.1:1", "api_key": "k", '
        '"webhook_secret": "s", "currencies": ["EUR"], "methods": ["card"]}]'
    )
    with demo({**demo_env, "WALLET_PSPS": routes}, tmp_path / "serve.log") as run:
        assert "sandbox PSP" not in run.banner.text and "waits at" not in run.banner.text
        # The deposit command is still there, for the routes given.
        assert "/v1/deposits" in run.banner.command("Deposit 20.00 EUR")
        assert not (Path(demo_env["WALLET_DATA_DIR"]) / "sandbox-psp.json").exists()


def _first_log_line(env: dict[str, str], *, terminal: bool) -> str:
    """The first log line of ``wallet serve`` (not the demo), its stderr a terminal or a pipe."""
    port = free_port()
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
    if terminal:
        leader, follower = pty.openpty()
        proc = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower
        )
        os.close(follower)
        reader: IO[bytes] = os.fdopen(leader, "rb", buffering=0)
    else:
        proc = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        reader = proc.stdout
    try:
        text = b""
        deadline = time.monotonic() + 60
        while b"Uvicorn running" not in text and time.monotonic() < deadline:
            try:
                chunk = reader.read(4096) if terminal else reader.readline()
            except OSError:  # the terminal closed: the process is gone
                break
            if not chunk:
                break
            text += chunk
        line = next(line for line in text.decode().splitlines() if "Uvicorn running" in line)
        return line
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        reader.close()


def test_logs_are_text_at_a_terminal_and_json_otherwise(demo_env: dict[str, str]) -> None:
    env = {**demo_env, "WALLET_MASTER_KEY": "A" * 43 + "="}
    at_terminal = _first_log_line(env, terminal=True)
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d INFO uvicorn\.error Uvicorn running on \S+ .*", at_terminal
    )
    piped = orjson.loads(_first_log_line(env, terminal=False))
    assert piped["logger"] == "uvicorn.error" and piped["level"] == "info"
    # A format asked for is kept, at a terminal too.
    asked = {**env, "WALLET_LOG_FORMAT": "json"}
    assert orjson.loads(_first_log_line(asked, terminal=True))["level"] == "info"


def test_the_sandbox_takes_another_port_when_its_own_is_taken() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        other = port_for("127.0.0.1", taken)
        assert other != taken and port_closed(other)
    free = free_port()
    assert port_for("127.0.0.1", free) == free
