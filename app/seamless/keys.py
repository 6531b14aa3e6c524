"""Provider keys: sealed at rest under the master key, cached in memory for the hot path.

At rest (``provider_keys.secret``) a key is ``0x01 || nonce || ciphertext || tag``: AES-256-GCM
under ``WALLET_MASTER_KEY`` (a key-encryption key that never reaches Postgres), with the
provider code and the key id as associated data, so that a sealed key copied to another row (of
another provider, or another key id) does not open. A dump of the database therefore holds no
usable provider key, and a write to the table cannot plant one: only a holder of the master key
can seal. Rows of 32 bytes are raw keys from before migration 005; they are not used until
:func:`seal_raw_keys` has sealed them (``wallet serve`` does at start-up, or
``wallet keys encrypt``).

The cache is refreshed after ``ttl`` seconds (by one read, which the requests finding the entry
expired together all wait for), and at once when a payload opens with none of the cached keys: a
rotation done by another worker is picked up on the first request that uses it.
Keys are opened once per load, never per request. Unknown provider codes are remembered for the
same ttl so that garbage traffic cannot turn every request into a database read, and the cache
holds at most ``max_entries`` providers (the oldest entry goes first) so that random codes cannot
grow it without bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import asyncpg

from app.config import ConfigError
from app.db import CONNECTION_ERRORS, Queries
from app.secrets import (  # the sealing of provider keys, shared with the operator
    SealedKeyError,
    is_sealed,
    master_key_from_env,
    open_key,
    seal_key,
)

log = logging.getLogger(__name__)


class KeyUnavailable(RuntimeError):
    """A provider has stored keys, but none opens under this process's master key: the wallet is
    misconfigured (a wrong ``WALLET_MASTER_KEY``, or keys not sealed yet), not the caller wrong."""


class MasterKeyMismatch(ConfigError):
    """``WALLET_MASTER_KEY`` opens none of the provider keys in the database."""


@dataclass(frozen=True, slots=True)
class ProviderKey:
    key_id: str
    secret: bytes
    state: str  # current | previous


@dataclass(slots=True)
class _Entry:
    keys: tuple[ProviderKey, ...]
    loaded_at: float
    unusable: int = 0  # stored keys that did not open
    refreshed: bool = False  # read because a payload opened with none of the cached keys

    def usable(self, provider: str) -> tuple[ProviderKey, ...]:
        if self.unusable and not self.keys:
            raise KeyUnavailable(
                f"none of the {self.unusable} stored keys of provider {provider[:64]!r} opens "
                "under WALLET_MASTER_KEY"
            )
        return self.keys


class KeyRing:
    """Active keys per provider (current first), read through from Postgres and opened with the
    master key (``WALLET_MASTER_KEY`` of the environment unless given)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        queries: Queries,
        ttl: float,
        *,
        max_entries: int = 10_000,
        master_key: bytes | None = None,
    ) -> None:
        self._pool = pool
        self._queries = queries
        self._ttl = ttl
        self._max_entries = max_entries
        self._master = master_key if master_key is not None else master_key_from_env()
        self._cache: dict[str, _Entry] = {}
        self._loading: dict[str, asyncio.Future[_Entry]] = {}

    async def keys(self, provider: str, *, refresh: bool = False) -> tuple[ProviderKey, ...]:
        """The provider's active keys; empty when the provider is unknown.

        Raises :class:`KeyUnavailable` when the provider has keys but none opens.
        """
        entry = self._cache.get(provider)
        now = time.monotonic()
        # A provider none of whose keys opened is read again as soon as a refresh may be, so
        # that ``wallet keys encrypt`` or a repaired row takes effect without waiting the ttl.
        refresh = refresh or (entry is not None and entry.unusable > 0 and not entry.keys)
        if entry is not None and not refresh and now - entry.loaded_at < self._ttl:
            return entry.usable(provider)
        if entry is not None and refresh and entry.refreshed and now - entry.loaded_at < 0.2:
            # Refreshed a moment ago: a burst of bad payloads must not become a burst of reads.
            # Only a refresh holds the next one back, not an ordinary load: a key rotated just
            # after this worker loaded the keys must work at once, not after a pause.
            return entry.usable(provider)
        if refresh:
            return (await self._load(provider, entry, now, refresh=True)).usable(provider)
        # An expired entry is read again once, however many requests find it expired together:
        # they all wait for that one read instead of each making its own.
        loading = self._loading.get(provider)
        if loading is None:
            loading = asyncio.ensure_future(self._load(provider, entry, now, refresh=False))
            self._loading[provider] = loading
            loading.add_done_callback(lambda done: self._loaded(provider, done))
        return (await asyncio.shield(loading)).usable(provider)

    def _loaded(self, provider: str, done: asyncio.Future[_Entry]) -> None:
        self._loading.pop(provider, None)
        if not done.cancelled():
            done.exception()  # seen by the waiting requests; retrieved here should none be left

    async def _load(
        self, provider: str, entry: _Entry | None, now: float, *, refresh: bool
    ) -> _Entry:
        try:
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(*self._queries.active_provider_keys(provider=provider))
        except CONNECTION_ERRORS:
            if entry is not None:
                # Postgres is away: keep authenticating with the keys we know.
                return entry
            raise
        entry = self._opened(provider, rows, now)
        entry.refreshed = refresh
        self._cache.pop(provider, None)
        while len(self._cache) >= self._max_entries:
            del self._cache[next(iter(self._cache))]  # dicts keep insertion order: the oldest
        self._cache[provider] = entry
        return entry

    def _opened(self, provider: str, rows: list[asyncpg.Record], now: float) -> _Entry:
        keys = []
        unusable = 0
        for r in rows:
            try:
                secret = open_key(self._master, provider, r["key_id"], bytes(r["secret"]))
            except SealedKeyError as exc:
                unusable += 1
                log.error("key %s of provider %s %s", r["key_id"], provider[:64], exc)
                continue
            keys.append(ProviderKey(r["key_id"], secret, r["state"]))
        return _Entry(tuple(keys), now, unusable)

    @property
    def master_key(self) -> bytes:
        """The master key this ring opens keys with, for sealing new keys the same way."""
        return self._master

    def forget(self, provider: str) -> None:
        """Drop a provider's cached keys (after a rotation made by this process)."""
        self._cache.pop(provider, None)


