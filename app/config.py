"""Settings: every knob comes from a ``WALLET_*`` environment variable, read once, loud when wrong.

A missing optional value takes its documented default; a malformed value (``WALLET_PORT=eighty``)
raises :class:`ConfigError` at start-up instead of surfacing later as a confusing runtime failure.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from app import tracing


class ConfigError(ValueError):
    """A ``WALLET_*`` variable is present but cannot be used."""


class Secret(str):
    """A string that never prints its value, so settings can be logged safely."""

    def __repr__(self) -> str:
        return "Secret('**********')"


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _optional(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    return raw if raw else None


def parse_master_key(env: Mapping[str, str]) -> Secret | None:
    """``WALLET_MASTER_KEY``: base64 of 32 bytes. A bad value is named, never echoed."""
    raw = env.get("WALLET_MASTER_KEY")
    if not raw:
        return None
    try:
        decoded = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) != 32:
        raise ConfigError(
            "WALLET_MASTER_KEY must be base64 of 32 random bytes, e.g. the output of "
            "python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())'"
        )
    return Secret(raw)


@dataclass(frozen=True)
class PspSettings:
    """One PSP route, from ``WALLET_PSPS`` (a JSON list, in order of preference)."""

    name: str
    kind: str  # the adapter: "sandbox"
    base_url: str
    api_key: Secret
    webhook_secret: Secret
    currencies: tuple[str, ...]
    methods: tuple[str, ...]
    timeout_seconds: float = 5.0
    countries: tuple[str, ...] = ()  # empty: any country
    min_amount: int | None = None
    max_amount: int | None = None


def _bound(value: object) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise ValueError("amount bound (a non-negative integer in minor units)")
    return value


def _psps(env: Mapping[str, str]) -> tuple[PspSettings, ...]:
    raw = env.get("WALLET_PSPS")
    if not raw:
        return ()
    try:
        items = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"WALLET_PSPS is not JSON: {exc}") from None
    if not isinstance(items, list):
        raise ConfigError("WALLET_PSPS must be a JSON list of PSP objects")
    psps = []
    for i, item in enumerate(items):
        try:
            psps.append(
                PspSettings(
                    name=str(item["name"]),
                    kind=str(item.get("kind", "sandbox")),
                    base_url=str(item["base_url"]),
                    api_key=Secret(item["api_key"]),
                    webhook_secret=Secret(item["webhook_secret"]),
                    currencies=tuple(item["currencies"]),
                    methods=tuple(item["methods"]),
                    timeout_seconds=float(item.get("timeout_seconds", 5.0)),
                    countries=tuple(item.get("countries", ())),
                    min_amount=_bound(item.get("min_amount")),
                    max_amount=_bound(item.get("max_amount")),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"WALLET_PSPS[{i}] is missing or has a bad {exc}") from None
        if psps[-1].kind != "sandbox":
            raise ConfigError(f"WALLET_PSPS[{i}]: unknown PSP kind {psps[-1].kind!r}")
    if len({p.name for p in psps}) != len(psps):
        raise ConfigError("WALLET_PSPS names must be unique")
    return tuple(psps)


def _kyc_tiers(env: Mapping[str, str]) -> dict[str, dict[str, int]]:
    raw = env.get("WALLET_KYC_METHOD_TIERS")
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"WALLET_KYC_METHOD_TIERS is not JSON: {exc}") from None
    ok = (
        isinstance(data, dict)
        and set(data) <= {"deposit", "withdrawal"}
        and all(
            isinstance(methods, dict)
            and all(
                isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= 3
                for t in methods.values()
            )
            for methods in data.values()
        )
    )
    if not ok:
        raise ConfigError(
            'WALLET_KYC_METHOD_TIERS must look like {"deposit": {"upi": 1}, '
            '"withdrawal": {"*": 1}} with tiers from 0 to 3'
        )
    return {kind: {str(m): int(t) for m, t in methods.items()} for kind, methods in data.items()}


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment."""

    database_url: str | None = None
    redis_url: str | None = None
    admin_api_key: Secret | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = field(default_factory=lambda: Path(".data"))
    # Seamless rules fixed by the contract; settable only so tests and operators can see them.
    freshness_seconds: int = 300
    replay_seconds: int = 600
    session_ttl_seconds: int = 4 * 3600
    max_body_bytes: int = 64 * 1024
    # The largest provider transaction report a reconciliation reads (CSV, operator API).
    reconciliation_max_bytes: int = 32 * 1024 * 1024
    # How long a request's whole body may take to arrive; a slower one is refused and closed.
    body_timeout_ms: int = 10_000
    # A player lock outlives any sane posting; it only bounds how long a crashed holder blocks.
    lock_ttl_ms: int = 5000
    lock_wait_ms: int = 2000
    db_pool_min: int = 2
    db_pool_max: int = 10
    db_statement_timeout_ms: int = 5000
    db_acquire_timeout_ms: int = 2000
    redis_timeout_ms: int = 1000
    key_cache_seconds: int = 5
    # Requests per second per provider (seamless events) and per operator API key; 0: no limit.
    # asyncpg's prepared statements per connection; 0 behind PgBouncer in transaction mode
    # before 1.21 (docs/scaling.md).
    db_statement_cache_size: int = 100
    # Group commit of seamless postings (app/seamless/batch.py): events per batch at most, and
    # batches in Postgres at once per process. A batch size of 1 posts every event alone.
    db_batch_max: int = 32
    db_batches_in_flight: int = 1
    rate_limit_provider: int = 5000
    rate_limit_api_key: int = 100
    # Raising or removing a responsible-gaming limit waits this long; lowering applies at once.
    limit_cooling_off_seconds: int = 24 * 3600
    # A round open this long with a bet not cancelled is stale: listed, counted, settleable.
    round_stale_seconds: int = 24 * 3600
    # How often the ledger check runs for its gauges (app/gauges.py), once over every process;
    # 0 turns it off.
    ledger_check_seconds: int = 900
    # Payments: where PSPs send webhooks (this service's public address), the routes, and the
    # amount above which a withdrawal waits for an operator.
    public_url: str | None = None
    psps: tuple[PspSettings, ...] = ()
    withdrawal_review_threshold: int | None = None
    payments_poll_seconds: int = 30
    # Minimum KYC tier per payment kind and method ("*" for any method); empty: no minimum.
    kyc_method_tiers: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    # Where deposit.* and withdrawal.* events go, and the secret they are signed with.
    operator_webhook_url: str | None = None
    operator_webhook_secret: Secret | None = None
    # The key-encryption key that provider keys are sealed under in Postgres (base64, 32 bytes).
    master_key: Secret | None = None
    # OpenTelemetry tracing, on when the standard OTEL_* variables ask for it (app/tracing.py).
    tracing: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``env`` (the process environment by default)."""
        env = os.environ if env is None else env
        admin = _optional(env, "WALLET_ADMIN_API_KEY")
        settings = cls(
            database_url=_optional(env, "WALLET_DATABASE_URL"),
            redis_url=_optional(env, "WALLET_REDIS_URL"),
            admin_api_key=Secret(admin) if admin else None,
            host=env.get("WALLET_HOST") or "127.0.0.1",
            port=_int(env, "WALLET_PORT", 8080, minimum=1),
            data_dir=Path(env.get("WALLET_DATA_DIR") or ".data"),
            session_ttl_seconds=_int(env, "WALLET_SESSION_TTL_SECONDS", 4 * 3600, minimum=1),
            max_body_bytes=_int(env, "WALLET_MAX_BODY_BYTES", 64 * 1024, minimum=256),
            reconciliation_max_bytes=_int(
                env, "WALLET_RECONCILIATION_MAX_BYTES", 32 * 1024 * 1024, minimum=1024
            ),
            body_timeout_ms=_int(env, "WALLET_BODY_TIMEOUT_MS", 10_000, minimum=1),
            lock_ttl_ms=_int(env, "WALLET_LOCK_TTL_MS", 5000, minimum=100),
            lock_wait_ms=_int(env, "WALLET_LOCK_WAIT_MS", 2000, minimum=0),
            db_pool_min=_int(env, "WALLET_DB_POOL_MIN", 2, minimum=1),
            db_pool_max=_int(env, "WALLET_DB_POOL_MAX", 10, minimum=1),
            db_statement_timeout_ms=_int(env, "WALLET_DB_STATEMENT_TIMEOUT_MS", 5000, minimum=0),
            db_acquire_timeout_ms=_int(env, "WALLET_DB_ACQUIRE_TIMEOUT_MS", 2000, minimum=1),
            redis_timeout_ms=_int(env, "WALLET_REDIS_TIMEOUT_MS", 1000, minimum=10),
            key_cache_seconds=_int(env, "WALLET_KEY_CACHE_SECONDS", 5, minimum=0),
            db_statement_cache_size=_int(env, "WALLET_DB_STATEMENT_CACHE_SIZE", 100, minimum=0),
            db_batch_max=_int(env, "WALLET_DB_BATCH_MAX", 32, minimum=1),
            db_batches_in_flight=_int(env, "WALLET_DB_BATCHES_IN_FLIGHT", 1, minimum=1),
            rate_limit_provider=_int(env, "WALLET_RATE_LIMIT_PROVIDER", 5000, minimum=0),
            rate_limit_api_key=_int(env, "WALLET_RATE_LIMIT_API_KEY", 100, minimum=0),
            public_url=_optional(env, "WALLET_PUBLIC_URL"),
            psps=_psps(env),
            withdrawal_review_threshold=(
                _int(env, "WALLET_WITHDRAWAL_REVIEW_THRESHOLD", 0, minimum=1)
                if env.get("WALLET_WITHDRAWAL_REVIEW_THRESHOLD")
                else None
            ),
            payments_poll_seconds=_int(env, "WALLET_PAYMENTS_POLL_SECONDS", 30, minimum=1),
            kyc_method_tiers=_kyc_tiers(env),
            operator_webhook_url=_optional(env, "WALLET_OPERATOR_WEBHOOK_URL"),
            operator_webhook_secret=(
                Secret(env["WALLET_OPERATOR_WEBHOOK_SECRET"])
                if env.get("WALLET_OPERATOR_WEBHOOK_SECRET")
                else None
            ),
            limit_cooling_off_seconds=_int(
                env, "WALLET_LIMIT_COOLING_OFF_SECONDS", 24 * 3600, minimum=0
            ),
            round_stale_seconds=_int(env, "WALLET_ROUND_STALE_SECONDS", 24 * 3600, minimum=1),
            ledger_check_seconds=_int(env, "WALLET_LEDGER_CHECK_SECONDS", 900, minimum=0),
            master_key=parse_master_key(env),
            tracing=tracing.wanted(env),
        )
        if settings.port > 65535:
            raise ConfigError(f"WALLET_PORT must be <= 65535, got {settings.port}")
        if settings.operator_webhook_url and not settings.operator_webhook_secret:
            raise ConfigError(
                "WALLET_OPERATOR_WEBHOOK_URL needs WALLET_OPERATOR_WEBHOOK_SECRET to sign events"
            )
        if settings.db_pool_min > settings.db_pool_max:
            raise ConfigError("WALLET_DB_POOL_MIN must not exceed WALLET_DB_POOL_MAX")
        if settings.db_batches_in_flight >= settings.db_pool_max:
            # Senders hold their connections while busy: keep some for key reads, events
            # posted alone and the call history.
            raise ConfigError("WALLET_DB_BATCHES_IN_FLIGHT must be below WALLET_DB_POOL_MAX")
        return settings
