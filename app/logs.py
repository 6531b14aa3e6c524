"""Logging: one JSON object per line, the request's correlation id on each, secrets redacted.

A line looks like::

    {"time": "2025-01-31T12:00:00.123Z", "level": "error", "logger": "app.seamless.service",
     "message": "posting bet r-1 failed: ...", "request_id": "req_3f9a0c1e2b4d5a6f",
     "provider_request_id": "r-1"}

``request_id`` is the correlation id that :func:`app.web.http.tracked` binds for each
request, the same that answers carry in ``X-Request-Id`` and in operator error bodies. With
tracing on (:mod:`app.tracing`), a line logged under a span also has ``trace_id`` (32 hex
digits) and ``span_id`` (16); with tracing off, or outside any span, both keys are absent
(never null or empty). Fields passed with ``extra=`` are added as they are.

The code does not log secrets in the first place; :class:`RedactFilter` is the safety net for
what slips through (an exception's text, a third-party library's message): provider keys, session
tokens, API keys, bearer tokens, ``session_token`` and ``key`` fields, passwords in URLs, and any
value handed to :func:`register_secret` (with :func:`register_env_secrets`, every secret setting:
the admin key, the master key, the operator webhook secret and each PSP's API key and webhook
secret).
"""

from __future__ import annotations

import base64
import binascii
import json as jsonlib
import logging
import os
import re
import sys
from collections.abc import Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import IO, Any

import orjson

from app import tracing
from app.config import ConfigError

REDACTED = "[redacted]"

_request_id: ContextVar[str | None] = ContextVar("wallet_request_id", default=None)


def bind_request_id(rid: str | None) -> Token[str | None]:
    """Make ``rid`` the correlation id of every line logged in this context from now on."""
    return _request_id.set(rid)


def reset_request_id(token: Token[str | None]) -> None:
    """Undo :func:`bind_request_id`."""
    _request_id.reset(token)


def current_request_id() -> str | None:
    """The correlation id bound in this context, if any."""
    return _request_id.get()


# Order matters: named fields and headers first, so that their whole value goes, then the shapes
# of bare secrets wherever they appear.
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # Authorization: Bearer <token>, as a header, a dict entry or free text.
    (
        re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(?:bearer\s+)?[^\s\"',;}]+"),
        r"\1" + REDACTED,
    ),
    (re.compile(r"(?i)\b(bearer\s+)[^\s\"',;}]+"), r"\1" + REDACTED),
    # session_token=..., "session_token": "...", and the same for secret-named fields.
    (
        re.compile(
            r"(?i)\b((?:session_token|token|key|secret|password|api_key)[\"']?\s*[:=]\s*[\"']?)"
            r"[^\s\"',;&}]+"
        ),
        r"\1" + REDACTED,
    ),
    # scheme://user:password@host
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@"), r"\1" + REDACTED + "@"),
    # API keys: wk_<role>_<urlsafe base64>; the role stays readable.
    (re.compile(r"\b(wk_[a-z]+_)[A-Za-z0-9_-]{16,}"), r"\1" + REDACTED),
    # Provider keys: base64 of 32 bytes.
    (re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{43}=(?![A-Za-z0-9+/=])"), REDACTED),
    # Session tokens: urlsafe base64 of 32 bytes, unpadded.
    (re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_=-])"), REDACTED),
]

# Longest first, so that a secret is replaced whole before a shorter form of it (base64 without
# its padding) could leave a piece behind.
_secrets: tuple[str, ...] = ()


def register_secret(value: str | None) -> None:
    """Redact this exact value wherever it would be logged (e.g. the bootstrap admin key, which
    may have any shape)."""
    global _secrets
    if value and len(value) >= 8 and value not in _secrets:
        _secrets = tuple(sorted({*_secrets, value}, key=len, reverse=True))


def register_secret_bytes(raw: bytes) -> None:
    """Redact a binary secret in each form it could be printed in: base64 (standard and
    URL-safe, padded or not) and hex."""
    standard = base64.b64encode(raw).decode()
    urlsafe = base64.urlsafe_b64encode(raw).decode()
    for form in (standard, urlsafe, standard.rstrip("="), urlsafe.rstrip("=")):
        register_secret(form)
    register_secret(raw.hex())
    register_secret(raw.hex().upper())


