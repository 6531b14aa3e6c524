"""Identifiers that must be unique but need not be secret: correlation ids, lock and claim tokens.

``secrets.token_hex`` asks the kernel for fresh randomness on every call, a system call on the hot
path twice per event. Nothing here guards a secret: a lock token only tells its holder's release
from another's. A Mersenne Twister of this module's own, seeded from ``os.urandom`` and seeded again
in a forked child, gives the same uniqueness in user space. Its own instance, so that a test or a
library seeding the ``random`` module (Hypothesis does, per example) cannot make ids repeat.
"""

from __future__ import annotations

import os
import random

_random = random.Random()
os.register_at_fork(after_in_child=_random.seed)


def unique_hex(nbytes: int) -> str:
    """``2 * nbytes`` hex digits, as ``secrets.token_hex(nbytes)`` gives."""
    return f"{_random.getrandbits(nbytes * 8):0{nbytes * 2}x}"
