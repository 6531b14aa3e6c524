"""Fault injection for the seamless wallet: servers to break on purpose, a provider that knows
what every balance must be, and the check that the ledger agrees.

Shared by ``tests/platform/test_faults.py`` (one fault per test) and ``loadtests/chaos.py``
(faults in a loop under mixed load). Everything listens on 127.0.0.1 only.

- :class:`FaultStack`: a private Postgres and Redis (``app.dev.devstack``), migrated, optionally
  with a :class:`DelayProxy` in front of Redis, and the faults: terminate the wallet's backends,
  stop and restart Postgres, SIGKILL and restart Redis, slow Redis down.
- :class:`Simulator`: players each play rounds one event after another (bet, then a result or a
  cancel, sometimes duplicated or replayed), many players at once. Every R1 ``internal_error`` or
  ``request_in_progress`` is retried until a final answer, as a provider would, and each final
  answer is checked against the simulator's own balance model.
- :func:`verify`: balances, postings and the ledger check read from Postgres, against the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis

from app import db
from app.client import ProviderClient, seal_event
from app.dev.devstack import EmbeddedPostgres, EmbeddedRedis, free_port
from app.ledger import service as ledger
from loadtests.seed import seed

# Answers a provider retries; anything else is final.
RETRYABLE = {"internal_error", "request_in_progress"}
# The pool's application_name (app.db.create_pool): how the wallet's backends are found.
WALLET_APPLICATION = "wallet"


class DelayProxy:
    """A TCP proxy that holds every reply chunk back for ``delay`` seconds (0: none).

    Requests pass at once and only replies are late. That is the hard case for a client: the
    command took effect, but the client may time out before it hears so, and retry it.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.delay = 0.0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._relay(client_r, client_w)
        except asyncio.CancelledError:
            pass  # close(): end quietly, as asyncio (3.11) logs a cancelled handler as an error
        finally:
            client_w.close()
            self._connections.discard(task)

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            return  # upstream down: the client sees its connection closed
        pipes = [
            asyncio.create_task(self._pipe(client_r, up_w, delayed=False)),
            asyncio.create_task(self._pipe(up_r, client_w, delayed=True)),
        ]
        try:
            # Either side closing ends the connection, as it would without the proxy.
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            up_w.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, delayed: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        # Chunks keep their order and each is held for the delay set when it arrived.
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(send())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((loop.time() + (self.delay if delayed else 0.0), data))
            queue.put_nowait((loop.time() + (self.delay if delayed else 0.0), b""))
            await sender
        except OSError:
            pass  # a reset on either side ends this connection
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await sender


