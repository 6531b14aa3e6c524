"""AES-256-GCM, the one cipher of the wallet: ``nonce (12 B) || ciphertext || tag (16 B)``.

The seamless envelope (:mod:`app.seamless.envelope`), provider keys at rest (:mod:`app.secrets`)
and the stored answers of secret-showing operator actions (:mod:`app.web.idempotency`) all seal
with it, each with its own associated data.

AES-GCM comes from ``cryptography`` (OpenSSL): about 2 µs to seal or open an event, where
pycryptodome's GCM mode, built up in Python on each use, took about 130 µs.
"""

from __future__ import annotations

import functools
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12
TAG_BYTES = 16


@functools.lru_cache(maxsize=1024)
def _aead(key: bytes) -> AESGCM:
    """The cipher of ``key``, expanded once: a handful of provider keys serve every request."""
    return AESGCM(key)


def seal_raw(key: bytes, associated: bytes, plaintext: bytes) -> bytes:
    """``nonce || ciphertext || tag`` of ``plaintext`` under ``key`` with a fresh random nonce."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + _aead(key).encrypt(nonce, plaintext, associated)


def open_raw(key: bytes, associated: bytes, raw: bytes) -> bytes | None:
    """The plaintext of ``nonce || ciphertext || tag`` if ``key`` opens it, else None."""
    if len(raw) < NONCE_BYTES + TAG_BYTES:
        return None
    try:
        return _aead(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated)
    except InvalidTag:
        return None
