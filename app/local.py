"""Where the database and Redis are: the configured URLs, or local servers under the data folder.

With ``WALLET_DATABASE_URL`` / ``WALLET_REDIS_URL`` unset, commands use real local servers kept
in ``WALLET_DATA_DIR`` (``.data`` by default, so data persist between runs): one already started
by another command (``make run`` in another terminal) is reused, otherwise one is started for as
long as the command runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace

from app import db
from app.config import Settings
from app.devstack import EmbeddedPostgres, EmbeddedRedis, running_postgres, running_redis

log = logging.getLogger(__name__)

LOCAL_DATABASE = "wallet"


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