class FaultStack:
    """A private Postgres and Redis on fixed ports, to be broken and mended while the wallet runs.

    Servers start and stop from the caller's thread. That blocks the event loop for the tens of
    milliseconds a start or stop takes, but keeps the servers tied to the main thread
    (``app.dev.devstack`` asks the kernel to stop them should this process die, from the main thread
    only), so a killed test or chaos run does not leave servers behind.
    """

    def __init__(self, folder: Path, *, proxy: bool = False) -> None:
        self.pg = EmbeddedPostgres(folder / "pg", port=free_port(), durable=False)
        self.redis_server = EmbeddedRedis(folder / "redis", port=free_port())
        self.proxy: DelayProxy | None = None
        self._want_proxy = proxy
        self._dsn: str | None = None
        self._redis_direct = ""

    @property
    def dsn(self) -> str:
        """The wallet database (not the server's ``postgres`` one)."""
        assert self._dsn is not None, "FaultStack.start() first"
        return self._dsn

    @property
    def redis_url(self) -> str:
        """Where the wallet should find Redis: the proxy when there is one."""
        return self.proxy.url if self.proxy is not None else self._redis_direct

    async def start(self) -> None:
        server_dsn = self.pg.start()
        self._redis_direct = self.redis_server.start()
        self._dsn = await db.ensure_database(server_dsn, "wallet")
        conn = await db.connect(self._dsn)
        try:
            await db.migrate(conn)
        finally:
            await conn.close()
        if self._want_proxy:
            port = int(self._redis_direct.rsplit(":", 1)[1].split("/")[0])
            self.proxy = DelayProxy(port)
            await self.proxy.start()

    async def close(self) -> None:
        if self.proxy is not None:
            await self.proxy.close()
        self.redis_server.stop()
        self.pg.stop()

    # --- faults -------------------------------------------------------------------------------

    async def terminate_backends(self) -> int:
        """``pg_terminate_backend`` every connection of the wallet's pools; how many."""
        conn = await asyncpg.connect(self.dsn)
        try:
            killed: int = await conn.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = $1 AND pid <> pg_backend_pid()",
                WALLET_APPLICATION,
            )
        finally:
            await conn.close()
        return killed

    def stop_postgres(self) -> None:
        """Fast shutdown: open transactions are rolled back and clients disconnected."""
        self.pg.stop()

    def start_postgres(self) -> None:
        self.pg.start()  # same data folder, same port

    async def kill_redis(self) -> None:
        """SIGKILL the redis-server: no goodbye to clients, and its memory (claims, outcomes,
        locks, the loaded script) is gone, as nothing is persisted."""
        client = Redis.from_url(self._redis_direct)
        try:
            pid = int((await client.info("server"))["process_id"])
        finally:
            await client.aclose()
        os.kill(pid, signal.SIGKILL)
        self.redis_server.stop()  # reaps the process; it is gone already

    def start_redis(self) -> None:
        self.redis_server.start()  # same port

    def slow_redis(self, seconds: float) -> None:
        """Hold every Redis reply back this long (0 restores); needs ``proxy=True``."""
        assert self.proxy is not None, "FaultStack(proxy=True) for a slow Redis"
        self.proxy.delay = seconds

    # --- faults as they are injected: each one mends what it broke before it returns ----------

    async def terminate_backends_for(self, seconds: float, every: float = 0.05) -> int:
        """Terminate the wallet's backends again and again, so that some die in the middle of a
        posting function; how many were terminated."""
        killed = 0
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            killed += await self.terminate_backends()
            await asyncio.sleep(every)
        return killed

    async def restart_postgres(self, down: float) -> None:
        self.stop_postgres()
        try:
            await asyncio.sleep(down)
        finally:
            self.start_postgres()

    async def restart_redis(self, down: float) -> None:
        await self.kill_redis()
        try:
            await asyncio.sleep(down)
        finally:
            self.start_redis()

    async def slow_redis_for(self, delay: float, seconds: float) -> None:
        self.slow_redis(delay)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.slow_redis(0)


Fault = Callable[[FaultStack, random.Random], Awaitable[object]]

# The chaos run's faults, with durations drawn at random. Redis replies 0.3 s late is slow but
# within WALLET_REDIS_TIMEOUT_MS (1 s by default); 1.5 s late is beyond it, so commands take
# effect while the wallet has stopped waiting for them.
FAULTS: dict[str, Fault] = {
    "terminate_backends": lambda s, rng: s.terminate_backends_for(rng.uniform(0.5, 2.0)),
    "restart_postgres": lambda s, rng: s.restart_postgres(rng.uniform(0.5, 3.0)),
    "kill_redis": lambda s, rng: s.restart_redis(rng.uniform(0.5, 3.0)),
    "slow_redis": lambda s, rng: s.slow_redis_for(0.3, rng.uniform(2.0, 4.0)),
    "stalled_redis": lambda s, rng: s.slow_redis_for(1.5, rng.uniform(1.0, 3.0)),
}


# --- the provider's side ----------------------------------------------------------------------


@dataclass
class Player:
    """One seeded player and what the ledger must say about them."""

    player_id: str
    token: str
    balance: int  # the model: what the wallet must hold
    posted: dict[str, int] = field(default_factory=dict)  # transaction_id -> wallet's posting id
    rounds: int = 0


@dataclass
class Delivery:
    """One event delivered until it had a final answer (or the deadline passed: answer None)."""

    event: dict[str, Any]
    body: bytes  # the bytes last sent, for an identical replay
    answer: dict[str, Any] | None
    # Some attempt failed (R1 internal_error, no answer): the final R0 may rightly be a
    # duplicate of what that attempt posted before it failed.
    failed: bool


@dataclass
class Stats:
    events: int = 0  # deliveries that got a final answer
    answers: Counter[str] = field(default_factory=Counter)  # every answer, retries included
    retries: int = 0
    new_request_ids: int = 0  # retries sent under a new request_id (same transaction)
    unresolved: int = 0  # deliveries with no final answer before the deadline
    problems: list[str] = field(default_factory=list)  # the first few, for the report
    problem_count: int = 0

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < 50:
            self.problems.append(text)

    def summary(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "answers": dict(sorted(self.answers.items())),
            "retries": self.retries,
            "new_request_ids": self.new_request_ids,
            "unresolved": self.unresolved,
            "problems": self.problem_count,
        }