# --- at-rest maintenance: start-up and the `wallet keys` commands ------------------------------


async def seal_raw_keys(conn: asyncpg.Connection, queries: Queries, master: bytes) -> int:
    """Seal every key still stored raw (from before migration 005); how many were sealed."""
    sealed = 0
    async with conn.transaction():
        for r in await conn.fetch(*queries.stored_provider_keys_for_update()):
            stored = bytes(r["secret"])
            if is_sealed(stored):
                continue
            secret = seal_key(master, r["provider"], r["key_id"], stored)
            await conn.execute(
                *queries.set_provider_key_secret(
                    provider=r["provider"], key_id=r["key_id"], secret=secret
                )
            )
            sealed += 1
    if sealed:
        log.info("sealed %d provider keys under the master key", sealed)
    return sealed


async def check_master_key(conn: asyncpg.Connection, queries: Queries, master: bytes) -> int:
    """Refuse (:class:`MasterKeyMismatch`) a master key that opens none of the active keys in
    the database; the number of active keys it opens. Keys that do not open are logged."""
    opened = failed = 0
    for r in await conn.fetch(*queries.stored_provider_keys()):
        if r["state"] == "retired":
            continue
        try:
            open_key(master, r["provider"], r["key_id"], bytes(r["secret"]))
            opened += 1
        except SealedKeyError as exc:
            failed += 1
            log.error("key %s of provider %s %s", r["key_id"], r["provider"], exc)
    if failed and not opened:
        raise MasterKeyMismatch(
            f"WALLET_MASTER_KEY opens none of the {failed} active provider keys in the "
            "database: it is not the key they were sealed under"
        )
    return opened


async def rewrap(conn: asyncpg.Connection, queries: Queries, old: bytes, new: bytes) -> int:
    """Seal every stored key again under ``new``, in one transaction; how many were rewrapped.

    A key that already opens under ``new`` is left as it is, so an interrupted procedure can be
    run again. A key that opens under neither stops it, and nothing changes.
    """
    rewrapped = 0
    async with conn.transaction():
        for r in await conn.fetch(*queries.stored_provider_keys_for_update()):
            provider, key_id, stored = r["provider"], r["key_id"], bytes(r["secret"])
            if not is_sealed(stored):
                secret = stored
            else:
                try:
                    open_key(new, provider, key_id, stored)
                    continue
                except SealedKeyError:
                    pass
                try:
                    secret = open_key(old, provider, key_id, stored)
                except SealedKeyError:
                    raise MasterKeyMismatch(
                        f"key {key_id} of provider {provider} opens under neither master key; "
                        "nothing was changed"
                    ) from None
            await conn.execute(
                *queries.set_provider_key_secret(
                    provider=provider, key_id=key_id, secret=seal_key(new, provider, key_id, secret)
                ),
            )
            rewrapped += 1
    return rewrapped
