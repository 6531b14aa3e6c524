"""Operator rules: providers and keys, players, sessions, status, limits, adjustments.

Functions take a connection (the caller owns the transaction) and raise :mod:`app.errors`.
"""

from __future__ import annotations

import base64
import secrets
from datetime import datetime
from typing import Any

import asyncpg

from app.db import Queries
from app.errors import IdempotencyConflict, InvalidRequest, NotFound
from app.seamless.service import token_hash

STATUSES = ("active", "blocked", "self_excluded")
LIMIT_KINDS = ("deposit", "wager", "loss")
LIMIT_PERIODS = ("daily", "weekly", "monthly")


def _new_key() -> tuple[str, bytes]:
    return "k_" + secrets.token_hex(6), secrets.token_bytes(32)


def _shown(key_id: str, secret: bytes) -> dict[str, str]:
    return {"key_id": key_id, "key": base64.b64encode(secret).decode()}


async def create_provider(
    conn: asyncpg.Connection, q: Queries, code: str, name: str
) -> dict[str, Any]:
    """Register a provider with its first key; the key is returned once and never again."""
    async with conn.transaction():
        row = await conn.fetchrow(q.insert_provider, code, name)
        if row is None:
            raise IdempotencyConflict(f"provider {code!r} already exists", field="code")
        key_id, secret = _new_key()
        await conn.execute(q.insert_current_key, code, key_id, secret)
    return {"code": code, "name": name, "keys": [_shown(key_id, secret)]}


async def rotate_key(conn: asyncpg.Connection, q: Queries, code: str) -> dict[str, Any]:
    """A new current key; the old current stays active as previous, the old previous retires."""
    async with conn.transaction():
        if await conn.fetchrow(q.lock_provider, code) is None:
            raise NotFound(f"provider {code!r} not found")
        await conn.execute(q.retire_previous_key, code)
        await conn.execute(q.demote_current_key, code)
        key_id, secret = _new_key()
        await conn.execute(q.insert_current_key, code, key_id, secret)
        keys = await conn.fetch(q.provider_keys, code)
    return {
        "code": code,
        "keys": [_shown(key_id, secret)],
        "active": [
            {"key_id": k["key_id"], "state": k["state"]} for k in keys if k["state"] != "retired"
        ],
    }


async def get_player(conn: asyncpg.Connection, q: Queries, player_id: str) -> dict[str, Any]:
    row = await conn.fetchrow(q.get_player, player_id)
    if row is None:
        raise NotFound(f"player {player_id!r} not found")
    limits = await conn.fetch(q.player_limits, player_id)
    return {
        "player_id": row["player_id"],
        "currency": row["currency"],
        "balance": row["balance"],
        "status": row["status"],
        "limits": _limits_object(limits),
        "created_at": _rfc3339(row["created_at"]),
        "updated_at": _rfc3339(row["updated_at"]),
    }


async def create_player(
    conn: asyncpg.Connection, q: Queries, player_id: str, currency: str
) -> tuple[dict[str, Any], bool]:
    """Create a player with an empty wallet; (player, created). Creating it again is harmless."""
    try:
        await conn.execute(q.insert_player, player_id, currency)
        created = True
    except asyncpg.UniqueViolationError:
        created = False
    player = await get_player(conn, q, player_id)
    if not created and player["currency"] != currency:
        raise IdempotencyConflict(
            f"player {player_id!r} already exists with currency {player['currency']}",
            field="currency",
        )
    return player, created


async def set_status(
    conn: asyncpg.Connection, q: Queries, player_id: str, status: str
) -> dict[str, Any]:
    if status not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}", field="status")
    if await conn.fetchrow(q.set_player_status, player_id, status) is None:
        raise NotFound(f"player {player_id!r} not found")
    return await get_player(conn, q, player_id)


async def set_limits(
    conn: asyncpg.Connection, q: Queries, player_id: str, limits: dict[str, dict[str, int | None]]
) -> dict[str, Any]:
    """Set (an amount) or clear (null) limits given as ``{kind: {period: amount}}``."""
    async with conn.transaction():
        if await conn.fetchrow(q.get_player, player_id) is None:
            raise NotFound(f"player {player_id!r} not found")
        for kind, periods in limits.items():
            for period, amount in periods.items():
                if amount is None:
                    await conn.execute(q.delete_player_limit, player_id, kind, period)
                else:
                    await conn.execute(q.upsert_player_limit, player_id, kind, period, amount)
    return await get_player(conn, q, player_id)


async def issue_session(
    conn: asyncpg.Connection,
    q: Queries,
    player_id: str,
    provider: str,
    game_id: str,
    ttl_seconds: int,
) -> dict[str, Any]:
    """A new session token for one player at one provider; only its hash is stored."""
    if await conn.fetchrow(q.get_player, player_id) is None:
        raise NotFound(f"player {player_id!r} not found")
    if await conn.fetchval(q.provider_exists, provider) is None:
        raise InvalidRequest(f"unknown provider {provider!r}", field="provider")
    token = secrets.token_urlsafe(32)
    expires_at = await conn.fetchval(
        q.insert_session, token_hash(token), player_id, provider, game_id, float(ttl_seconds)
    )
    return {"session_token": token, "expires_at": _rfc3339(expires_at)}


async def adjust(
    conn: asyncpg.Connection,
    q: Queries,
    player_id: str,
    amount: int,
    reason: str,
    idempotency_key: str,
    actor: str,
) -> tuple[dict[str, Any], bool]:
    """A signed manual credit or debit; (adjustment, created). Same key and body: same answer."""
    row = await conn.fetchrow(q.adjust, idempotency_key, player_id, amount, reason, actor)
    if row["reason"] == "player_not_found":
        raise NotFound(f"player {player_id!r} not found")
    if row["reason"] == "idempotency_conflict":
        raise IdempotencyConflict("Idempotency-Key was already used with another body")
    if row["reason"] == "insufficient_funds":
        raise InvalidRequest(
            f"a debit of {-amount} exceeds the balance of {row['balance']}", field="amount"
        )
    tx = await conn.fetchrow(q.adjustment_by_id, row["wallet_transaction_id"])
    return {
        "id": str(tx["id"]),
        "player_id": tx["player_id"],
        "amount": tx["amount"],
        "currency": tx["currency"],
        "reason": tx["reason"],
        "balance_after": tx["balance_after"],
        "idempotency_key": tx["idempotency_key"],
        "created_at": _rfc3339(tx["created_at"]),
    }, not row["duplicate"]


def _limits_object(rows: list[asyncpg.Record]) -> dict[str, dict[str, int]]:
    limits: dict[str, dict[str, int]] = {kind: {} for kind in LIMIT_KINDS}
    for r in rows:
        limits[r["kind"]][r["period"]] = r["amount"]
    return limits


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{moment.microsecond // 1000:03d}Z" if moment.microsecond else "Z"
    )
