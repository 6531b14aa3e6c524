"""The sandbox PSP: a payment service provider simulator the wallet talks to in tests and demos.

It is its own Starlette app (:func:`create_sandbox_app`), used in-process by tests through
``httpx.ASGITransport`` and run as a separate process by ``wallet sandbox-psp``. Its state lives in
memory only. The API, the scenarios and the webhook format are documented in
``docs/sandbox-psp.md``.
"""

from __future__ import annotations

from app.payments.sandbox.app import create_sandbox_app
from app.payments.sandbox.config import SandboxConfig
from app.payments.sandbox.model import Delivery, Payment
from app.payments.sandbox.scenarios import SCENARIOS
from app.payments.sandbox.state import SandboxState

__all__ = [
    "SCENARIOS",
    "Delivery",
    "Payment",
    "SandboxConfig",
    "SandboxState",
    "create_sandbox_app",
]
