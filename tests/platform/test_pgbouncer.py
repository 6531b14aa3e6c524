"""PgBouncer in transaction mode in front of the wallet's Postgres (docs/scaling.md).

Two things break when a transaction-pooling PgBouncer (before 1.21, which Debian 12 ships as 1.18)
stands between asyncpg and Postgres, and both are shown here against a real PgBouncer:

- asyncpg's statement cache: a statement prepared by name on one server connection is used later
  on whichever server connection the next transaction gets, where it does not exist. With
  ``statement_cache_size=0`` asyncpg sends every statement unnamed, parsed again in the same
  message batch as its execution, which PgBouncer keeps on one server connection.
- the settings the wallet's pool sends at connect time: PgBouncer refuses a connection carrying a
  startup parameter it does not know, and one it is told to ignore is lost. So those are ignored
  by PgBouncer and set on the server side (``connect_query``) instead.

The config test runs everywhere. The tests that start PgBouncer exist where the ``pgbouncer``
binary is installed (``apt-get install pgbouncer``): the test suite never depends on a system
service, and the manual command and its result on the project's machine are in docs/scaling.md.
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from app import db
from app.client import ProviderClient
from app.config import Settings
from app.dev.devstack import free_port, unprivileged_user
from app.ledger import service as ledger
from tests.fixtures.app import Operator, start_app
from tests.fixtures.servers import Services

PGBOUNCER = shutil.which("pgbouncer")
SCALING = Path(__file__).resolve().parents[2] / "docs" / "scaling.md"

# Startup parameters PgBouncer 1.18 tracks per client itself (its docs, "track_extra_parameters"
# aside); anything else in a startup packet must be in ignore_startup_parameters.
TRACKED = {"client_encoding", "datestyle", "timezone", "standard_conforming_strings"}
TRACKED |= {"application_name"}


def documented_config() -> configparser.ConfigParser:
    """The ``[pgbouncer]`` settings shown in docs/scaling.md (its first ``ini`` block)."""
    block = re.search(r"```ini\n(.*?)```", SCALING.read_text(), re.DOTALL)
    assert block, "docs/scaling.md shows no ini block"
    config = configparser.ConfigParser(interpolation=None)
    config.read_string(block.group(1))
    return config


async def pool_settings(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The keyword arguments the wallet's pool factory hands asyncpg, captured."""
    seen: dict[str, Any] = {}

    async def capture(dsn: str, **kwargs: Any) -> None:
        seen.update(kwargs)

    monkeypatch.setattr(asyncpg, "create_pool", capture)
    await db.create_pool("postgresql://nowhere/none")
    monkeypatch.undo()
    return seen


