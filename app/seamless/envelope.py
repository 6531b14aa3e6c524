"""The seamless envelope: ``{"payload": base64(nonce || ciphertext || tag)}`` under AES-256-GCM.

The provider code (UTF-8) is the associated data, so a payload sealed for one provider cannot be
replayed against another provider's endpoint even if both shared a key.
"""

from __future__ import annotations

import base64
import binascii
import os

from Crypto.Cipher import AES

NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32


class EnvelopeError(ValueError):
    """The payload is not a well-formed envelope, or no key opens it."""


def seal(key: bytes, provider: str, plaintext: bytes) -> str:
    """Encrypt ``plaintext`` for ``provider`` under ``key`` with a fresh nonce; base64 out."""
    nonce = os.urandom(NONCE_BYTES)
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES)
    cipher.update(provider.encode())
    ciphertext, tag = cipher.encrypt_and_digest(plaintext)
    return base64.b64encode(nonce + ciphertext + tag).decode("ascii")


def decode(payload: str) -> bytes:
    """The raw envelope bytes of a base64 payload, checked for the minimum length."""
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError("payload is not valid base64 (standard alphabet, padded)") from None
    if len(raw) < NONCE_BYTES + TAG_BYTES:
        raise EnvelopeError("payload is shorter than nonce and tag")
    return raw


def open_with(key: bytes, provider: str, raw: bytes) -> bytes | None:
    """The plaintext if ``key`` opens ``raw`` for ``provider``, else None."""
    nonce, ciphertext, tag = raw[:NONCE_BYTES], raw[NONCE_BYTES:-TAG_BYTES], raw[-TAG_BYTES:]
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES)
    cipher.update(provider.encode())
    try:
        plaintext: bytes = cipher.decrypt_and_verify(ciphertext, tag)
    except ValueError:
        return None
    return plaintext