@dataclass(frozen=True)
class Mix:
    """How often each variation happens in a round (probabilities)."""

    cancel: float = 0.15  # the bet is cancelled instead of settled
    twin: float = 0.05  # the bet is delivered twice at once, identical bytes
    duplicate: float = 0.1  # a money event is resent with a new request_id, same transaction
    replay: float = 0.05  # the round's last event is resent as identical bytes
    balance: float = 0.1  # a balance event ends the round


@dataclass
class Seeded:
    provider: str
    key: str
    players: list[Player]
    currency: str


async def seed_players(dsn: str, players: int, balance: int, currency: str = "EUR") -> Seeded:
    """A provider and funded players with live sessions, with ``loadtests.seed``."""
    made = await seed(dsn, players, balance, currency)
    return Seeded(
        made["provider"],
        made["key"],
        [Player(p["player_id"], p["session_token"], balance) for p in made["players"]],
        currency,
    )


class Simulator:
    """A game provider under faults: plays rounds, retries what is retryable, checks answers.

    A player's events go one after another (twins aside), so the model's balance is exactly what
    every R0 answer must carry. Players run ``concurrency`` at a time.
    """

    def __init__(
        self,
        client: ProviderClient,
        seeded: Seeded,
        *,
        rng: random.Random | None = None,
        mix: Mix | None = None,
        deadline: float = 60.0,
        request_timeout: float = 15.0,
        new_request_after: float = 2.0,
    ) -> None:
        self.client = client
        self.players = seeded.players
        self.currency = seeded.currency
        self.rng = rng or random.Random()
        self.mix = mix or Mix()
        self.deadline = deadline  # per delivery, retries included
        self.request_timeout = request_timeout
        # request_in_progress this long: the claim is probably orphaned (Redis lost the outcome,
        # or a timed-out admission left it); resend under a new request_id, as the contract allows.
        self.new_request_after = new_request_after
        self.stats = Stats()

    async def run(self, stop: asyncio.Event, concurrency: int) -> None:
        """Play rounds until ``stop`` is set; the rounds under way are finished first."""
        idle: asyncio.Queue[Player] = asyncio.Queue()
        for player in self.players:
            idle.put_nowait(player)

        async def worker() -> None:
            while not stop.is_set():
                player = await idle.get()
                try:
                    await self.play_round(player)
                finally:
                    idle.put_nowait(player)

        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(self.players)))))

    async def play_round(self, p: Player) -> None:
        """A bet, then its result or its cancel, with the mix's duplicates and replays."""
        k = p.rounds
        p.rounds += 1
        rng, mix = self.rng, self.mix
        round_id = f"r{k}"
        amount = rng.randint(1, 1_000)
        bet = self.client.event(
            "bet",
            player_id=p.player_id,
            session_token=p.token,
            transaction_id=f"{p.player_id}-b{k}",
            round_id=round_id,
            game_id="chaos-slot",
            amount=amount,
            currency=self.currency,
        )
        if rng.random() < mix.twin:
            body = self._seal(bet)
            twins = await asyncio.gather(self.deliver(bet, body), self.deliver(bet, body))
            for twin in twins:
                self._settle(p, twin, -amount, check_flag=False)
        else:
            self._settle(p, await self.deliver(bet), -amount)
        if rng.random() < mix.duplicate:
            self._settle(p, await self.deliver(self._renewed(bet)), -amount, duplicate=True)

        last: dict[str, Any]
        if rng.random() < mix.cancel:
            delta = amount
            last = self.client.event(
                "cancel",
                player_id=p.player_id,
                transaction_id=f"{p.player_id}-c{k}",
                ref_transaction_id=bet["transaction_id"],
                round_id=round_id,
                currency=self.currency,
            )
        else:
            delta = rng.choice((0, 0, 2 * amount, rng.randint(0, 3 * amount)))
            last = self.client.event(
                "result",
                player_id=p.player_id,
                transaction_id=f"{p.player_id}-w{k}",
                round_id=round_id,
                game_id="chaos-slot",
                amount=delta,
                currency=self.currency,
                round_closed=True,
            )
        done = await self.deliver(last)
        self._settle(p, done, delta)
        if rng.random() < mix.duplicate:
            self._settle(p, await self.deliver(self._renewed(last)), delta, duplicate=True)
        if rng.random() < mix.replay:
            # The stored first outcome (or, after Redis lost it, the posting's duplicate).
            self._settle(p, await self.deliver(done.event, done.body), delta, check_flag=False)
        if rng.random() < mix.balance:
            balance = await self.deliver(self.client.event("balance", player_id=p.player_id))
            self._check_balance(p, balance)

    async def deliver(self, event: dict[str, Any], body: bytes | None = None) -> Delivery:
        """Send until a final answer: R1 internal_error is resent as the same bytes, a lasting
        request_in_progress or an ageing timestamp under a new request_id."""
        body = body or self._seal(event)
        started = time.monotonic()
        in_progress_since: float | None = None
        failed = False
        pause = 0.05
        while True:
            answer = await self._post(body)
            reason = answer.get("reason") if answer is not None else None
            if answer is not None and not (answer.get("code") == "R1" and reason in RETRYABLE):
                self.stats.events += 1
                return Delivery(event, body, answer, failed)
            now = time.monotonic()
            if now - started > self.deadline:
                self.stats.unresolved += 1
                self.stats.problem(
                    f"{event['event']} {event.get('transaction_id')}: no final answer in "
                    f"{self.deadline:.0f} s (last {reason or 'no answer'})"
                )
                return Delivery(event, body, None, True)
            self.stats.retries += 1
            if reason == "request_in_progress":
                in_progress_since = in_progress_since or now
            else:
                failed = True
                in_progress_since = None
            stale = time.time() - event["timestamp"] > 200  # the wallet refuses > 300 s
            if stale or (in_progress_since and now - in_progress_since > self.new_request_after):
                event = self._renewed(event)
                body = self._seal(event)
                in_progress_since = None
                self.stats.new_request_ids += 1
            await asyncio.sleep(pause * self.rng.uniform(0.5, 1.5))
            pause = min(pause * 2, 0.5)

    async def _post(self, body: bytes) -> dict[str, Any] | None:
        """One attempt; None when no answer came back (counted as what went wrong)."""
        try:
            answer = await asyncio.wait_for(self.client.post(body), self.request_timeout)
        except TimeoutError:
            self.stats.answers["no answer in time"] += 1
            self.stats.problem(f"no answer within {self.request_timeout} s")
            return None
        except httpx.HTTPStatusError as exc:
            # The webhook always answers 200: any other status is a fault of the wallet.
            self.stats.answers[f"http {exc.response.status_code}"] += 1
            self.stats.problem(f"HTTP {exc.response.status_code} from the webhook")
            return None
        except httpx.TransportError as exc:
            self.stats.answers[f"transport {type(exc).__name__}"] += 1
            return None
        except Exception as exc:  # noqa: BLE001 - e.g. an in-process app raising: report it
            self.stats.answers[f"exception {type(exc).__name__}"] += 1
            self.stats.problem(f"the webhook raised {exc!r}")
            return None
        code, reason = answer.get("code"), answer.get("reason")
        self.stats.answers["R0" if code == "R0" else f"{code} {reason}"] += 1
        if code == "R1" and "request_id" not in answer:
            # Sealed refusals echo the request_id. A plain R1 without it means the wallet could
            # not use the keys it had cached, or an exception got past the service to the
            # endpoint's last guard; neither may happen once a provider's keys were loaded.
            self.stats.problem(f"plain R1 {reason} without request_id: keys lost or an exception")
        return answer

    def _seal(self, event: dict[str, Any]) -> bytes:
        return seal_event(self.client.key, self.client.provider, event)

    def _renewed(self, event: dict[str, Any]) -> dict[str, Any]:
        """The same event under a new request_id and timestamp (same transaction_id)."""
        fields = {k: v for k, v in event.items() if k not in ("event", "request_id", "timestamp")}
        return self.client.event(event["event"], **fields)

    def _settle(
        self,
        p: Player,
        delivery: Delivery,
        delta: int,
        *,
        duplicate: bool = False,
        check_flag: bool = True,
    ) -> None:
        """Apply a final answer to the model, and check it: R0, one posting id per transaction,
        ``duplicate`` only where it must or may be, and the balance the model expects."""
        answer, event = delivery.answer, delivery.event
        txn = event["transaction_id"]
        if answer is None:
            return  # already a problem; the ledger comparison will show what it did
        if answer.get("code") != "R0":
            self.stats.problem(f"{event['event']} {txn}: {answer.get('code')} {answer['reason']}")
            return
        posting = int(answer["transaction_id"])
        known = p.posted.get(txn)
        if known is None:
            p.posted[txn] = posting
            p.balance += delta
            if check_flag and answer.get("duplicate") and not delivery.failed:
                self.stats.problem(f"{txn}: first delivery answered duplicate, nothing had failed")
        elif known != posting:
            self.stats.problem(f"{txn}: posting id {posting}, earlier {known}")
        if duplicate and not answer.get("duplicate"):
            self.stats.problem(f"{txn}: a resend under a new request_id was not a duplicate")
        self._check_balance(p, delivery)

    def _check_balance(self, p: Player, delivery: Delivery) -> None:
        answer = delivery.answer
        if answer is None:
            return
        if answer.get("code") != "R0":
            self.stats.problem(f"balance of {p.player_id}: {answer.get('code')} {answer['reason']}")
        elif answer.get("balance") != p.balance:
            self.stats.problem(
                f"{delivery.event['event']} {delivery.event.get('transaction_id')}: balance "
                f"{answer.get('balance')}, model {p.balance}"
            )


