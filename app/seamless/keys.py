"""Provider keys, cached in memory so the hot path does not read them from Postgres.

The cache is refreshed after ``ttl`` seconds, and at once when a payload opens with none of the
cached keys: a rotation done by another worker is picked up on the first request that uses it.
Unknown provider codes are remembered for the same ttl so that garbage traffic cannot turn every
request into a database read, and the cache holds at most ``max_entries`` providers (the oldest
entry goes first) so that random codes cannot grow it without bound.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import asyncpg

from app.db import Queries


@dataclass(frozen=True, slots=True)
class ProviderKey:
    key_id: str
    secret: bytes
    state: str  # current | previous


@dataclass(slots=True)
class _Entry:
    keys: tuple[ProviderKey, ...]
    loaded_at: float


class KeyRing:
    """Active keys per provider (current first), read through from Postgres."""

    def __init__(
        self, pool: asyncpg.Pool, queries: Queries, ttl: float, *, max_entries: int = 10_000
    ) -> None:
        self._pool = pool
        self._queries = queries
        self._ttl = ttl
        self._max_entries = max_entries
        self._cache: dict[str, _Entry] = {}

    async def keys(self, provider: str, *, refresh: bool = False) -> tuple[ProviderKey, ...]:
        """The provider's active keys; empty when the provider is unknown."""
        entry = self._cache.get(provider)
        now = time.monotonic()
        if entry is not None and not refresh and now - entry.loaded_at < self._ttl:
            return entry.keys
        if entry is not None and refresh and now - entry.loaded_at < 0.2:
            # Refreshed a moment ago: a burst of bad payloads must not become a burst of reads.
            return entry.keys
        try:
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(self._queries.active_provider_keys, provider)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            if entry is not None:
                # Postgres is away: keep authenticating with the keys we know.
                return entry.keys
            raise
        keys = tuple(ProviderKey(r["key_id"], bytes(r["secret"]), r["state"]) for r in rows)
        self._cache.pop(provider, None)
        while len(self._cache) >= self._max_entries:
            del self._cache[next(iter(self._cache))]  # dicts keep insertion order: the oldest
        self._cache[provider] = _Entry(keys, now)
        return keys

    def forget(self, provider: str) -> None:
        """Drop a provider's cached keys (after a rotation made by this process)."""
        self._cache.pop(provider, None)
