"""The resources one app instance owns, made once in the lifespan and typed for the handlers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import asyncpg
from redis.asyncio import Redis
from starlette.requests import Request

from app.config import Settings
from app.db import Queries
from app.metrics import Metrics
from app.payments.service import Payments
from app.ratelimit import Limiter
from app.seamless.calls import CallLog
from app.seamless.keys import KeyRing
from app.seamless.service import SeamlessService


@dataclass(frozen=True, slots=True)
class Wallet:
    settings: Settings
    pool: asyncpg.Pool
    redis: Redis
    queries: Queries
    keys: KeyRing
    calls: CallLog
    seamless: SeamlessService
    metrics: Metrics
    payments: Payments
    limiter: Limiter  # per operator API key


def wallet(request: Request) -> Wallet:
    """The app's resources, as the lifespan put them in the request state."""
    return cast(Wallet, request.state.wallet)
