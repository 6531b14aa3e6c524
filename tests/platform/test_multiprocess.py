"""Several wallet processes on one Postgres and one Redis: money stays exact.

Two ``wallet serve --workers 2`` servers on two ports (four worker processes, as two replicas of
docker/compose.yml would be) share the session's Postgres and Redis. Every player is hit through
both servers at once: the same transaction delivered to both, identical bytes to both, a bet on
one racing its cancel on the other. Nothing a worker keeps in memory may decide money; the
balances, computed from the R0 answers alone, must be exact to the unit.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app.client import ProviderClient, seal_event
from app.config import Settings
from tests.fixtures.app import Operator
from tests.support.keys import ADMIN_KEY
from tests.support.processes import WalletProcess, start_wallet, stop_wallet, wait_ready

pytestmark = pytest.mark.slow

KEY_CACHE_SECONDS = 1
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
def two_servers(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[WalletProcess, WalletProcess]]:
    logs = tmp_path_factory.mktemp("multiprocess")
    env = {"WALLET_KEY_CACHE_SECONDS": str(KEY_CACHE_SECONDS)}
    a = start_wallet(settings, logs / "a.log", workers=2, env=env)
    b = start_wallet(settings, logs / "b.log", workers=2, env=env)
    try:
        wait_ready(a, b)
        yield a, b
    finally:
        for server in (a, b):
            stop_wallet(server)


# --- the workload --------------------------------------------------------------------------------

START = 1_500  # small enough that some bets are refused R4 while others are in flight
ROUNDS = 12
PLAYERS = 4
ALLOWED = {
    ("R0", "ok"),
    ("R4", "insufficient_funds"),
    ("R1", "transaction_cancelled"),  # a bet that lost the race with its cancel
    ("R1", "request_in_progress"),  # identical bytes while the first delivery is processed
}


@dataclass
class Sent:
    event: dict[str, Any]
    answer: dict[str, Any]
    identical: bool  # the same bytes were sent to both servers


class Traffic:
    """Sends events through two servers and keeps every (event, answer)."""

    def __init__(self, a: ProviderClient, b: ProviderClient) -> None:
        self.a, self.b = a, b
        self.sent: list[Sent] = []

    async def one(self, client: ProviderClient, event: dict[str, Any]) -> dict[str, Any]:
        answer = await client.send_event(event)
        self.sent.append(Sent(event, answer, identical=False))
        return answer

    async def both(self, name: str, **fields: Any) -> None:
        """The same transaction to both servers at once, under two request ids."""
        await asyncio.gather(
            self.one(self.a, self.a.event(name, **fields)),
            self.one(self.b, self.b.event(name, **fields)),
        )

    async def identical(self, name: str, **fields: Any) -> None:
        """The same bytes (one request_id) to both servers at once."""
        event = self.a.event(name, **fields)
        body = seal_event(self.a.key, self.a.provider, event)
        answers = await asyncio.gather(self.a.post(body), self.b.post(body))
        self.sent += [Sent(event, answer, identical=True) for answer in answers]


async def play_round(
    t: Traffic, rng: random.Random, player: str, token: str, i: int
) -> dict[str, int]:
    """One round of player ``player`` in one of four shapes; the bet amounts by transaction."""
    round_id = f"r{i}"
    bet_txn, amount = f"{player}-b{i}", rng.randrange(100, 400, 10)
    bet = dict(
        player_id=player,
        session_token=token,
        round_id=round_id,
        game_id="slot-1",
        amount=amount,
        currency="EUR",
        transaction_id=bet_txn,
    )
    win = dict(
        player_id=player,
        round_id=round_id,
        game_id="slot-1",
        currency="EUR",
        amount=rng.choice([0, 0, amount // 2, amount * 2]),
        transaction_id=f"{player}-w{i}",
    )
    cancel = dict(
        player_id=player,
        round_id=round_id,
        currency="EUR",
        ref_transaction_id=bet_txn,
        transaction_id=f"{player}-c{i}",
    )
    match i % 4:
        case 0:  # delivered twice, to different servers
            await t.both("bet", **bet)
            await t.both("result", **win)
        case 1:  # resent as identical bytes
            await t.identical("bet", **bet)
            await t.identical("result", **win)
        case 2:  # the bet on one server, its cancel and a resend of the bet on the other
            await asyncio.gather(
                t.one(t.a, t.a.event("bet", **bet)),
                t.one(t.b, t.b.event("cancel", **cancel)),
                t.one(t.b, t.b.event("bet", **bet)),
            )
        case _:  # bet, then its refund, each to both servers
            await t.both("bet", **bet)
            await t.both("cancel", **cancel)
    return {bet_txn: amount}


async def test_two_servers_four_workers_keep_balances_exact(
    two_servers: tuple[WalletProcess, WalletProcess],
    operator: Operator,
    pool: asyncpg.Pool,
) -> None:
    a, b = two_servers
    provider = await operator.provider()
    code, key = provider["code"], provider["keys"][0]["key"]
    players = {}
    for _ in range(PLAYERS):
        player = await operator.player(START)
        players[player] = await operator.session(player, code)
    limits = httpx.Limits(max_connections=64)
    async with (
        httpx.AsyncClient(base_url=a.base, timeout=30, limits=limits) as http_a,
        httpx.AsyncClient(base_url=b.base, timeout=30, limits=limits) as http_b,
    ):
        traffic = Traffic(
            ProviderClient(a.base, code, key, http=http_a),
            ProviderClient(b.base, code, key, http=http_b),
        )
        rng = random.Random(7)
        # Every round of every player at once: each player has a dozen rounds in flight, split
        # over the two servers and their workers.
        bets: dict[str, int] = {}
        for amounts in await asyncio.gather(
            *(
                play_round(traffic, rng, player, token, i)
                for player, token in players.items()
                for i in range(ROUNDS)
            )
        ):
            bets.update(amounts)
        check = (await http_a.get("/v1/ledger/check", headers=ADMIN)).json()

    sent = traffic.sent
    assert len(sent) == PLAYERS * (ROUNDS // 4) * (4 + 4 + 3 + 4)
    refused = [s.answer for s in sent if (s.answer["code"], s.answer["reason"]) not in ALLOWED]
    assert refused == []
    assert all(s.identical for s in sent if s.answer["reason"] == "request_in_progress")
    codes = {(s.event["event"], s.answer["code"]) for s in sent}
    # The workload did what it is for: bets refused for funds while others went through, refunds
    # and wins.
    assert {("bet", "R0"), ("bet", "R4"), ("cancel", "R0"), ("result", "R0")} <= codes

    # Each wallet transaction id named by an R0 answer is one posting, of one provider
    # transaction; several answers may name it (duplicates, replays).
    posted: dict[int, dict[str, Any]] = {}
    for s in sent:
        if s.answer["code"] == "R0":
            first = posted.setdefault(int(s.answer["transaction_id"]), s.event)
            assert first["transaction_id"] == s.event["transaction_id"], (first, s.event)
    bets_posted = {e["transaction_id"] for e in posted.values() if e["event"] == "bet"}

    def delta(e: dict[str, Any]) -> int:
        if e["event"] == "bet":
            return -int(e["amount"])
        if e["event"] == "result":
            return int(e["amount"])
        # A cancel refunds a bet that was posted; one of a bet never posted is a tombstone.
        ref = e["ref_transaction_id"]
        return bets[ref] if ref in bets_posted else 0

    rows = await pool.fetch(
        "SELECT id, external_id, player_id, delta, balance_after FROM ledger_transactions"
        " WHERE source = $1",
        code,
    )
    # Every posting was answered R0, every R0 names a posting, and each moved what it should.
    assert {r["id"] for r in rows} == set(posted)
    for r in rows:
        e = posted[r["id"]]
        assert (r["external_id"], r["player_id"], r["delta"]) == (
            e["transaction_id"],
            e["player_id"],
            delta(e),
        )
    # A first answer (or its replay) reports the balance right after its own posting.
    after = {r["id"]: r["balance_after"] for r in rows}
    for s in sent:
        if s.answer["code"] == "R0" and not s.answer.get("duplicate"):
            assert s.answer["balance"] == after[int(s.answer["transaction_id"])], s
    for player in players:
        expected = START + sum(delta(e) for e in posted.values() if e["player_id"] == player)
        assert expected >= 0
        assert await operator.balance(player) == expected
    assert check == {"ok": True}


async def test_a_key_rotated_through_one_server_is_used_by_all_and_the_retired_one_stops(
    two_servers: tuple[WalletProcess, WalletProcess], operator: Operator
) -> None:
    """Workers cache provider keys for ``WALLET_KEY_CACHE_SECONDS``. A new key works everywhere
    at once (a key no cached one matches makes a worker read the keys again); a retired key
    works nowhere once that many seconds have passed."""
    a, b = two_servers
    provider = await operator.provider()
    code, first = provider["code"], provider["keys"][0]["key"]
    player = await operator.player(500)
    await operator.session(player, code)  # in the provider's scope, so it may read the balance
    fields = {"player_id": player}

    async def answers(base: str, key: str, n: int = 4) -> set[tuple[str, str]]:
        client = ProviderClient(base, code, key)
        try:
            got = await asyncio.gather(*(client.send("balance", **fields) for _ in range(n)))
        finally:
            await client.aclose()
        return {(g["code"], g["reason"]) for g in got}

    for server in (a, b):  # both servers' workers now cache the first key
        assert await answers(server.base, first) == {("R0", "ok")}
    keys = []
    for _ in range(2):  # first: current, then previous, then retired
        rotated = httpx.post(f"{a.base}/v1/providers/{code}/keys", headers=ADMIN, timeout=10)
        assert rotated.status_code == 201, rotated.text
        keys.append(rotated.json()["keys"][0]["key"])
    for server in (b, a):
        assert await answers(server.base, keys[-1]) == {("R0", "ok")}
    await asyncio.sleep(KEY_CACHE_SECONDS + 0.2)
    for server in (a, b):
        assert await answers(server.base, first) == {("R2", "bad_signature")}
        assert await answers(server.base, keys[0]) == {("R0", "ok")}  # previous: still active


async def test_payment_polls_of_every_worker_at_once_move_each_payment_once(
    pool: asyncpg.Pool, operator: Operator
) -> None:
    """Each worker runs the payments poller. Four pollers asking at the same moment about the
    same late payments (as four workers would, each with its own pool) still move each payment
    once: the claim skips rows another poll holds, and every move goes through the state
    machine under the payment's row lock."""
    from app.db import Queries
    from app.payments.service import PaymentRequest, Payments
    from tests.fixtures.payments import SANDBOX_API_KEY, in_process_sandbox

    async def no_webhooks(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    names = ("poll-" + secrets.token_hex(3),)
    async with in_process_sandbox(no_webhooks, names) as sandbox:  # webhooks never arrive
        pollers = [
            Payments(pool, Queries.load(), sandbox.routes, webhook_base="http://wallet.test")
            for _ in range(4)
        ]
        players = [await operator.player() for _ in range(6)]
        created = [
            await pollers[0].create_deposit(
                PaymentRequest(p, 1_000 + i, "EUR", "card", reference="order", metadata={}),
                "mp-" + secrets.token_hex(6),
            )
            for i, p in enumerate(players)
        ]
        for payment in created:
            psp_payment_id = await pool.fetchval(
                "SELECT psp_payment_id FROM payments WHERE id = $1", payment["id"]
            )
            done = await sandbox.http.post(
                f"/v1/sandbox/payments/{psp_payment_id}/complete",
                json={"outcome": "approve"},
                headers={"authorization": f"Bearer {SANDBOX_API_KEY}"},
            )
            assert done.status_code == 200, done.text
        await sandbox.app.state.sandbox.idle()
        counts = await asyncio.gather(*(p.poll_once(quiet_seconds=0) for p in pollers))
    assert sum(c["moved"] for c in counts) == len(created)
    moves = await pool.fetch(
        "SELECT payment_id, count(*) AS n FROM payment_transitions"
        " WHERE payment_id = ANY($1) AND trigger = 'psp_poll' GROUP BY payment_id",
        [p["id"] for p in created],
    )
    assert sorted(m["n"] for m in moves) == [1] * len(created)
    for i, player in enumerate(players):
        assert await operator.balance(player) == 1_000 + i


# --- the capacity plan of docs/scaling.md --------------------------------------------------------


def test_the_capacity_table_follows_from_its_parameters() -> None:
    """docs/scaling.md gives the capacity arithmetic as parameters and formulas, and a table
    worked out from them; the table must stay what the formulas give when a figure changes."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "scaling.md").read_text()
    section = text[text.index("## Capacity") :]
    params = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"^\| `(\w)` \| [^|]+ \| ([\d.]+)(?: ms)? \|$", section, re.M)
    }
    assert set(params) == {"k", "w", "d", "u", "c", "m"}, params
    rows = re.findall(r"^\| ([\d,]+) \| ([\d,]+) \| (\d+) \| ([\d.]+) \| (\d+) \| (\d+) \|$",
                      section, re.M)  # fmt: skip
    assert len(rows) >= 3
    for row in rows:
        p, e, a, d, s, conns = (float(x.replace(",", "")) for x in row)
        assert e == params["k"] * p
        assert a == math.ceil(e * params["w"] / 1000 / params["u"] - 1e-9)
        assert d == round(e * params["d"] / 1000 / params["u"], 1)
        assert s == math.ceil(d / params["c"] - 1e-9)
        assert conns == a * params["m"]
