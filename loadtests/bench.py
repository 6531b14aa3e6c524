"""The benchmark: the wallet in production mode under bets and results at a fixed concurrency.

    python -m loadtests.bench [--players 10000] [--concurrency 64] [--duration 30] [--workers 2]

What one run does, and prints as one JSON line at the end (progress goes to stderr):

1. Uses ``WALLET_DATABASE_URL`` / ``WALLET_REDIS_URL`` when set, else the local servers of
   ``make run`` (started if needed). The wallet gets a fresh database of its own on that server,
   ``wallet_bench``, dropped and re-created every run; the operator's data are not touched.
2. Seeds a provider and ``--players`` funded players with sessions (set-based SQL), and with
   ``--history-rows`` a ledger history of that many postings, to measure a large database.
3. Starts the wallet as ``uvicorn`` with ``--workers`` processes, uvloop and httptools, JSON logs
   at warning level: the way it is deployed.
4. Drives it from this process with ``--concurrency`` keep-alive connections, each playing rounds
   (a bet, then its result) for players of its own, as fast as answers come back: a closed loop,
   so latency and throughput are measured together. The first ``--warmup`` seconds are not
   counted. Requests are sealed as they go, like a provider does; the client is a minimal HTTP/1.1
   writer on asyncio streams so that the load generator costs a fraction of what the server does
   (its CPU share is printed as ``generator_cpu``).
5. Checks the ledger, then runs ``pgbench``'s built-in tpcb-like script (32 clients) against the
   same Postgres for ``--pgbench-seconds`` and prints the ratio of wallet money events per second
   to pgbench transactions per second: both are about one small write transaction per unit, so the
   ratio travels between machines better than either figure alone.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from app import db
from app.audit import Actor
from app.client import open_answer, seal_event
from app.config import Settings
from app.dev import local
from app.dev.devstack import free_port
from app.ids import unique_hex
from app.ledger import service as ledger
from app.operator.providers import create_provider
from app.progress import Progress

BENCH_DATABASE = "wallet_bench"
SCALE_DATABASE = "wallet_bench_scale"  # the million players of --scale, kept between runs
PGBENCH_DATABASE = "wallet_pgbench"
PGBENCH_CLIENTS = 32
PLAYER_PREFIX = "bp"
SEED_CHUNK = 50_000
BET = 100
HISTORY_PER_PLAYER = 10  # postings: five past rounds of a bet and its result


# How often a run in progress tells its rate so far (with --progress, or at a terminal).
PROGRESS_EVERY = 5.0


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- servers and seeding -------------------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    provider: str
    key: bytes
    key_id: str
    token_prefix: str
    players: int
    currency: str = "EUR"

    def player(self, i: int) -> tuple[str, str]:
        """Player ``i``'s id and session token."""
        return f"{PLAYER_PREFIX}{i}", f"{self.token_prefix}{i}"


async def fresh_database(server_dsn: str, name: str) -> str:
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return db.with_database(server_dsn, name)


