"""``wallet serve --demo``: demo data, the sandbox PSP as a child process, and the banner.

What a newcomer needs to try the wallet from one command: a provider with a key to sign events
with, two funded players with session tokens, a payment route (the sandbox PSP, run here when
``WALLET_PSPS`` is unset), and a banner with commands that work when pasted as printed.

The admin key, like the master key, is kept in the data folder (:func:`app.dev.local.admin_key`),
so a restarted demo and the back office signed in with it agree. The provider key is rotated on each
run instead: keys are shown only when made, and the one of the previous banner stays valid as the
provider's previous key.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

from app import db
from app.audit import Actor
from app.config import Settings
from app.dev import local
from app.dev.sandbox_psp import server as sandbox_server
from app.money import major_units
from app.operator import adjustments, players, providers
from app.payments.models import PaymentRequest
from app.payments.psp import build_psps
from app.payments.service import Payments

ACTOR = Actor("cli:demo")
PROVIDER = "demo"
GAME = "demo-slot"
PLAYERS = {"demo-alice": 100_000, "demo-bob": 50_000}
CURRENCY = "EUR"
# The demo's sessions last a working day, longer than WALLET_SESSION_TTL_SECONDS's default: a
# demo left open over lunch still takes the printed bet. A restart issues new ones.
SESSION_SECONDS = 8 * 3600
DEPOSIT = 2000  # what the demo's deposits are for, in minor units
DEPOSIT_TEXT = f"{major_units(DEPOSIT, CURRENCY)} {CURRENCY}"
SANDBOX_KEYS_FILE = "sandbox-psp.json"
SANDBOX_PORT = 8090
SANDBOX_ROUTE = "sandbox"
# What the demo routes to the sandbox: the players' currency, paid by card.
SANDBOX_CURRENCIES = (CURRENCY,)
SANDBOX_METHODS = ("card",)


@dataclass(frozen=True)
class Demo:
    """What :func:`setup` made: the provider's new key and a session token per player."""

    key_id: str
    key: str
    sessions: dict[str, str]


@dataclass(frozen=True)
class SandboxPsp:
    """A running sandbox PSP and the credentials the wallet calls it with."""

    url: str
    api_key: str
    webhook_secret: str
    pid: int

    def routes(self) -> str:
        """``WALLET_PSPS`` for a wallet that sends its EUR card payments here."""
        route = {
            "name": SANDBOX_ROUTE,
            "kind": "sandbox",
            "base_url": self.url,
            "api_key": self.api_key,
            "webhook_secret": self.webhook_secret,
            "currencies": list(SANDBOX_CURRENCIES),
            "methods": list(SANDBOX_METHODS),
        }
        return json.dumps([route])


def _sandbox_keys(settings: Settings) -> tuple[str, str]:
    # Kept so that a restarted sandbox and wallet agree, and webhooks of payments that a previous
    # run started still verify (the sandbox forgets the payments, the wallet does not).
    text = local.kept_secret(
        settings.data_dir / SANDBOX_KEYS_FILE,
        lambda: json.dumps(
            {
                "api_key": "sk_sandbox_" + secrets.token_urlsafe(24),
                "webhook_secret": "whsec_" + secrets.token_urlsafe(32),
            }
        ),
    )
    keys = json.loads(text)
    return str(keys["api_key"]), str(keys["webhook_secret"])


def port_for(host: str, preferred: int) -> int:
    """``preferred`` if nothing listens there, else a free port the kernel picks."""
    for port in (preferred, 0):
        with socket.socket() as sock:
            # As uvicorn binds: connections of a sandbox that just stopped (TIME_WAIT) do not
            # make the port taken, only a listener does.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                continue
            chosen: int = sock.getsockname()[1]
            return chosen
    raise OSError(f"no free port on {host}")


