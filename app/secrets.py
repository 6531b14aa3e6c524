"""Secrets the operator makes and the seamless webhook checks, declared in one neutral place.

- Session tokens are stored as their SHA-256 (:func:`token_hash`), never the token itself.
- Provider keys are stored sealed under the master key (``WALLET_MASTER_KEY``, a key-encryption
  key that never reaches Postgres): ``0x01 || nonce || ciphertext || tag``, AES-256-GCM with the
  provider code and the key id as associated data, so that a sealed key copied to another row
  does not open. The operator seals a key when it makes one (``app.operator.providers``); the
  seamless key ring opens them (``app.seamless.keys``).
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Mapping

from app import aead
from app.config import ConfigError, parse_master_key


def token_hash(token: str) -> bytes:
    """Sessions are stored by the SHA-256 of their token, never the token itself."""
    return hashlib.sha256(token.encode()).digest()


KEY_BYTES = 32
SEALED_VERSION = 1
SEALED_BYTES = 1 + aead.NONCE_BYTES + KEY_BYTES + aead.TAG_BYTES


class SealedKeyError(ValueError):
    """A stored key that does not open under the master key (or is not sealed at all)."""


def master_key_bytes(value: str) -> bytes:
    """The 32 bytes of a base64 master key (already checked by :mod:`app.config`)."""
    key = base64.b64decode(value, validate=True)
    if len(key) != KEY_BYTES:
        raise ConfigError("WALLET_MASTER_KEY must be base64 of 32 bytes")
    return key


def master_key_from_env(env: Mapping[str, str] | None = None) -> bytes:
    """The master key of the environment; :class:`ConfigError` when it is not set."""
    value = parse_master_key(os.environ if env is None else env)
    if value is None:
        raise ConfigError(
            "WALLET_MASTER_KEY is not set: provider keys are stored sealed under it. Give the "
            "key they were sealed with, or a new one for a new database (base64 of 32 bytes)"
        )
    return master_key_bytes(value)


def _associated_data(provider: str, key_id: str) -> bytes:
    # Both are identifiers of [A-Za-z0-9_.:-], so the NUL separator cannot be forged.
    return b"wallet provider key v1\x00" + provider.encode() + b"\x00" + key_id.encode()


def seal_key(master: bytes, provider: str, key_id: str, secret: bytes) -> bytes:
    """The stored form of provider key ``secret`` (61 bytes)."""
    if len(secret) != KEY_BYTES:
        raise ValueError("a provider key is 32 bytes")
    sealed = aead.seal_raw(master, _associated_data(provider, key_id), secret)
    return bytes([SEALED_VERSION]) + sealed


def is_sealed(stored: bytes) -> bool:
    return len(stored) == SEALED_BYTES and stored[0] == SEALED_VERSION


def open_key(master: bytes, provider: str, key_id: str, stored: bytes) -> bytes:
    """The provider key inside ``stored``; :class:`SealedKeyError` when it does not open."""
    if not is_sealed(stored):
        raise SealedKeyError("stored unsealed: run `wallet keys encrypt`")
    secret = aead.open_raw(master, _associated_data(provider, key_id), stored[1:])
    if secret is None:
        raise SealedKeyError("does not open under WALLET_MASTER_KEY")
    return secret
