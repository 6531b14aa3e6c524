"""Where the database and Redis are: the configured URLs, or local servers under the data folder.

With ``WALLET_DATABASE_URL`` / ``WALLET_REDIS_URL`` unset, commands use real local servers kept
in ``WALLET_DATA_DIR`` (``.data`` by default, so data persist between runs): one already started
by another command (``make run`` in another terminal) is reused, otherwise one is started for as
long as the command runs.

The master key (``WALLET_MASTER_KEY``) that provider keys are sealed under works the same way:
when it is not set, local mode keeps one in ``WALLET_DATA_DIR/master.key`` (mode 0600, made on
first use), next to the database it belongs to. A service with a database of its own has to be
given one: :func:`master_key` refuses to make one up there, since a key kept in a container's
data folder would be lost with it, and every provider key with it. The bootstrap admin key
(``WALLET_ADMIN_API_KEY``) is kept the same way, in ``admin.key``, when it is not set.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path

from app import db
from app.config import ConfigError, Settings
from app.dev.devstack import EmbeddedPostgres, EmbeddedRedis, running_postgres, running_redis

log = logging.getLogger(__name__)

LOCAL_DATABASE = "wallet"
MASTER_KEY_FILE = "master.key"
ADMIN_KEY_FILE = "admin.key"


@contextmanager
def services(settings: Settings) -> Iterator[Settings]:
    """``settings`` with both URLs filled in; local servers started here stop on exit."""
    with ExitStack() as stack:
        database_url, redis_url = settings.database_url, settings.redis_url
        if database_url is None:
            pg_dir = settings.data_dir / "pg"
            server_url = running_postgres(pg_dir)
            if server_url is None:
                pg = stack.enter_context(EmbeddedPostgres(pg_dir))
                server_url = pg.dsn
                log.info("started local postgres in %s", pg_dir)
            database_url = asyncio.run(db.ensure_database(server_url, LOCAL_DATABASE))
        if redis_url is None:
            redis_dir = settings.data_dir / "redis"
            redis_url = running_redis(redis_dir)
            if redis_url is None:
                redis_url = stack.enter_context(EmbeddedRedis(redis_dir)).url
                log.info("started local redis in %s", redis_dir)
        yield replace(settings, database_url=database_url, redis_url=redis_url)


def master_key(settings: Settings, *, local: bool) -> str:
    """The base64 master key: ``WALLET_MASTER_KEY``, or with ``local`` (local servers, or the
    demo) the one kept in the data folder, made there on first use."""
    if settings.master_key is not None:
        return str(settings.master_key)
    if not local:
        raise ConfigError(
            "WALLET_MASTER_KEY is not set. Provider keys are stored sealed under it; give the "
            "key this database's keys were sealed with, or for a new database a new one: "
            "python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())'"
        )
    path = settings.data_dir / MASTER_KEY_FILE
    text = kept_secret(path, lambda: base64.b64encode(secrets.token_bytes(32)).decode())
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ConfigError(f"{path} does not hold a master key (base64 of 32 bytes)")
    return text


def admin_key(settings: Settings) -> str:
    """The bootstrap admin key: ``WALLET_ADMIN_API_KEY``, else the one kept in the data folder
    (made on first use), so that a restart, the demo's banner and the back office agree."""
    if settings.admin_api_key is not None:
        return str(settings.admin_api_key)
    return kept_secret(
        settings.data_dir / ADMIN_KEY_FILE, lambda: "wk_admin_" + secrets.token_urlsafe(24)
    )


def kept_secret(path: Path, make: Callable[[], str]) -> str:
    """The text kept in ``path``, or ``make()`` written there first (mode 0600) and returned."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    text = make()
    # Mode 0600 from the start, and published whole with link(): another command starting at the
    # same moment reads either no file or the complete secret, and both keep the same.
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    try:
        os.link(temporary, path)
    except FileExistsError:
        text = path.read_text().strip()
    else:
        log.info("made %s for local data", path)
    finally:
        temporary.unlink()
    return text
