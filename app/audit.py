"""The audit log: who did what to which resource, before and after.

Every administrative write of any domain (operator actions, payments) records its entry in the
same transaction as the change itself, so the log can neither miss a change nor invent one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from app.db import Queries


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts (an API key's id, or the bootstrap admin) and the request that carried it."""

    name: str
    request_id: str | None = None


async def audit(
    conn: asyncpg.Connection,
    q: Queries,
    actor: Actor,
    action: str,
    target: str,
    before: Any,
    after: Any,
) -> None:
    await conn.execute(q.insert_audit, actor.name, action, target, before, after, actor.request_id)
