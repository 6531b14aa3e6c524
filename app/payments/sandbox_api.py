"""The sandbox PSP's API vocabulary (docs/sandbox-psp.md): payment kinds, statuses, references.

Declared on the wallet's side: the adapter for routes of kind ``sandbox`` (app/payments/psp.py)
and the OpenAPI document read them as a client of that API does. The simulator that serves the
API (app/dev/sandbox_psp/) takes the same names from here, so what serves production never
imports dev code.
"""

from __future__ import annotations

import re

DEPOSIT, PAYOUT = "deposit", "payout"
KINDS = (DEPOSIT, PAYOUT)

REQUIRES_ACTION = "requires_action"
PENDING = "pending"
SUCCEEDED = "succeeded"
FAILED = "failed"
HELD = "held"

# A merchant's payment reference (and a customer id): what the sandbox accepts and echoes.
REFERENCE = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")
