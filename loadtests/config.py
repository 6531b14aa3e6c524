"""Load-test configuration from the environment, read once."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import orjson


@dataclass(frozen=True)
class LoadConfig:
    """What the profiles need: the provider's key and the seeded players (see ``seed.py``)."""

    provider: str
    key: str
    key_id: str | None
    players: list[dict[str, str]]
    bet_amount: int
    currency: str

    @classmethod
    def from_env(cls) -> LoadConfig:
        seed_file = Path(os.environ.get("WALLET_LOAD_SEED", "loadtests/seed.json"))
        if not seed_file.exists():
            raise SystemExit(f"{seed_file} not found: run `python -m loadtests.seed` first")
        seed = orjson.loads(seed_file.read_bytes())
        return cls(
            provider=seed["provider"],
            key=seed["key"],
            key_id=seed.get("key_id"),
            players=seed["players"],
            bet_amount=int(os.environ.get("WALLET_LOAD_BET_AMOUNT", "100")),
            currency=seed.get("currency", "EUR"),
        )
