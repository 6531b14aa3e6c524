"""The load tests themselves: the seeds make what the profiles need, and each profile, run by
Locust against a served wallet, speaks the contract without a single unexpected code and leaves
the ledger exact.

Locust runs in subprocesses (it monkey-patches the standard library with gevent), against
`wallet serve` in another, on the session's Postgres and Redis.
"""

from __future__ import annotations

import asyncio
import csv
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from starlette.types import ASGIApp

from app.client import ProviderClient
from app.dev.devstack import free_port
from loadtests.config import DEFAULT_MIX, LoadConfig, parse_mix
from loadtests.seed import create_api_key, seed, seed_over_api
from tests.fixtures.app import Operator
from tests.fixtures.servers import Services
from tests.support.keys import ADMIN_KEY
from tests.support.processes import wait_for

ROOT = Path(__file__).resolve().parents[2]


async def test_seed_funds_every_player_through_the_ledger_and_audits_it(
    services: Services, pool: asyncpg.Pool, operator: Operator
) -> None:
    seeded = await seed(services.database_url, 50, 5_000, "EUR")

    assert set(seeded) == {"provider", "key", "key_id", "currency", "players"}
    ids = [p["player_id"] for p in seeded["players"]]
    assert len(set(ids)) == 50 and all(p["session_token"] for p in seeded["players"])
    async with pool.acquire() as conn:
        balances = await conn.fetch(
            "SELECT p.player_id, a.balance FROM players p JOIN accounts a ON a.id = p.account_id"
            " WHERE p.player_id = ANY($1)",
            ids,
        )
        postings = await conn.fetch(
            "SELECT player_id, delta, kind FROM ledger_transactions"
            " WHERE source = '#adjustment' AND player_id = ANY($1)",
            ids,
        )
        audited = await conn.fetch(
            "SELECT action, count(*) AS n FROM audit_log WHERE target = ANY($1) GROUP BY action",
            [f"player:{p}" for p in ids],
        )
    assert {r["player_id"]: r["balance"] for r in balances} == dict.fromkeys(ids, 5_000)
    assert sorted((r["player_id"], r["delta"], r["kind"]) for r in postings) == sorted(
        (p, 5_000, "adjustment") for p in ids
    )
    assert {r["action"]: r["n"] for r in audited} == {"player.create": 50, "player.adjust": 50}
    assert await operator.call("GET", "/v1/ledger/check", expect=200) == {"ok": True}


async def test_seed_over_the_operator_api(asgi: ASGIApp, operator: Operator) -> None:
    transport = httpx.ASGITransport(app=asgi)
    seeded = await seed_over_api(
        "http://wallet.test", ADMIN_KEY, 3, 700, "EUR", concurrency=2, transport=transport
    )

    for player in seeded["players"]:
        assert await operator.balance(player["player_id"]) == 700
    async with httpx.AsyncClient(transport=transport, base_url="http://wallet.test") as http:
        client = ProviderClient(
            "http://wallet.test",
            seeded["provider"],
            seeded["key"],
            key_id=seeded["key_id"],
            http=http,
        )
        first = seeded["players"][0]
        login = await client.send(
            "login", player_id=first["player_id"], session_token=first["session_token"]
        )
        assert (login["code"], login["balance"]) == ("R0", 700)
        # The operator key it made may issue sessions (the mixed profile's game launches).
        issued = await http.post(
            f"/v1/players/{first['player_id']}/sessions",
            json={"provider": seeded["provider"], "game_id": "load-slot"},
            headers={"authorization": f"Bearer {seeded['api_key']}"},
        )
        assert issued.status_code == 201, issued.text
        again = await client.send(
            "login", player_id=first["player_id"], session_token=issued.json()["session_token"]
        )
        assert again["code"] == "R0"


