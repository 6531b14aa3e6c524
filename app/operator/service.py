"""Operator rules: providers and keys, players, sessions, status, limits, adjustments, API keys.

Functions take a connection (the caller owns the connection; each write opens its transaction) and
raise :mod:`app.web.errors`. Every administrative write records an audit entry in the same
transaction as the change itself, so the log can neither miss a change nor invent one.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

import asyncpg

from app.audit import Actor, audit
from app.db import Queries
from app.operator.views import record, rfc3339
from app.seamless.keys import master_key_from_env, seal_key
from app.seamless.service import token_hash
from app.web.auth import ROLES, key_hash, new_key
from app.web.errors import IdempotencyConflict, InvalidRequest, NotFound

STATUSES = ("active", "blocked", "self_excluded")
LIMIT_KINDS = ("deposit", "wager", "loss")
LIMIT_PERIODS = ("daily", "weekly", "monthly")


def _new_provider_key() -> tuple[str, bytes]:
    return "k_" + secrets.token_hex(6), secrets.token_bytes(32)


def _shown(key_id: str, secret: bytes) -> dict[str, str]:
    return {"key_id": key_id, "key": base64.b64encode(secret).decode()}


async def create_provider(
    conn: asyncpg.Connection,
    q: Queries,
    code: str,
    name: str,
    actor: Actor,
    *,
    master_key: bytes | None = None,
) -> dict[str, Any]:
    """Register a provider with its first key; the key is returned once and never again, and
    stored sealed under ``master_key`` (``WALLET_MASTER_KEY`` of the environment by default)."""
    master = master_key if master_key is not None else master_key_from_env()
    async with conn.transaction():
        row = await conn.fetchrow(q.insert_provider, code, name)
        if row is None:
            raise IdempotencyConflict(f"provider {code!r} already exists", field="code")
        key_id, secret = _new_provider_key()
        sealed = seal_key(master, code, key_id, secret)
        await conn.execute(q.insert_current_key, code, key_id, sealed)
        await audit(
            conn,
            q,
            actor,
            "provider.create",
            f"provider:{code}",
            None,
            {"code": code, "name": name, "keys": [key_id]},
        )
    return {"code": code, "name": name, "keys": [_shown(key_id, secret)]}


async def rotate_key(
    conn: asyncpg.Connection,
    q: Queries,
    code: str,
    actor: Actor,
    *,
    master_key: bytes | None = None,
) -> dict[str, Any]:
    """A new current key; the old current stays active as previous, the old previous retires.
    The new key is stored sealed like in :func:`create_provider`."""
    master = master_key if master_key is not None else master_key_from_env()
    async with conn.transaction():
        if await conn.fetchrow(q.lock_provider, code) is None:
            raise NotFound(f"provider {code!r} not found")
        before = _active(await conn.fetch(q.provider_keys, code))
        await conn.execute(q.retire_previous_key, code)
        await conn.execute(q.demote_current_key, code)
        key_id, secret = _new_provider_key()
        sealed = seal_key(master, code, key_id, secret)
        await conn.execute(q.insert_current_key, code, key_id, sealed)
        after = _active(await conn.fetch(q.provider_keys, code))
        await audit(
            conn,
            q,
            actor,
            "provider.rotate_key",
            f"provider:{code}",
            {"active": before},
            {"active": after},
        )
    return {"code": code, "keys": [_shown(key_id, secret)], "active": after}


def _active(rows: list[asyncpg.Record]) -> list[dict[str, str]]:
    return [{"key_id": r["key_id"], "state": r["state"]} for r in rows if r["state"] != "retired"]


async def get_player(conn: asyncpg.Connection, q: Queries, player_id: str) -> dict[str, Any]:
    row = await conn.fetchrow(q.get_player, player_id)
    if row is None:
        raise NotFound(f"player {player_id!r} not found")
    player = record(row)
    player.update(await _limits(conn, q, player_id))
    return player


async def _limits(conn: asyncpg.Connection, q: Queries, player_id: str) -> dict[str, Any]:
    """``limits`` in force (``{kind: {period: amount}}``) and ``pending_limits`` changes."""
    limits: dict[str, dict[str, int]] = {kind: {} for kind in LIMIT_KINDS}
    pending = []
    for r in await conn.fetch(q.player_limit_rows, player_id):
        if r["amount"] is not None:
            limits[r["kind"]][r["period"]] = r["amount"]
        if r["next_from"] is not None and r["amount"] != r["next_amount"]:
            pending.append(
                {
                    "kind": r["kind"],
                    "period": r["period"],
                    "amount": r["next_amount"],
                    "effective_at": rfc3339(r["next_from"]),
                }
            )
    return {"limits": limits, "pending_limits": pending}


async def create_player(
    conn: asyncpg.Connection, q: Queries, player_id: str, currency: str, actor: Actor
) -> tuple[dict[str, Any], bool]:
    """Create a player with an empty wallet; (player, created). Creating it again is harmless."""
    async with conn.transaction():
        try:
            async with conn.transaction():  # a savepoint: the conflict must not end the outer one
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
        if created:
            await audit(
                conn, q, actor, "player.create", f"player:{player_id}", None, {"currency": currency}
            )
    return player, created


async def set_status(
    conn: asyncpg.Connection, q: Queries, player_id: str, status: str, actor: Actor
) -> dict[str, Any]:
    if status not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}", field="status")
    return await _change_player(
        conn, q, player_id, actor, "player.status", "status", status, q.set_player_status
    )


async def set_kyc_tier(
    conn: asyncpg.Connection, q: Queries, player_id: str, tier: int, actor: Actor
) -> dict[str, Any]:
    return await _change_player(
        conn, q, player_id, actor, "player.kyc", "kyc_tier", tier, q.set_kyc_tier
    )


async def _change_player(
    conn: asyncpg.Connection,
    q: Queries,
    player_id: str,
    actor: Actor,
    action: str,
    field: str,
    value: Any,
    statement: str,
) -> dict[str, Any]:
    """Set one field of a player, audited as ``action`` with its value before and after."""
    async with conn.transaction():
        before = await get_player(conn, q, player_id)
        await conn.execute(statement, player_id, value)
        await audit(
            conn, q, actor, action, f"player:{player_id}", {field: before[field]}, {field: value}
        )
        return await get_player(conn, q, player_id)


async def set_limits(
    conn: asyncpg.Connection,
    q: Queries,
    player_id: str,
    limits: dict[str, dict[str, int | None]],
    cooling_off_seconds: int,
    actor: Actor,
) -> dict[str, Any]:
    """Set (an amount) or remove (null) limits given as ``{kind: {period: amount}}``.

    Lowering or adding a limit applies at once; raising or removing one applies after
    ``cooling_off_seconds``, so that a moment's impulse cannot undo a player's protection.
    """
    async with conn.transaction():
        # First, the player's account row lock: concurrent changes of one player's limits then
        # run one after the other, each reading the state it changes and auditing it, instead of
        # two first settings of one limit both inserting it. wallet_set_limit takes the same
        # lock, so postings cannot fall between it counting the totals and keeping them.
        await conn.execute(q.lock_player_account, player_id)
        before = await get_player(conn, q, player_id)
        for kind, periods in limits.items():
            for period, amount in periods.items():
                await conn.execute(
                    q.set_limit, player_id, kind, period, amount, float(cooling_off_seconds)
                )
        after = await get_player(conn, q, player_id)
        await audit(
            conn,
            q,
            actor,
            "player.limits",
            f"player:{player_id}",
            {k: before[k] for k in ("limits", "pending_limits")},
            {k: after[k] for k in ("limits", "pending_limits")},
        )
    return after


async def issue_session(
    conn: asyncpg.Connection,
    q: Queries,
    player_id: str,
    provider: str,
    game_id: str,
    ttl_seconds: int,
) -> dict[str, Any]:
    """A new session token for one player at one provider; only its hash is stored. The same
    statement brings the player into the provider's scope (sql/010), for good."""
    if await conn.fetchrow(q.get_player, player_id) is None:
        raise NotFound(f"player {player_id!r} not found")
    if await conn.fetchval(q.provider_exists, provider) is None:
        raise InvalidRequest(f"unknown provider {provider!r}", field="provider")
    token = secrets.token_urlsafe(32)
    expires_at = await conn.fetchval(
        q.insert_session, token_hash(token), player_id, provider, game_id, float(ttl_seconds)
    )
    return {"session_token": token, "expires_at": rfc3339(expires_at)}


