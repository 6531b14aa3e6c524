"""Rounds made old in a test, as a provider's forgotten ones are."""

from __future__ import annotations

import asyncpg


async def age_round(
    pool: asyncpg.Pool, provider: str, player_id: str, round_id: str, days: int = 2
) -> None:
    """Move the round ``days`` into the past. A round's created_at never changes but here, so
    the stale sweep (which reads each round once, when it comes of age,
    sql/migrations/019) is told to read every round again."""
    await pool.execute(
        "UPDATE rounds SET created_at = created_at - make_interval(days => $4) "
        "WHERE provider = $1 AND player_id = $2 AND round_id = $3",
        provider,
        player_id,
        round_id,
        days,
    )
    await pool.execute("UPDATE stale_sweep SET swept_to = '-infinity'")