def test_config_takes_the_first_players_and_environment_overrides(tmp_path: Path) -> None:
    seed_file = tmp_path / "seed.json"
    players = [{"player_id": f"p{i}", "session_token": f"t{i}"} for i in range(5)]
    seed_file.write_bytes(
        orjson.dumps({"provider": "prov", "key": "a2V5", "key_id": "k_1", "players": players})
    )
    env = {"WALLET_LOAD_SEED": str(seed_file)}

    plain = LoadConfig.from_env(env)
    assert (plain.provider, plain.key_id, plain.players, plain.mix) == (
        "prov",
        "k_1",
        players,
        DEFAULT_MIX,
    )
    assert (plain.bet_amount, plain.hot_players, plain.currency) == (100, 4, "EUR")

    custom = LoadConfig.from_env(
        env
        | {
            "WALLET_LOAD_PLAYERS": "3",
            "WALLET_LOAD_HOT_PLAYERS": "9",
            "WALLET_LOAD_PROVIDER": "other",
            "WALLET_LOAD_KEY": "b3RoZXI=",
            "WALLET_LOAD_KEY_ID": "k_2",
            "WALLET_LOAD_HOST": "http://wallet:8080",
            "WALLET_LOAD_MIX": "bet=5, result=4",
        }
    )
    assert custom.players == players[:3]
    assert custom.hot_players == 3  # never more hot players than players in use
    assert (custom.provider, custom.key, custom.key_id) == ("other", "b3RoZXI=", "k_2")
    assert (custom.host, custom.mix) == ("http://wallet:8080", {"bet": 5, "result": 4})

    for bad in (
        {"WALLET_LOAD_PLAYERS": "6"},
        {"WALLET_LOAD_BET_AMOUNT": "1.5"},
        {"WALLET_LOAD_MIX": "bet=1,megaways=2"},
        {"WALLET_LOAD_MIX": "bet=0"},
        {"WALLET_LOAD_SEED": str(tmp_path / "missing.json")},
    ):
        with pytest.raises(SystemExit):
            LoadConfig.from_env(env | bad)
    assert parse_mix("bet=1,,logout=2") == {"bet": 1, "logout": 2}


# --- the profiles, run by Locust against `wallet serve` ----------------------------------------

EQUAL_MIX = ",".join(f"{name}=1" for name in DEFAULT_MIX)  # every path, often, in a short run
USERS = 4  # per profile


