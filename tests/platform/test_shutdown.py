"""SIGTERM under load: what is in flight finishes, nothing new comes in, nothing is half-written.

``wallet serve`` (one worker, as each replica of docker/compose.yml runs it) gets SIGTERM while
two dozen bets wait on their players' row locks, held on purpose by the test, and while other
players keep playing. uvicorn stops listening at once and gives requests in flight up to
``timeout_graceful_shutdown`` (10 s, app/cli.py) to finish; then the app's lifespan closes, which
flushes the call history.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app import db
from app.client import ProviderClient
from app.config import Settings
from app.ledger import service as ledger
from tests.fixtures.app import Operator
from tests.fixtures.servers import Services
from tests.support.processes import WalletProcess, start_wallet, stop_wallet, wait_ready

pytestmark = pytest.mark.slow

SLOW = 24  # bets held on a row lock when SIGTERM comes
PLAYING = 6  # players betting and winning in a loop meanwhile
START = 100_000
GRACE_SECONDS = 10  # timeout_graceful_shutdown of `wallet serve`


async def locked_waiters(pool: asyncpg.Pool) -> int:
    """The wallet's backends of this database waiting for a lock (asked outside any transaction,
    which would see one snapshot of pg_stat_activity)."""
    count: int = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'wallet' AND wait_event_type = 'Lock'"
    )
    return count


async def refused(base: str) -> bool:
    """Whether a new connection to ``base`` is refused (or, caught by the closing listener in the
    moment it closes, dropped without an answer: not served either)."""
    try:
        async with httpx.AsyncClient(base_url=base, timeout=2) as fresh:
            await fresh.get("/healthz")
    except (httpx.ConnectError, httpx.RemoteProtocolError):
        return True
    return False


async def test_sigterm_lets_requests_in_flight_finish_and_posts_nothing_by_halves(
    settings: Settings,
    services: Services,
    operator: Operator,
    pool: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    server: WalletProcess = start_wallet(
        settings,
        tmp_path / "serve.log",
        workers=1,
        env={
            "WALLET_DB_POOL_MAX": "40",
            # Held bets wait on a row lock: well past the test's hold, however busy the machine.
            "WALLET_DB_STATEMENT_TIMEOUT_MS": "20000",
        },
    )
    try:
        await asyncio.to_thread(wait_ready, server)
        provider = await operator.provider()
        code, key = provider["code"], provider["keys"][0]["key"]
        players = {}
        for _ in range(SLOW + PLAYING):
            player = await operator.player(START)
            players[player] = await operator.session(player, code)
        slow, playing = list(players)[:SLOW], list(players)[SLOW:]
        answered: list[tuple[dict[str, Any], dict[str, Any]]] = []
        failed: list[tuple[dict[str, Any], Exception]] = []
        http = httpx.AsyncClient(
            base_url=server.base, timeout=30, limits=httpx.Limits(max_connections=64)
        )
        client = ProviderClient(server.base, code, key, http=http)

        async def bet(player: str, amount: int) -> dict[str, Any] | None:
            event = client.event(
                "bet",
                player_id=player,
                session_token=players[player],
                transaction_id="t-" + secrets.token_hex(6),
                round_id="r-" + secrets.token_hex(4),
                game_id="slot-1",
                amount=amount,
                currency="EUR",
            )
            try:
                answer = await client.send_event(event)
            except httpx.HTTPError as exc:
                failed.append((event, exc))
                return None
            answered.append((event, answer))
            return answer

        async def keep_playing(player: str) -> None:
            while await bet(player, 10) is not None:
                pass

        holder = await asyncpg.connect(services.database_url)
        try:
            # Hold every slow player's account row: their bets get in, and wait inside Postgres.
            hold = holder.transaction()
            await hold.start()
            await holder.execute(
                "SELECT 1 FROM accounts a JOIN players p ON p.account_id = a.id"
                " WHERE p.player_id = ANY($1) FOR UPDATE OF a",
                slow,
            )
            in_flight = [asyncio.create_task(bet(p, 250)) for p in slow]
            players_loop = [asyncio.create_task(keep_playing(p)) for p in playing]
            deadline = time.monotonic() + 15
            while await locked_waiters(pool) < SLOW:
                assert time.monotonic() < deadline, "the slow bets never reached Postgres"
                await asyncio.sleep(0.05)
            assert not any(t.done() for t in in_flight)

            server.proc.send_signal(signal.SIGTERM)
            terminated = time.monotonic()
            # The listener closes at once: new connections are refused while the bets wait.
            while not await refused(server.base):
                assert time.monotonic() - terminated < 3, "still accepting after SIGTERM"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            assert not any(t.done() for t in in_flight)
            assert server.proc.poll() is None
            await hold.rollback()
        finally:
            await holder.close()

        slow_answers = await asyncio.gather(*in_flight)
        await asyncio.gather(*players_loop)
        await http.aclose()
        status = await asyncio.to_thread(server.proc.wait, GRACE_SECONDS + 5)
        exited_after = time.monotonic() - terminated
    finally:
        stop_wallet(server)

    # Every bet in flight at SIGTERM got its real answer.
    assert [(a["code"], a["balance"]) for a in slow_answers if a] == [("R0", START - 250)] * SLOW
    # The players in a loop were answered until the listener closed; each loop then ended on a
    # request that could not be sent (and, as the ledger shows below, posted nothing).
    assert len(failed) == PLAYING
    assert all(isinstance(exc, httpx.TransportError) for _, exc in failed), failed
    assert {(a["code"], a["reason"]) for _, a in answered} == {("R0", "ok")}
    # The process finished on its own, within the grace period, and said it shut down cleanly.
    assert exited_after < GRACE_SECONDS, server.output()
    output = server.output()
    assert "Application shutdown complete" in output, output
    assert status == 0, output

    # No posting without its answer, no answer without its posting, none by halves.
    rows = await pool.fetch(
        "SELECT id, external_id, delta FROM ledger_transactions WHERE source = $1", code
    )
    assert {(r["id"], r["external_id"]) for r in rows} == {
        (int(a["transaction_id"]), e["transaction_id"]) for e, a in answered
    }
    async with pool.acquire() as conn:
        assert await ledger.check(conn, db.Queries.load()) == {"ok": True}
    # The call history of every answered request was written before the process exited.
    logged = await pool.fetch(
        "SELECT request_id, code FROM seamless_calls WHERE provider = $1", code
    )
    assert sorted((r["request_id"], r["code"]) for r in logged) == sorted(
        (e["request_id"], a["code"]) for e, a in answered
    )