async def test_the_documented_pgbouncer_config_covers_what_the_wallet_pool_sends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every setting the pool sends at connect time is either tracked by PgBouncer, or ignored by
    it and then set to the same value by ``connect_query`` on the server side. A setting added to
    ``db.create_pool`` without a matching change of the documented config fails here."""
    sent = (await pool_settings(monkeypatch))["server_settings"]
    config = documented_config()
    bouncer = config["pgbouncer"]
    assert bouncer["pool_mode"] == "transaction"
    ignored = {p.strip() for p in bouncer["ignore_startup_parameters"].split(",")}
    connect_query = config["databases"]["wallet"]
    for name, value in sent.items():
        if name.lower() in TRACKED:
            continue
        assert name in ignored, f"{name} is sent by db.create_pool but not ignored by PgBouncer"
        assert f"SET {name} = {value}" in connect_query, f"{name} is not set on the server side"


# --- against a real PgBouncer, where it is installed ---------------------------------------------


@contextlib.contextmanager
def pgbouncer(database_url: str, *, ignore: bool = True, pool_size: int = 2) -> Iterator[str]:
    """PgBouncer in transaction mode on a free port, with the documented ``wallet`` entry pointing
    at ``database_url``'s database; the DSN to reach it. ``ignore=False`` leaves out
    ``ignore_startup_parameters``, to show what happens without it."""
    assert PGBOUNCER is not None
    target = urlsplit(database_url)
    documented = documented_config()
    wallet_entry = documented["databases"]["wallet"]
    wallet_entry = re.sub(r"host=\S+", f"host={target.hostname}", wallet_entry)
    wallet_entry = re.sub(r"port=\S+", f"port={target.port}", wallet_entry)
    wallet_entry = re.sub(r"dbname=\S+", f"dbname={target.path.lstrip('/')}", wallet_entry)
    wallet_entry = re.sub(r"user=\S+", f"user={target.username}", wallet_entry)
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="wallet-pgbouncer-"))
    user = unprivileged_user()  # PgBouncer, like postgres, refuses to run as root
    settings = {
        **documented["pgbouncer"],
        "listen_addr": "127.0.0.1",
        "listen_port": str(port),
        "unix_socket_dir": "",
        "auth_type": "any",  # the test server trusts local connections: no user list
        "default_pool_size": str(pool_size),
        "logfile": str(folder / "pgbouncer.log"),
        "pidfile": str(folder / "pgbouncer.pid"),
    }
    del settings["auth_file"]
    if not ignore:
        del settings["ignore_startup_parameters"]
    lines = ["[databases]", f"wallet = {wallet_entry}", "[pgbouncer]"]
    lines += [f"{k} = {v}" for k, v in settings.items()]
    (folder / "pgbouncer.ini").write_text("\n".join(lines) + "\n")
    if user is not None:
        for path in (folder, *folder.iterdir()):
            os.chown(path, user.pw_uid, user.pw_gid)
    command = [PGBOUNCER, str(folder / "pgbouncer.ini")]
    if user is not None:
        command[1:1] = ["-u", user.pw_name]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket_to(port):
                break
            assert proc.poll() is None, (folder / "pgbouncer.log").read_text()
            assert time.monotonic() < deadline, "pgbouncer did not listen"
            time.sleep(0.02)
        yield f"postgresql://{target.username}@127.0.0.1:{port}/wallet"
    finally:
        proc.send_signal(signal.SIGTERM)  # immediate shutdown (SIGINT waits for clients)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(folder, ignore_errors=True)


def socket_to(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), 0.2)


@contextlib.asynccontextmanager
async def two_clients(dsn: str, **options: Any) -> AsyncIterator[list[asyncpg.Connection]]:
    clients = [await asyncpg.connect(dsn, **options) for _ in range(2)]
    try:
        yield clients
    finally:
        for c in clients:
            await c.close()


async def prepared_on_one_server_used_on_another(
    a: asyncpg.Connection, b: asyncpg.Connection
) -> int:
    """Client ``a`` runs a query (on the only server connection so far); client ``b`` then holds
    that server connection in a transaction, so ``a`` runs the query again on a second one."""
    assert await a.fetchval("SELECT $1::int + 1", 1) == 2
    async with b.transaction():
        await b.execute("SELECT 1")
        value: int = await a.fetchval("SELECT $1::int + 1", 2)
    return value


if PGBOUNCER is not None:

    async def test_asyncpg_statement_cache_breaks_under_transaction_pooling_and_zero_fixes_it(
        services: Services,
    ) -> None:
        with pgbouncer(services.database_url) as dsn:
            async with two_clients(dsn) as (a, b):
                with pytest.raises(asyncpg.InvalidSQLStatementNameError, match="does not exist"):
                    await prepared_on_one_server_used_on_another(a, b)
            async with two_clients(dsn, statement_cache_size=0) as (a, b):
                assert await prepared_on_one_server_used_on_another(a, b) == 3

    async def test_the_pool_settings_need_the_documented_ignore_and_connect_query(
        services: Services, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        sent = (await pool_settings(monkeypatch))["server_settings"]
        with pgbouncer(services.database_url, ignore=False) as dsn:
            with pytest.raises(asyncpg.ProtocolViolationError, match="unsupported startup"):
                await asyncpg.connect(dsn, server_settings=sent)
        with pgbouncer(services.database_url) as dsn:
            conn = await asyncpg.connect(dsn, server_settings=sent, statement_cache_size=0)
            try:
                # What the wallet asked for holds on the server side, whichever server it gets.
                got = {name: await conn.fetchval(f"SHOW {name}") for name in sent}
            finally:
                await conn.close()
        assert got == {
            "application_name": "wallet",
            "statement_timeout": "5s",
            "idle_in_transaction_session_timeout": "30s",
            "timezone": "UTC",
        }

    async def test_the_wallet_through_pgbouncer_keeps_money_exact(
        services: Services,
        settings: Settings,
        operator: Operator,
        pool: asyncpg.Pool,
    ) -> None:
        """The whole app with its pool behind PgBouncer (10 client connections on 3 server
        connections), with WALLET_DB_STATEMENT_CACHE_SIZE=0: concurrent bets, duplicates and a
        result, the call history's COPY, the ledger."""
        provider = await operator.provider()
        code, key = provider["code"], provider["keys"][0]["key"]
        players = {}
        for _ in range(3):
            player = await operator.player(1_000)
            players[player] = await operator.session(player, code)
        with pgbouncer(services.database_url, pool_size=3) as dsn:
            async with AsyncExitStack() as stack:
                uncached = replace(settings, database_url=dsn, db_statement_cache_size=0)
                app = await start_app(uncached, stack)
                http = await stack.enter_async_context(
                    httpx.AsyncClient(
                        transport=httpx.ASGITransport(app=app), base_url="http://wallet.test"
                    )
                )
                client = ProviderClient("http://wallet.test", code, key, http=http)

                async def bet(player: str, txn: str) -> dict[str, Any]:
                    return await client.send(
                        "bet",
                        player_id=player,
                        session_token=players[player],
                        transaction_id=txn,
                        round_id="r1",
                        game_id="slot-1",
                        amount=30,
                        currency="EUR",
                    )

                answers = await asyncio.gather(
                    *(bet(p, f"{p}-{i % 10}") for p in players for i in range(20))
                )
                results = await asyncio.gather(
                    *(
                        client.send(
                            "result",
                            player_id=p,
                            round_id="r1",
                            game_id="slot-1",
                            amount=100,
                            currency="EUR",
                            transaction_id=f"{p}-win",
                        )
                        for p in players
                    )
                )
            # Leaving the stack closed the app: its call history went through PgBouncer too.
        assert {(a["code"], a["reason"]) for a in answers + results} == {("R0", "ok")}
        assert sum(1 for a in answers if not a.get("duplicate")) == 30
        for player in players:
            assert await operator.balance(player) == 1_000 - 10 * 30 + 100
        calls = await pool.fetchval("SELECT count(*) FROM seamless_calls WHERE provider = $1", code)
        assert calls == len(answers) + len(results)
        async with pool.acquire() as conn:
            assert await ledger.check(conn, db.Queries.load()) == {"ok": True}
