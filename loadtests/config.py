"""Load-test configuration: the seed file (``python -m loadtests.seed``), overridden by the
environment, read once when Locust loads the locustfile.

Every setting is documented in docs/loadtests.md; ``WALLET_LOAD_*`` names only, so a run is
reproducible from its environment alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

GAME_ID = "load-slot"  # the game of every seeded session and every round

# The mixed profile's task weights, per event (and the variants that are not plain events).
# Roughly one session of ~50 rounds: a bet and its result per round, a few balance looks, now and
# then a cancel or a correction, and one login and one logout per session. Of contract 1.1: a
# jackpot and a bonus now and then, a round closed by end_round, free rounds from a grant, and a
# promotion's credit.
DEFAULT_MIX = {
    "bet": 45,
    "result": 40,
    "jackpot": 1,
    "bonus": 1,
    "end_round": 2,
    "free_round": 2,
    "promo_win": 1,
    "balance": 6,
    "cancel": 3,
    "cancel_unknown": 1,
    "result_change": 2,
    "login": 1,
    "logout": 1,
    "overdraft": 1,
}


def parse_mix(text: str) -> dict[str, int]:
    """``"bet=50,result=40,cancel=3"`` -> weights; names not given keep no weight (not run)."""
    mix: dict[str, int] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, weight = part.partition("=")
        name = name.strip()
        if not sep or name not in DEFAULT_MIX or not weight.strip().isdigit():
            raise SystemExit(
                f"WALLET_LOAD_MIX: {part.strip()!r} is not name=weight with a name among "
                f"{', '.join(DEFAULT_MIX)}"
            )
        mix[name] = int(weight)
    if not any(mix.values()):
        raise SystemExit("WALLET_LOAD_MIX: at least one weight must be above 0")
    return mix


def env_int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if not raw.strip().isdigit() or int(raw) < minimum:
        raise SystemExit(f"{name}: {raw!r} is not an integer >= {minimum}")
    return int(raw)


@dataclass(frozen=True)
class LoadConfig:
    """What the profiles need: where the wallet is, the provider's key and the seeded players."""

    provider: str
    key: str  # base64 of the provider's 32-byte key
    key_id: str | None
    players: list[dict[str, str]]  # {"player_id", "session_token"}, the first N of the seed
    currency: str
    bet_amount: int
    hot_players: int
    mix: dict[str, int]
    host: str | None = None
    api_key: str | None = None  # an operator API key: lets the mixed profile issue sessions
    storm_copies: int = 3

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LoadConfig:
        env = os.environ if env is None else env
        seed_file = Path(env.get("WALLET_LOAD_SEED", "loadtests/seed.json"))
        if not seed_file.exists():
            raise SystemExit(f"{seed_file} not found: run `make load-seed` first")
        seed = orjson.loads(seed_file.read_bytes())
        players = seed["players"]
        count = env_int(env, "WALLET_LOAD_PLAYERS", len(players))
        if count > len(players):
            raise SystemExit(
                f"WALLET_LOAD_PLAYERS={count} but {seed_file} holds {len(players)} players"
            )
        return cls(
            provider=env.get("WALLET_LOAD_PROVIDER") or seed["provider"],
            key=env.get("WALLET_LOAD_KEY") or seed["key"],
            key_id=env.get("WALLET_LOAD_KEY_ID") or seed.get("key_id"),
            players=players[:count],
            currency=seed.get("currency", "EUR"),
            bet_amount=env_int(env, "WALLET_LOAD_BET_AMOUNT", 100),
            hot_players=min(env_int(env, "WALLET_LOAD_HOT_PLAYERS", 4), count),
            mix=parse_mix(env["WALLET_LOAD_MIX"]) if env.get("WALLET_LOAD_MIX") else DEFAULT_MIX,
            host=env.get("WALLET_LOAD_HOST") or None,
            api_key=env.get("WALLET_LOAD_API_KEY") or seed.get("api_key"),
            storm_copies=env_int(env, "WALLET_LOAD_STORM_COPIES", 3),
        )