@contextmanager
def sandbox_psp(
    settings: Settings, host: str = "127.0.0.1", port: int = SANDBOX_PORT
) -> Iterator[SandboxPsp]:
    """``wallet sandbox-psp`` as a child process, ready when entered and stopped on exit.

    A child rather than in-process, so that ``--workers N`` needs no change: every worker calls
    the same URL. It stops with ``wallet serve`` however that ends: here on a normal exit, by
    watching its parent (:func:`app.dev.sandbox_psp.server.watch_parent`) if it is killed.
    """
    api_key, webhook_secret = _sandbox_keys(settings)
    port = port_for(host, port)
    url = f"http://{host}:{port}"
    env = {
        **os.environ,
        sandbox_server.API_KEY_VAR: api_key,
        sandbox_server.WEBHOOK_SECRET_VAR: webhook_secret,
        sandbox_server.PARENT_PID_VAR: str(os.getpid()),
    }
    command = [sys.executable, "-m", "app.cli", "sandbox-psp", "--host", host, "--port", str(port)]
    # Its own banner would repeat what ours says; its log lines (stderr) stay.
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    try:
        _wait_ready(f"{url}/healthz", proc)
        yield SandboxPsp(url, api_key, webhook_secret, proc.pid)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the sandbox PSP exited with status {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the sandbox PSP did not answer {url} within {timeout:.0f} s")


async def setup(conn: asyncpg.Connection, q: db.Queries, master: bytes) -> Demo:
    """A demo provider with a fresh key, and two funded players with fresh sessions."""
    if await conn.fetchval(*q.provider_exists(code=PROVIDER)) is None:
        created = await providers.create_provider(
            conn, q, PROVIDER, "Demo provider", ACTOR, master_key=master
        )
        key = created.keys[0]
    else:
        # Keys are shown once only: a new run rotates to a new key it can show.
        rotated = await providers.rotate_key(conn, q, PROVIDER, ACTOR, master_key=master)
        key = rotated.keys[0]
    sessions = {}
    for player_id, funds in PLAYERS.items():
        player, _ = await players.create_player(conn, q, player_id, CURRENCY, ACTOR)
        if player.balance == 0:
            await adjustments.adjust(
                conn,
                q,
                player_id,
                funds,
                "demo funding",
                f"demo-funding-{player_id}-{secrets.token_hex(4)}",
                ACTOR,
            )
        session = await players.issue_session(conn, q, player_id, PROVIDER, GAME, SESSION_SECONDS)
        sessions[player_id] = session.session_token
    assert key.key is not None  # a key just made is shown
    return Demo(key.key_id, key.key, sessions)


async def first_deposit(dsn: str, routes: Settings, public_url: str) -> str:
    """The hosted page of a new deposit for the first player, made through the payments rules as
    ``POST /v1/deposits`` makes one (``routes``: settings with the PSP routes to use), so the
    banner can give a link to open. Its webhook comes once the page is approved: by then the
    wallet serves at ``public_url``."""
    pool = await db.create_pool(dsn, min_size=1, max_size=2)
    try:
        async with httpx.AsyncClient() as http:
            payments = Payments(
                pool,
                db.Queries.load(),
                build_psps(routes.psps, http),
                webhook_base=f"{public_url.rstrip('/')}/v1/psp",
            )
            request = PaymentRequest(next(iter(PLAYERS)), DEPOSIT, CURRENCY, SANDBOX_METHODS[0])
            created = await payments.create_deposit(request, f"demo-{secrets.token_hex(8)}")
    finally:
        await pool.close()
    link: str = created["redirect_url"]
    return link


def _wallet_command() -> str:
    """How to run ``wallet`` from the shell that runs this one: the venv's, relative if under
    the current folder (``.venv/bin/wallet`` after ``make run``)."""
    exe = Path(sys.executable).parent / "wallet"
    if not exe.exists():
        return "wallet"
    try:
        return str(exe.relative_to(Path.cwd()))
    except ValueError:
        return str(exe)


def banner(
    demo: Demo, url: str, admin: str | None, psp: SandboxPsp | None, deposit_page: str | None
) -> str:
    """What to open and paste; ``admin`` is None when it came from ``WALLET_ADMIN_API_KEY`` (not
    printed: the shell has it); ``deposit_page`` is the hosted page of :func:`first_deposit`."""
    alice = next(iter(demo.sessions))
    tx, rd, dep = (f"{p}-{secrets.token_hex(4)}" for p in ("tx", "rd", "dep"))
    bearer = "$WALLET_ADMIN_API_KEY" if admin is None else admin
    deposit = json.dumps(
        {"player_id": alice, "amount": DEPOSIT, "currency": CURRENCY, "method": "card"},
        separators=(",", ":"),
    )
    lines = [
        "",
        "Wallet demo",
        f"  operator API   {url}  (Authorization: Bearer <admin key>)",
        f"  API docs       {url}/docs  (Authorize with the admin key, then Try it out)",
        f"  back office    {url}/admin  (sign in with the admin key)",
        "  admin key      " + ("from WALLET_ADMIN_API_KEY" if admin is None else admin),
    ]
    if psp is not None:
        lines.append(f"  sandbox PSP    {psp.url}  (route {SANDBOX_ROUTE!r}: EUR card payments)")
    lines += [
        f"  provider       {PROVIDER}  key_id {demo.key_id}",
        f"  provider key   {demo.key}   (base64, AES-256-GCM)",
    ]
    for player_id, token in demo.sessions.items():
        lines.append(f"  player         {player_id}  session_token {token}  (valid 8 h)")
    lines += [
        "",
        "Place a bet (the wallet command seals the event, posts it and opens the answer):",
        f"  WALLET_PROVIDER_KEY={demo.key} \\",
        f"  {_wallet_command()} send --url {url} --provider {PROVIDER} \\",
        f"      bet player_id={alice} session_token={demo.sessions[alice]} \\",
        f"      transaction_id={tx} round_id={rd} game_id={GAME} amount=250 currency={CURRENCY}",
        "  Amounts are integer minor units (250 is 2.50 EUR). The same transaction_id again is a",
        "  retry, answered as a duplicate: change it (and round_id) for another bet.",
        "",
    ]
    if deposit_page is not None:
        lines += [
            f"A deposit of {DEPOSIT_TEXT} for {alice} waits at the sandbox PSP's hosted page:",
            f"  {deposit_page}",
            "  Open it in a browser and Approve: the balance rises.",
            "",
            "Make another deposit (a new Idempotency-Key for each):",
        ]
    else:
        lines.append(f"Deposit {DEPOSIT_TEXT} for {alice} (a new Idempotency-Key for each):")
    lines += [
        f"  curl -s {url}/v1/deposits -H 'authorization: Bearer {bearer}' \\"
        if admin is not None
        else f'  curl -s {url}/v1/deposits -H "authorization: Bearer {bearer}" \\',
        f"      -H 'idempotency-key: {dep}' -H 'content-type: application/json' \\",
        f"      -d '{deposit}'",
        "  Its answer's redirect_url is the hosted page to open.",
        "",
        STOP_LINE,
        "",
    ]
    return "\n".join(lines)


# The banner's last line: where to look for how to stop (and what tests wait for).
STOP_LINE = "Ctrl+C stops the wallet and what it started for the demo (servers, PSP)."


def announce_when_listening(text: str, host: str, port: int, timeout: float = 60) -> None:
    """Print ``text`` once ``host:port`` accepts connections, from a thread of its own: the
    banner comes after the server's "running on" line, so its commands work when pasted."""

    def wait_and_print() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((host, port), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        print(text, flush=True)

    threading.Thread(target=wait_and_print, name="demo-banner", daemon=True).start()
