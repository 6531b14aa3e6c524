"""The sandbox PSP: a payment service provider simulator the wallet talks to in tests and demos.

It is its own Starlette app (:func:`create_sandbox_app`), used in-process by tests through
``httpx.ASGITransport`` and run as a separate process by ``wallet sandbox-psp``. Its state lives in
memory only. The API, the scenarios and the webhook format are documented in
``docs/sandbox-psp.md``.
"""

from __future__ import annotations

from app.dev.sandbox_psp.app import create_sandbox_app
from app.dev.sandbox_psp.config import SandboxConfig
from app.dev.sandbox_psp.model import Delivery, Payment
from app.dev.sandbox_psp.scenarios import SCENARIOS
from app.dev.sandbox_psp.state import SandboxState

__all__ = [
    "SCENARIOS",
    "Delivery",
    "Payment",
    "SandboxConfig",
    "SandboxState",
    "create_sandbox_app",
]