# The settings whose values are secrets (WALLET_PSPS holds two per route).
SECRET_SETTINGS = (
    "WALLET_ADMIN_API_KEY",
    "WALLET_MASTER_KEY",
    "WALLET_OPERATOR_WEBHOOK_SECRET",
)


def register_env_secrets(env: Mapping[str, str] | None = None) -> None:
    """Redact every secret setting of the environment. Never fails: a malformed setting is for
    :mod:`app.config` to report, and whatever could be read is registered."""
    env = os.environ if env is None else env
    for name in SECRET_SETTINGS:
        register_secret(env.get(name))
    master = env.get("WALLET_MASTER_KEY")
    if master:
        try:
            register_secret_bytes(base64.b64decode(master, validate=True))
        except (binascii.Error, ValueError):
            pass
    try:
        psps = jsonlib.loads(env.get("WALLET_PSPS") or "[]")
    except ValueError:
        return
    for psp in psps if isinstance(psps, list) else ():
        if isinstance(psp, dict):
            for field in ("api_key", "webhook_secret"):
                value = psp.get(field)
                register_secret(value if isinstance(value, str) else None)


def redact(text: str) -> str:
    """``text`` with everything that looks like one of our secrets replaced."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "color_message",  # uvicorn's coloured copy of its message
}


class ContextFilter(logging.Filter):
    """Stamps each record with the correlation id of the context that logged it, and with the
    current span's ``trace_id`` and ``span_id`` when tracing.

    A handler filter runs synchronously where the record was logged, so the context variable is
    still the request's, whatever the formatter does later.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = _request_id.get()
        ids = tracing.ids()  # None when tracing is off or no span is current
        if ids is not None:
            record.trace_id, record.span_id = ids
        return True


class RedactFilter(logging.Filter):
    """Rewrites a record's message, exception text and string extras with :func:`redact`."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for name, value in list(record.__dict__.items()):
            if name not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, name, redact(value))
        return True


def _rfc3339(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, request_id, extras, exc_info."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD_ATTRS:
                line[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = record.stack_info
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """A human line for a terminal; the correlation id and extras follow as ``name=value``."""

    def __init__(self) -> None:
        # The time of day is enough for a person watching; JSON lines carry the full timestamp.
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = {"request_id": getattr(record, "request_id", None)}
        fields.update((k, v) for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS)
        tail = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        if not tail:
            return text
        # Keep a traceback last, where a reader expects it.
        head, sep, trace = text.partition("\n")
        return f"{head} {tail}{sep}{trace}"


def make_handler(stream: IO[str] | None = None, *, json: bool = True) -> logging.Handler:
    """A stream handler with the wallet's filters and formatter (stderr by default)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactFilter())
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    return handler


def configure_logging(level: int | str, json: bool, stream: IO[str] | None = None) -> None:
    """Send every logger's records, uvicorn's included, through one wallet handler on the root
    logger. Like :func:`logging.basicConfig`, it leaves a root logger that already has handlers
    (a host application's, or pytest's) alone."""
    logging.basicConfig(level=level, handlers=[make_handler(stream, json=json)])


def json_from_env(env: Mapping[str, str] | None = None, *, terminal: bool = False) -> bool:
    """Whether ``WALLET_LOG_FORMAT`` asks for JSON lines rather than text. Unset, it is JSON
    (for log collectors), or text for a person at a ``terminal``."""
    raw = (os.environ if env is None else env).get("WALLET_LOG_FORMAT") or (
        "text" if terminal else "json"
    )
    if raw not in ("json", "text"):
        raise ConfigError(f"WALLET_LOG_FORMAT must be json or text, got {raw!r}")
    return raw == "json"


def ensure_configured() -> None:
    """Configure logging from the environment unless something already did.

    ``wallet serve --workers N`` starts each worker in a fresh interpreter, where the parent's
    logging set-up is gone and the root logger has no handler: the app factory calls this there.
    The secret settings of the environment are registered for redaction in any case.
    """
    configure_logging(logging.INFO, json=json_from_env())
    register_env_secrets()
