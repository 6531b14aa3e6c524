"""The sandbox PSP's settings."""

from __future__ import annotations

from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class SandboxConfig:
    """How one sandbox PSP behaves.

    Durations are in seconds; tests set them small. ``http`` is the client webhooks are sent with:
    tests pass one whose transport routes to an in-process receiver; when ``None`` the sandbox
    makes its own and closes it at shutdown.
    """

    api_key: str
    webhook_secret: str | bytes
    public_base_url: str
    fee_bps: int = 150
    http: httpx.AsyncClient | None = None
    # How long the ``timeout`` scenario holds a create call: more than the caller's timeout.
    timeout_seconds: float = 5.0
    # How late the ``delayed-webhook`` scenario sends each webhook.
    webhook_delay: float = 0.5
    # Retries of a failed delivery after its first attempt; the n-th retry waits
    # ``retry_backoff * 2 ** (n - 1)``.
    webhook_retries: int = 3
    retry_backoff: float = 0.05
    # How many create calls the ``5xx-burst`` scenario answers 503 before behaving.
    burst: int = 2
    # How long a payout stays ``pending`` before it is decided.
    payout_delay: float = 0.2

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ValueError("api_key must not be empty")
        if not self.webhook_secret:
            raise ValueError("webhook_secret must not be empty")
        if not self.public_base_url.startswith(("http://", "https://")):
            raise ValueError("public_base_url must be an http(s) URL")
        if not 0 <= self.fee_bps <= 10_000:
            raise ValueError("fee_bps must be from 0 to 10000")
        if self.webhook_retries < 0 or self.burst < 0:
            raise ValueError("webhook_retries and burst must not be negative")
        for name in ("timeout_seconds", "webhook_delay", "retry_backoff", "payout_delay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")

    @property
    def secret(self) -> bytes:
        """The webhook secret as the bytes signatures are made with."""
        s = self.webhook_secret
        return s.encode() if isinstance(s, str) else s

    @property
    def base_url(self) -> str:
        return self.public_base_url.rstrip("/")