# --- the verdict ------------------------------------------------------------------------------


@dataclass
class Verdict:
    """What Postgres holds, compared with the simulator's model."""

    balance_mismatches: list[str]
    posting_mismatches: list[str]  # postings the model does not know, lacks, or numbers otherwise
    duplicate_postings: int  # transaction_ids posted more than once
    ledger: dict[str, Any]

    @property
    def ok(self) -> bool:
        return (
            not self.balance_mismatches
            and not self.posting_mismatches
            and self.duplicate_postings == 0
            and self.ledger.get("ok") is True
        )

    def summary(self) -> dict[str, Any]:
        return {
            "balance_mismatches": len(self.balance_mismatches),
            "posting_mismatches": len(self.posting_mismatches),
            "duplicate_postings": self.duplicate_postings,
            "ledger_check": self.ledger,
            "examples": (self.balance_mismatches + self.posting_mismatches)[:10],
        }


async def verify(dsn: str, provider: str, players: list[Player]) -> Verdict:
    """Every player's balance and postings as the model has them, and the ledger check."""
    conn = await db.connect(dsn)
    try:
        balances = {
            r["player_id"]: r["balance"]
            for r in await conn.fetch(
                "SELECT p.player_id, a.balance FROM players p JOIN accounts a"
                " ON a.id = p.account_id WHERE p.player_id = ANY($1::text[])",
                [p.player_id for p in players],
            )
        }
        posted: dict[str, dict[str, int]] = {}
        for r in await conn.fetch(
            "SELECT player_id, external_id, id FROM ledger_transactions WHERE source = $1",
            provider,
        ):
            posted.setdefault(r["player_id"], {})[r["external_id"]] = r["id"]
        duplicates: int = await conn.fetchval(
            "SELECT count(*) FROM (SELECT external_id FROM ledger_transactions WHERE source = $1"
            " GROUP BY external_id HAVING count(*) > 1) d",
            provider,
        )
        report = await ledger.check(conn, db.Queries.load())
    finally:
        await conn.close()
    balance_mismatches = [
        f"{p.player_id}: ledger {balances.get(p.player_id)}, model {p.balance}"
        for p in players
        if balances.get(p.player_id) != p.balance
    ]
    posting_mismatches = []
    for p in players:
        actual = posted.get(p.player_id, {})
        for txn in sorted(actual.keys() | p.posted.keys()):
            if actual.get(txn) != p.posted.get(txn):
                posting_mismatches.append(
                    f"{txn}: ledger posting {actual.get(txn)}, model {p.posted.get(txn)}"
                )
    return Verdict(balance_mismatches, posting_mismatches, duplicates, report)


async def failures_in_a_new_round(sim: Simulator, players: list[Player]) -> int:
    """Play one round for each of ``players`` at once; how many answers were R1 internal_error.
    After a fault is mended, a wallet that recovered on its own answers none."""
    before = sim.stats.answers["R1 internal_error"]
    await asyncio.gather(*(sim.play_round(p) for p in players))
    return sim.stats.answers["R1 internal_error"] - before


async def wait_ready(http: httpx.AsyncClient, timeout: float = 15.0) -> float:
    """Poll ``/readyz`` until 200; seconds it took. Raises TimeoutError otherwise."""
    started = time.monotonic()
    while True:
        with contextlib.suppress(httpx.TransportError):
            if (await http.get("/readyz")).status_code == 200:
                return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"/readyz not 200 within {timeout} s")
        await asyncio.sleep(0.1)