async def adjust(
    conn: asyncpg.Connection,
    q: Queries,
    player_id: str,
    amount: int,
    reason: str,
    idempotency_key: str,
    actor: Actor,
) -> tuple[dict[str, Any], bool]:
    """A signed manual credit or debit; (adjustment, created). Same key and body: same answer."""
    async with conn.transaction():
        row = await conn.fetchrow(q.adjust, idempotency_key, player_id, amount, reason, actor.name)
        if row["reason"] == "player_not_found":
            raise NotFound(f"player {player_id!r} not found")
        if row["reason"] == "idempotency_conflict":
            raise IdempotencyConflict("Idempotency-Key was already used with another body")
        if row["reason"] == "invalid_field":  # a credit past the largest balance BIGINT holds
            raise InvalidRequest(row["detail"], field="amount")
        if row["reason"] == "insufficient_funds":
            raise InvalidRequest(
                f"a debit of {-amount} exceeds the balance of {row['balance']}", field="amount"
            )
        tx = await conn.fetchrow(q.adjustment_by_id, row["wallet_transaction_id"])
        adjustment = record(tx)
        adjustment["id"] = str(tx["id"])
        created = not row["duplicate"]
        if created:
            await audit(
                conn,
                q,
                actor,
                "player.adjust",
                f"player:{player_id}",
                {"balance": tx["balance_after"] - amount},
                {
                    "balance": tx["balance_after"],
                    "amount": amount,
                    "reason": reason,
                    "adjustment_id": adjustment["id"],
                },
            )
    return adjustment, created


async def create_api_key(
    conn: asyncpg.Connection, q: Queries, role: str, name: str, actor: Actor
) -> dict[str, Any]:
    """A new API key; the secret is in this answer only."""
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", field="role")
    key_id, secret = new_key(role)
    async with conn.transaction():
        row = await conn.fetchrow(
            q.insert_api_key, key_id, key_hash(secret), role, name, actor.name
        )
        created = record(row)
        await audit(
            conn, q, actor, "apikey.create", f"apikey:{key_id}", None, {"role": role, "name": name}
        )
    return {**created, "key": secret}


async def revoke_api_key(
    conn: asyncpg.Connection, q: Queries, key_id: str, actor: Actor
) -> dict[str, Any]:
    async with conn.transaction():
        row = await conn.fetchrow(q.revoke_api_key, key_id)
        if row is None:
            raise NotFound(f"no active API key {key_id!r}")
        await audit(
            conn,
            q,
            actor,
            "apikey.revoke",
            f"apikey:{key_id}",
            {"revoked": False},
            {"revoked": True},
        )
    return record(row)