@pytest.fixture(scope="module")
def served(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`wallet serve` on the session's servers (admin and master key from the test session)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_LOAD_")}
    env.update(
        WALLET_DATABASE_URL=services.database_url,
        WALLET_REDIS_URL=services.redis_url,
        WALLET_LOG_FORMAT="text",
    )
    log = (tmp_path_factory.mktemp("served") / "serve.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/readyz", proc, timeout=60)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()


def run_locust(
    profile: str, seed_file: Path, out: Path, host: str | None, env: dict[str, str]
) -> subprocess.Popen[str]:
    """Start ``locust --headless`` on one profile for 2 s (``--host`` when given)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_LOAD_")}
    full_env.update(WALLET_LOAD_SEED=str(seed_file), **env)
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "locust", "-f", "loadtests/locustfile.py", profile),
            *("--headless", "-u", str(USERS), "-r", "100", "-t", "2s"),
            *(("--host", host) if host else ()),
            *("--csv", str(out), "--only-summary", "--loglevel", "INFO"),
        ],
        env=full_env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def report(out: Path) -> tuple[dict[str, tuple[int, int]], list[dict[str, str]], list[Any]]:
    """Locust's CSVs: {name: (requests, failures)}, the failure rows, the exception rows."""
    with open(f"{out}_stats.csv") as f:
        stats = {
            r["Name"]: (int(r["Request Count"]), int(r["Failure Count"])) for r in csv.DictReader(f)
        }
    with open(f"{out}_failures.csv") as f:
        failures = list(csv.DictReader(f))
    with open(f"{out}_exceptions.csv") as f:
        exceptions = list(csv.DictReader(f))
    return stats, failures, exceptions


async def wallet_failures(host: str, provider: str) -> list[tuple[str, str, str]]:
    """The served wallet's own record of the R1 to R3 answers it gave this provider."""
    found: list[tuple[str, str, str]] = []
    cursor = None
    async with httpx.AsyncClient(base_url=host) as http:
        while True:
            params = {
                "provider": provider,
                "limit": "200",
                **({"cursor": cursor} if cursor else {}),
            }
            page = (
                await http.get(
                    "/v1/webhooks/failures",
                    params=params,
                    headers={"authorization": f"Bearer {ADMIN_KEY}"},
                )
            ).json()
            found += [(c["event"], c["code"], c["reason"]) for c in page["data"]]
            cursor = page["next_cursor"]
            if cursor is None:
                return found


# What each profile must have done, by name in Locust's report; the names counted once per posted
# bet; and the only R1 to R3 answers the wallet may have given it: those the contract requires
# and the profile expects.
PROFILES: dict[str, dict[str, Any]] = {
    "BetBurst": {
        "balance": 10_000_000,
        "env": {
            "WALLET_LOAD_SHAPE": "burst",
            "WALLET_LOAD_QUIET_SECONDS": "1",
            "WALLET_LOAD_BURST_SECONDS": "1",
        },
        "names": {"bet R0", "result R0"},
        "one_bet_each": ("bet R0",),
        "refusals": set(),
    },
    "HotPlayer": {
        # 2 players shared by 4 users, with one bet's worth each: a player's first loss leaves it
        # at 0 for good (no stake, no result), so R4 soon comes, and is expected.
        "balance": 100,
        "env": {"WALLET_LOAD_HOT_PLAYERS": "2"},
        "names": {"bet R0", "bet R4", "result R0"},
        "one_bet_each": ("bet R0",),
        "refusals": set(),
    },
    "Mixed": {
        "balance": 10_000_000,
        "env": {"WALLET_LOAD_MIX": EQUAL_MIX},
        "names": {
            "operator session 201",
            "login R0",
            "bet R0",
            "result R0",
            "cancel R0",
            "late bet R1",
            "result_change R0",
            "balance R0",
            "logout R0",
            "bet R4",
            # Of contract 1.1: kinds of result, end of round, free rounds, promotions.
            "result jackpot R0",
            "result bonus R0",
            "result open R0",
            "end_round R0",
            "operator free rounds 201",
            "free bet R0",
            "result free R0",
            "promo_win R0",
        },
        # Not the overdraft (R4) or the late bets (R1); the free-round bets are bets too.
        "one_bet_each": ("bet R0", "free bet R0"),
        "refusals": {("bet", "R1", "transaction_cancelled")},
    },
    "DuplicateStorm": {
        "balance": 10_000_000,
        "env": {},
        "names": {
            "bet storm R0",
            "bet replay R0",
            "bet retry R0",
            "result storm R0",
            "result retry R0",
            "replay check",
            "retry check",
        },
        "one_bet_each": ("bet replay R0",),  # the one replay per round that found the posting
        "refusals": {
            ("bet", "R1", "request_in_progress"),
            ("result", "R1", "request_in_progress"),
            ("cancel", "R1", "request_in_progress"),
        },
    },
}


@pytest.mark.slow
async def test_every_profile_runs_clean_and_leaves_the_ledger_exact(
    services: Services, served: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    seeds: dict[str, dict[str, Any]] = {}
    for profile, spec in PROFILES.items():
        seeds[profile] = await seed(services.database_url, 10, spec["balance"], "EUR")
        seeds[profile]["api_key"] = await create_api_key(services.database_url)
        (tmp_path / f"{profile}.json").write_bytes(orjson.dumps(seeds[profile]))

    runs: dict[str, subprocess.Popen[str]] = {}
    try:
        for profile, spec in PROFILES.items():
            # The host from the command line for some profiles, from the environment for others.
            by_option = profile in ("BetBurst", "Mixed")
            env = spec["env"] if by_option else {**spec["env"], "WALLET_LOAD_HOST": served}
            host = served if by_option else None
            runs[profile] = run_locust(
                profile, tmp_path / f"{profile}.json", tmp_path / profile, host, env
            )
        # Each stops by itself after its -t (bet-burst through its load shape).
        printed = {
            p: (await asyncio.to_thread(r.communicate, timeout=60))[0] for p, r in runs.items()
        }
    finally:
        for run in runs.values():
            if run.poll() is None:
                run.kill()

    for profile, spec in PROFILES.items():
        assert runs[profile].returncode == 0, f"{profile}: {printed[profile]}"
        stats, failures, exceptions = report(tmp_path / profile)
        assert failures == [] and exceptions == [], f"{profile}: {failures} {exceptions}"
        requests, failed = stats.pop("Aggregated")
        assert requests > 0 and failed == 0, f"{profile}: {printed[profile]}"
        assert spec["names"] <= set(stats), f"{profile} made only {sorted(stats)}"
        # Every bet Locust saw posted is in the ledger once: under a storm too. Only a bet still
        # in flight when a user was stopped (one per user at most) may be posted unseen.
        seen = sum(stats[name][0] for name in spec["one_bet_each"])
        async with pool.acquire() as conn:
            posted = await conn.fetchval(
                "SELECT count(*) FROM ledger_transactions WHERE source = $1 AND kind = 'bet'",
                seeds[profile]["provider"],
            )
        assert seen <= posted <= seen + USERS, f"{profile}: {seen} bets seen, {posted} posted"
        refusals = await wallet_failures(served, seeds[profile]["provider"])
        assert set(refusals) <= spec["refusals"], f"{profile}: {refusals}"

    # Mixed's events of contract 1.1 reached the ledger as what they are.
    async with pool.acquire() as conn:
        kinds = await conn.fetch(
            "SELECT DISTINCT kind, result_kind, free_round_id IS NOT NULL AS free"
            " FROM ledger_transactions WHERE source = $1",
            seeds["Mixed"]["provider"],
        )
    found = {(k["kind"], k["result_kind"], k["free"]) for k in kinds}
    for expected in (
        ("result", "jackpot", False),
        ("result", "bonus", False),
        ("result", "free_round", False),
        ("bet", None, True),
        ("promo_win", None, False),
    ):
        assert expected in found, f"Mixed posted only {sorted(found, key=str)}"

    async with httpx.AsyncClient(base_url=served) as http:
        check = await http.get("/v1/ledger/check", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert check.json() == {"ok": True}
