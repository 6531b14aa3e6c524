"""The test session's admin and master keys, put in the environment on import.

tests/conftest.py imports this module before anything imports the app: settings are read from
the environment once.
"""

from __future__ import annotations

import base64
import os
import secrets

ADMIN_KEY = "test-admin-key-" + secrets.token_hex(8)
os.environ["WALLET_ADMIN_API_KEY"] = ADMIN_KEY
os.environ["WALLET_MASTER_KEY"] = MASTER_KEY = base64.b64encode(secrets.token_bytes(32)).decode()
