"""The audit log: who did what to which resource, before and after.

Every administrative write of any domain (operator actions, payments) records its entry in the
same transaction as the change itself, so the log can neither miss a change nor invent one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import asyncpg

from app.db import Queries

# Every action the log records, declared here once: ``audit()`` takes only these (mypy checks
# each call), and the audit log's answers and filters read them.
Action = Literal[
    "provider.create",
    "provider.rotate_key",
    "player.create",
    "player.status",
    "player.kyc",
    "player.limits",
    "player.adjust",
    "apikey.create",
    "apikey.revoke",
    "event.replay",
    "withdrawal.approve",
    "withdrawal.reject",
    "withdrawal.resolve",
    "free_rounds.grant",
    "free_rounds.withdraw",
    "round.settle",
]
ACTIONS: tuple[Action, ...] = get_args(Action)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts (an API key's id, or the bootstrap admin) and the request that carried it."""

    name: str
    request_id: str | None = None


async def audit(
    conn: asyncpg.Connection,
    q: Queries,
    actor: Actor,
    action: Action,
    target: str,
    before: Any,
    after: Any,
) -> None:
    await conn.execute(
        *q.insert_audit(
            actor=actor.name,
            action=action,
            target=target,
            before=before,
            after=after,
            request_id=actor.request_id,
        )
    )