async def seed(
    dsn: str, players: int, history_rows: int, balance: int, *, reuse: bool = False
) -> Seeded:
    """A provider, and ``players`` funded players with ``history_rows`` past postings; with
    ``reuse``, players and history already there are kept (a large history takes minutes to
    write) and only this run's provider and sessions are new."""
    conn = await db.connect(dsn)
    q = db.Queries.load(Path(__file__).parent / "sql")
    try:
        await db.migrate(conn)
        started = time.monotonic()
        counts = await conn.fetchrow(*q.bench_counts())
        kept = reuse and counts["players"] == players and counts["history"] >= history_rows
        if kept:
            progress(f"reusing {counts['players']:,} players and {counts['history']:,} postings")
        elif counts["players"]:
            raise SystemExit("the benchmark database holds other players: use a fresh one")
        code = "bench-" + secrets.token_hex(3)
        created = await create_provider(
            conn, db.Queries.load(), code, "Benchmark provider", Actor("loadtests.bench")
        )
        key = created.keys[0].model_dump()
        seeded = Seeded(
            code,
            base64.b64decode(key["key"]),
            key["key_id"],
            "bt-" + secrets.token_hex(8) + "-",
            players,
        )
        for first, last in chunks(players, SEED_CHUNK):
            async with conn.transaction():
                if not kept:
                    await conn.execute(
                        *q.bench_players(
                            prefix=PLAYER_PREFIX,
                            first=first,
                            last=last,
                            currency=seeded.currency,
                            balance=balance,
                        )
                    )
                await conn.execute(
                    *q.bench_sessions(
                        prefix=PLAYER_PREFIX,
                        first=first,
                        last=last,
                        token_prefix=seeded.token_prefix,
                        provider=code,
                    )
                )
            progress(f"players {last + 1:,}/{players:,} ({time.monotonic() - started:.0f} s)")
        rounds = history_rows // (2 * players) if history_rows and not kept else 0
        for first, last in chunks(players, max(1, 500_000 // (2 * rounds or 1))) if rounds else ():
            async with conn.transaction():
                await conn.execute(
                    *q.bench_history(
                        prefix=PLAYER_PREFIX,
                        first=first,
                        last=last,
                        rounds=rounds,
                        provider=code,
                        currency=seeded.currency,
                        balance=balance,
                    ),
                )
            progress(
                f"history {(last + 1) * rounds * 2:,}/{players * rounds * 2:,} postings "
                f"({time.monotonic() - started:.0f} s)"
            )
        await conn.execute("VACUUM ANALYZE")
        progress(f"seeded in {time.monotonic() - started:.0f} s")
        return seeded
    finally:
        await conn.close()


def chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    """(first, last) of consecutive ranges of at most ``size`` covering 0 ..< total."""
    for first in range(0, total, size):
        yield first, min(first + size, total) - 1


# --- the wallet under test -----------------------------------------------------------------------


@contextlib.contextmanager
def wallet_server(
    database_url: str, redis_url: str, workers: int, env: dict[str, str]
) -> Iterator[tuple[str, int]]:
    """The wallet as deployed: uvicorn workers with uvloop and httptools; its address and the
    supervisor's pid."""
    port = free_port()
    child_env = {
        **os.environ,
        "WALLET_DATABASE_URL": database_url,
        "WALLET_REDIS_URL": redis_url,
        "WALLET_ADMIN_API_KEY": "bench-" + secrets.token_hex(8),
        "WALLET_LOG_FORMAT": "json",
        **env,
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "app.main:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    server = subprocess.Popen(command, env=child_env, start_new_session=True)
    try:
        wait_until_ready(port, server)
        yield f"127.0.0.1:{port}", server.pid
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def wait_until_ready(port: int, server: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the wallet exited with status {server.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            s.sendall(b"GET /readyz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            if s.recv(64).startswith(b"HTTP/1.1 200"):
                return
        time.sleep(0.2)
    raise SystemExit("the wallet did not become ready in time")


def worker_pids(server_pid: int) -> list[int]:
    """The uvicorn worker processes under the supervisor (for memory readings)."""
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children")
    if not children.exists():
        return []
    pids = [int(p) for p in children.read_text().split()]
    # Not multiprocessing's resource tracker, which serves none of the requests.
    return [p for p in pids if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()]


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs a body and reads the answer's body.

    Deliberately minimal: the benchmark's own CPU must stay small next to the server's, and a
    general client (httpx) spends several times more per request than this does.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, address: str) -> Connection:
        host, port = address.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer)

    async def post(self, head: bytes, body: bytes) -> bytes:
        self.writer.write(head % len(body) + body)
        response = await self.reader.readuntil(b"\r\n\r\n")
        if not response.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(response.split(b"\r\n", 1)[0].decode("latin-1"))
        match = CONTENT_LENGTH.search(response)
        if match is None:
            raise RuntimeError("answer without content-length")
        return await self.reader.readexactly(int(match[1]))

    def close(self) -> None:
        self.writer.close()


CONTENT_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)


@dataclass
class Tally:
    """What the load generator saw while counting."""

    latencies: list[float] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    counting: bool = False


async def play(
    address: str,
    conn: Connection,
    seeded: Seeded,
    mine: range,
    tally: Tally,
    stop: asyncio.Event,
) -> None:
    """Bet-then-result rounds for the players in ``mine``, one request at a time on ``conn``."""
    head = (
        f"POST /v1/seamless/{seeded.provider} HTTP/1.1\r\nHost: bench\r\n"
        f"Content-Type: application/json\r\nX-Key-Id: {seeded.key_id}\r\n"
        "Content-Length: %d\r\n\r\n"
    ).encode()
    rng = random.Random()
    try:
        while not stop.is_set():
            player_id, token = seeded.player(rng.choice(mine))
            round_id = "r-" + unique_hex(6)
            bet = {
                "event": "bet",
                "player_id": player_id,
                "session_token": token,
                "transaction_id": "b-" + unique_hex(8),
                "round_id": round_id,
                "game_id": "bench-slot",
                "amount": BET,
                "currency": seeded.currency,
            }
            result = {
                "event": "result",
                "player_id": player_id,
                "transaction_id": "w-" + unique_hex(8),
                "round_id": round_id,
                "game_id": "bench-slot",
                "amount": rng.choice((0, 0, 2 * BET)),
                "currency": seeded.currency,
                "round_closed": True,
            }
            for event in (bet, result):
                event["request_id"] = "q-" + unique_hex(8)
                event["timestamp"] = int(time.time())
                body = seal_event(seeded.key, seeded.provider, event)
                started = time.perf_counter()
                try:
                    answer = await conn.post(head, body)
                except (OSError, RuntimeError, asyncio.IncompleteReadError) as exc:
                    tally.failures[type(exc).__name__] += 1
                    conn.close()
                    conn = await Connection.open(address)
                    break
                elapsed = time.perf_counter() - started
                code = open_answer(seeded.key, seeded.provider, answer).get("code", "?")
                if tally.counting:
                    tally.latencies.append(elapsed)
                    tally.codes[code] += 1
                if code != "R0":
                    break  # the round is over for this player: no result for a refused bet
    finally:
        conn.close()


async def drive(
    address: str,
    seeded: Seeded,
    concurrency: int,
    warmup: float,
    duration: float,
    worker_pids: list[int],
    database: str,
    shown: Progress,
) -> tuple[Tally, float, dict[str, float]]:
    """Run the closed loop; the tally, the measured seconds, and the CPU seconds spent meanwhile
    by the load generator, the wallet's workers and the Postgres backends serving them."""
    tally = Tally()
    stop = asyncio.Event()
    slices = [
        range(i, seeded.players, concurrency) for i in range(min(concurrency, seeded.players))
    ]
    # Connections are opened one at a time while the others already play, as clients arrive at
    # a running service: each is accepted by whichever worker is free to take it, which spreads
    # them by load. Opened all at once, they would be accepted in one go by the first worker to
    # wake, and that lopsided split would be measured as the wallet's latency.
    tasks = []
    opened = time.perf_counter()
    for i in range(concurrency):
        conn = await Connection.open(address)
        tasks.append(
            asyncio.create_task(play(address, conn, seeded, slices[i % len(slices)], tally, stop))
        )
        await asyncio.sleep(min(0.02, warmup / (2 * concurrency)))
    await asyncio.sleep(max(0.0, warmup - (time.perf_counter() - opened)))
    groups = {
        "generator": lambda: [os.getpid()],
        "workers": lambda: worker_pids,
        # Read again at the end: a backend the pools open meanwhile counts from its start.
        "postgres": lambda: backend_pids(database),
    }
    before = {name: {pid: cpu_seconds([pid]) for pid in pids()} for name, pids in groups.items()}
    tally.counting = True
    started = time.perf_counter()
    await measure(tally, started, duration, shown)
    tally.counting = False
    measured = time.perf_counter() - started
    cpu = {
        name: sum(cpu_seconds([pid]) - before[name].get(pid, 0.0) for pid in pids())
        for name, pids in groups.items()
    }
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return tally, measured, cpu


async def measure(tally: Tally, started: float, duration: float, shown: Progress) -> None:
    """Wait out the measured seconds; with progress on, tell the events and the rate so far
    every few seconds, and once at the end (on stderr: stdout is the one JSON line)."""
    end = started + duration
    while (left := end - time.perf_counter()) > 0:
        await asyncio.sleep(min(left, shown.every) if shown.enabled else left)
        spent = time.perf_counter() - started
        if spent < duration:
            events = len(tally.latencies)
            shown.say(f"{spent:.0f}/{duration:.0f} s, {events} events, {events / spent:.0f}/s")
    events = len(tally.latencies)
    shown.say(f"measured {events} events, {events / max(duration, 1e-3):.0f}/s")


# --- pgbench -------------------------------------------------------------------------------------


def pgbench_binary() -> str | None:
    found = shutil.which("pgbench")
    if found:
        return found
    from app.dev.devstack import postgres_bin_dir

    candidate = postgres_bin_dir() / "pgbench"
    return str(candidate) if candidate.exists() else None


async def pgbench_database(server_dsn: str, scale: int) -> str:
    """The pgbench database's DSN when its tables are at ``scale`` already (they are kept between
    runs), else an empty string."""
    dsn = await db.ensure_database(server_dsn, PGBENCH_DATABASE)
    conn = await asyncpg.connect(dsn)
    try:
        exists = await conn.fetchval("SELECT to_regclass('pgbench_branches') IS NOT NULL")
        branches = await conn.fetchval("SELECT count(*) FROM pgbench_branches") if exists else 0
    finally:
        await conn.close()
    return dsn if branches == scale else ""


def run_pgbench(binary: str, dsn: str, seconds: int, scale: int | None) -> float:
    """pgbench's tps; ``scale`` set: (re)initialise its tables at that scale first."""
    if scale is not None:
        progress(f"initialising pgbench tables at scale {scale} (kept for the next runs)")
        subprocess.run([binary, "-i", "-q", "-s", str(scale), dsn], check=True, capture_output=True)
    progress(f"pgbench tpcb-like, {PGBENCH_CLIENTS} clients, {seconds} s")
    out = subprocess.run(
        [binary, "-c", str(PGBENCH_CLIENTS), "-j", "2", "-T", str(seconds), dsn],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r"tps = ([\d.]+)", out)
    if match is None:
        raise SystemExit(f"could not read pgbench's tps from:\n{out}")
    return float(match[1])


# --- the run -------------------------------------------------------------------------------------


def rss_mib(pids: list[int]) -> list[float]:
    """Resident memory of each process, in MiB."""
    sizes = []
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes.append(round(int(line.split()[1]) / 1024, 1))
    return sizes


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time the processes have used so far."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def backend_pids(database: str) -> list[int]:
    """The Postgres backends serving ``database`` on this machine (their title names it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                title = (entry / "cmdline").read_bytes()
                if title.startswith(b"postgres: ") and f" {database} ".encode() in title:
                    pids.append(int(entry.name))
    return pids


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return round(sorted_values[index] * 1000, 2)


async def sample_memory(
    pids: list[int], every: float, samples: list[tuple[float, list[float]]], warmup: float
) -> None:
    """Worker RSS every ``every`` seconds from the end of the warm-up (imports done, pools and
    caches filled), which is the baseline that growth is measured against."""
    await asyncio.sleep(warmup)
    started = time.monotonic()
    while True:
        samples.append((time.monotonic() - started, rss_mib(pids)))
        progress(f"worker RSS MiB at {samples[-1][0]:.0f} s: {samples[-1][1]}")
        await asyncio.sleep(every)


async def ledger_report(dsn: str) -> dict[str, Any]:
    conn = await db.connect(dsn)
    try:
        report: dict[str, Any] = await ledger.check(conn, db.Queries.load())
        return report
    finally:
        await conn.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--players", type=int, default=10_000)
    parser.add_argument(
        "--history-rows",
        type=int,
        default=None,
        help="ledger postings seeded before the run (default: 10 per player; e.g. 10000000)",
    )
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=30, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=5, help="seconds not counted")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument(
        "--pool-max",
        type=int,
        default=None,
        help="WALLET_DB_POOL_MAX per worker (default: the service's)",
    )
    parser.add_argument(
        "--pgbench-seconds",
        type=int,
        default=None,
        help="pgbench run length (default: --duration; 0 skips pgbench)",
    )
    parser.add_argument(
        "--database", default=BENCH_DATABASE, help="the wallet's database on that server"
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the database and its players if they match (else: drop and create it)",
    )
    parser.add_argument(
        "--pgbench-scale",
        type=int,
        default=32,
        help="pgbench's scale factor (its advice: at least the number of clients, 32)",
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="compare 1,000 players with 1,000,000 players and 10,000,000 postings",
    )
    parser.add_argument(
        "--progress",
        action="store_true",
        help="events/s so far on stderr every few seconds, even when it is not a terminal",
    )
    parser.add_argument(
        "--memory-every",
        type=float,
        default=0,
        help="also sample worker RSS this often (seconds), for soak runs",
    )
    return parser.parse_args(argv)


async def bench(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """One benchmark run, or with ``--scale`` the small and the large database one after the
    other and the drop in throughput between them."""
    if not args.scale:
        return await run(args, settings)
    small = await run(
        argparse.Namespace(**{**vars(args), "players": 1000, "history_rows": None}), settings
    )
    # The large database takes many minutes to write: it is kept, and reused when it matches.
    large = await run(
        argparse.Namespace(
            **{
                **vars(args),
                "players": 1_000_000,
                "history_rows": 10_000_000,
                "pgbench_seconds": 0,
                "database": SCALE_DATABASE,
                "reuse": True,
            }
        ),
        settings,
    )
    drop = (small["events_per_s"] - large["events_per_s"]) / small["events_per_s"] * 100
    return {
        "throughput_drop_pct": round(drop, 1),
        "small": small,
        "large": large,
        "errors": small["errors"] | large["errors"],
        "ledger_check": "ok"
        if small["ledger_check"] == large["ledger_check"] == "ok"
        else "failed",
    }


async def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    assert settings.database_url is not None and settings.redis_url is not None
    server_dsn = db.with_database(settings.database_url, "postgres")
    if args.reuse:
        dsn = await db.ensure_database(server_dsn, args.database)
    else:
        dsn = await fresh_database(server_dsn, args.database)
    # A wallet that has been running: a few past rounds per player. On tables seeded empty, the
    # statistics say "empty", and the posting functions' cached plans scan rounds sequentially
    # until autovacuum analyses it minutes later, which would be measured instead of the wallet.
    history = HISTORY_PER_PLAYER * args.players if args.history_rows is None else args.history_rows
    seeded = await seed(dsn, args.players, history, balance=1_000_000_000, reuse=args.reuse)
    env = {
        # Still counted on every event, so the limit's cost is measured, but a capacity
        # benchmark must not be refused by it: the default (5,000/s) is below what it sends.
        "WALLET_RATE_LIMIT_PROVIDER": "1000000",
    }
    if args.pool_max:
        env["WALLET_DB_POOL_MAX"] = str(args.pool_max)
    with wallet_server(dsn, settings.redis_url, args.workers, env) as (address, server_pid):
        pids = worker_pids(server_pid) or [server_pid]
        progress(
            f"driving {args.concurrency} connections for {args.warmup:.0f} s warm-up "
            f"+ {args.duration:.0f} s on {address}"
        )
        memory_task = None
        samples: list[tuple[float, list[float]]] = []
        if args.memory_every:
            memory_task = asyncio.create_task(
                sample_memory(pids, args.memory_every, samples, args.warmup)
            )
        tally, measured, cpu = await drive(
            address,
            seeded,
            args.concurrency,
            args.warmup,
            args.duration,
            pids,
            args.database,
            Progress.when(args.progress, "[bench] driving", every=PROGRESS_EVERY),
        )
        if memory_task is not None:
            samples.append((args.duration, rss_mib(pids)))
            memory_task.cancel()
    latencies = sorted(tally.latencies)
    events = len(latencies)
    report = await ledger_report(dsn)
    result: dict[str, Any] = {
        "events_per_s": round(events / measured, 1),
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else None,
        "events": events,
        "codes": dict(tally.codes),
        "errors": {c: n for c, n in tally.codes.items() if c != "R0"} | dict(tally.failures),
        "ledger_check": "ok" if report.get("ok") else report,
        "players": args.players,
        "history_rows": history,
        "concurrency": args.concurrency,
        "workers": args.workers,
        "duration_s": round(measured, 1),
        # Cores busy on average, and CPU milliseconds per money event, per kind of process.
        "cores": {name: round(seconds / measured, 2) for name, seconds in cpu.items()},
        "cpu_ms_per_event": {
            name: round(seconds * 1000 / max(events, 1), 3) for name, seconds in cpu.items()
        },
    }
    if samples:
        result["worker_rss_mib"] = {f"{t:.0f}s": sizes for t, sizes in samples}
        first, last = sum(samples[0][1]), sum(samples[-1][1])
        result["worker_rss_growth_pct"] = round((last - first) / first * 100, 1)
    pgbench_seconds = args.duration if args.pgbench_seconds is None else args.pgbench_seconds
    if pgbench_seconds:
        binary = pgbench_binary()
        if binary is None:
            result["pgbench_tps"] = None
            progress("pgbench not found: no ratio")
        else:
            pg_dsn = await pgbench_database(server_dsn, args.pgbench_scale)
            tps = run_pgbench(
                binary,
                pg_dsn or db.with_database(server_dsn, PGBENCH_DATABASE),
                int(pgbench_seconds),
                scale=None if pg_dsn else args.pgbench_scale,
            )
            result["pgbench_tps"] = round(tps, 1)
            # Of the two figures as printed, so that the line is consistent with itself.
            result["ratio_to_pgbench"] = round(result["events_per_s"] / result["pgbench_tps"], 3)
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    # The benchmark's database is new every run, so a master key of its own for provider keys.
    os.environ.setdefault("WALLET_MASTER_KEY", base64.b64encode(secrets.token_bytes(32)).decode())
    with local.services(Settings.from_env()) as settings:
        result = asyncio.run(bench(args, settings))
    print(orjson.dumps(result).decode(), flush=True)
    failed = result["errors"] or result["ledger_check"] != "ok"
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
