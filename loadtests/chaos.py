"""Chaos run for QA: mixed seamless load while Postgres and Redis are broken on purpose.

    python -m loadtests.chaos --duration 300 [--players 200] [--concurrency 32]

Everything runs on 127.0.0.1 in a temporary folder: its own Postgres and Redis
(``app.dev.devstack``, Redis behind a proxy that can delay replies), the wallet as a real
``wallet serve`` process (uvicorn) on them, and a seeded provider with funded players. Players then
play rounds (bets, results, cancels, duplicate and replayed deliveries, balance checks) from a
simulated provider that keeps its own model of every balance and retries every retryable R1 until it
gets a final answer, while faults are injected one after another with calm gaps between them:
backends terminated, Postgres restarted, Redis killed and restarted, Redis slow, Redis beyond its
timeout.

Progress goes to stderr every ``--progress`` seconds. At the end the load drains, the wallet must
be ready again and answer a new round without an ``internal_error``, and the ledger is compared
with the model. One JSON line on stdout says what happened; the exit status is 0 only when
nothing is wrong: no balance or posting differs from the model, no transaction is posted twice,
the ledger check passes, every delivery got a final answer, the wallet logged no exception that
escaped its error handling, and it shut down cleanly at the end.

It stops at ``--duration`` (plus the drain), and stops every server it started on Ctrl-C too.
The folder is deleted after a clean run and kept (with the wallet's log) after a failed one.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import orjson

from app.client import ProviderClient
from app.dev.devstack import free_port
from loadtests.faults import (
    FAULTS,
    FaultStack,
    Simulator,
    failures_in_a_new_round,
    seed_players,
    verify,
    wait_ready,
)

BALANCE = 10_000_000
# Lines the wallet logs when an exception got past the service's own handling.
ESCAPED = ("seamless request failed unexpectedly", "unhandled error on")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Injector:
    """Injects the faults in turn, a calm gap before each, until told to stop."""

    stack: FaultStack
    rng: random.Random
    calm: float
    current: str = "none"
    injected: Counter[str] = field(default_factory=Counter)

    async def run(self, stop: asyncio.Event) -> None:
        names = list(FAULTS)
        for turn in itertools.count():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.calm)
            if stop.is_set():
                return
            name = names[turn % len(names)]
            self.current = name
            self.injected[name] += 1
            try:
                await FAULTS[name](self.stack, self.rng)  # mends what it broke before returning
            finally:
                self.current = "none"


class Wallet:
    """``wallet serve`` in a child process, on the stack's servers."""

    def __init__(self, folder: Path, stack: FaultStack, admin_key: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = folder / "wallet.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
        env.update(
            WALLET_DATABASE_URL=stack.dsn,
            WALLET_REDIS_URL=stack.redis_url,
            WALLET_ADMIN_API_KEY=admin_key,
            WALLET_MASTER_KEY=os.environ["WALLET_MASTER_KEY"],
            WALLET_DATA_DIR=str(folder / "data"),
            WALLET_LOG_FORMAT="json",
        )
        self._log: IO[bytes] = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1"]
            + ["--port", str(self.port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us; we stop it in order
        )

    async def wait_ready(self, http: httpx.AsyncClient) -> None:
        """Until /readyz answers 200; SystemExit with the log's end if the process exits."""
        ready = asyncio.create_task(wait_ready(http, timeout=60))
        while not ready.done():
            if self.proc.poll() is not None:
                ready.cancel()
                tail = self.log_path.read_text(errors="replace").splitlines()[-20:]
                raise SystemExit("wallet serve exited while starting:\n" + "\n".join(tail))
            await asyncio.wait([ready], timeout=0.2)
        await ready

    def escaped_exceptions(self) -> int:
        text = self.log_path.read_text(errors="replace")
        return sum(text.count(line) for line in ESCAPED)

    def stop(self) -> int | None:
        """SIGINT (graceful), then SIGKILL after 20 s; its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode


def progress_line(started: float, sim: Simulator, injector: Injector) -> str:
    stats = sim.stats
    errors = " ".join(f"{k}={v}" for k, v in sorted(stats.answers.items()) if k != "R0")
    return (
        f"[{time.monotonic() - started:5.0f} s] events {stats.events}, R0 {stats.answers['R0']}, "
        f"errors: {errors or 'none'}; retries {stats.retries}; "
        f"fault: {injector.current} ({sum(injector.injected.values())} injected)"
    )


async def report_progress(
    every: float, started: float, sim: Simulator, injector: Injector, wallet: Wallet
) -> None:
    while True:
        await asyncio.sleep(every)
        say(progress_line(started, sim, injector))
        if wallet.proc.poll() is not None:
            sim.stats.problem(f"the wallet process exited with {wallet.proc.returncode}")
            return


async def chaos(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    os.environ.setdefault("WALLET_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
    # Amounts and choices come from the seed; which player draws which depends on timing.
    rng = random.Random(args.seed)
    stack = FaultStack(folder, proxy=True)
    wallet: Wallet | None = None
    client: ProviderClient | None = None
    tasks: list[asyncio.Task[Any]] = []
    try:
        await stack.start()
        seeded = await seed_players(stack.dsn, args.players, BALANCE)
        wallet = Wallet(folder, stack, "chaos-admin-" + secrets.token_hex(8))
        async with httpx.AsyncClient(base_url=wallet.url) as http:
            await wallet.wait_ready(http)
            say(f"wallet ready on {wallet.url}; {args.players} players; seed {args.seed}")
            client = ProviderClient(wallet.url, seeded.provider, seeded.key, timeout=20)
            sim = Simulator(client, seeded, rng=rng, deadline=120, request_timeout=30)
            injector = Injector(stack, random.Random(args.seed + 1), args.calm)
            stop = asyncio.Event()
            started = time.monotonic()
            load = asyncio.create_task(sim.run(stop, args.concurrency))
            inject = asyncio.create_task(injector.run(stop))
            report = asyncio.create_task(
                report_progress(args.progress, started, sim, injector, wallet)
            )
            tasks = [load, inject, report]
            # Until the duration is up, or earlier if any of them ends (the wallet died, a
            # fault could not be mended).
            await asyncio.wait(tasks, timeout=args.duration, return_when=asyncio.FIRST_COMPLETED)
            stop.set()
            await inject  # the fault under way is mended before the load drains
            say("stopping: draining the rounds under way")
            if wallet.proc.poll() is not None:
                load.cancel()  # nothing left to answer them
            await asyncio.wait([load], timeout=180)
            if not load.done():
                load.cancel()
                sim.stats.problem("the rounds under way did not finish within 180 s")
            elif not load.cancelled() and load.exception() is not None:
                raise RuntimeError("the simulator failed") from load.exception()
            elapsed = time.monotonic() - started
            ready_after: float | None = None
            failures_after = -1  # not measured: never ready again
            with contextlib.suppress(TimeoutError):
                ready_after = await wait_ready(http, timeout=30)
                sample = seeded.players[: args.concurrency]
                failures_after = await failures_in_a_new_round(sim, sample)
        verdict = await verify(stack.dsn, seeded.provider, seeded.players)
        exit_code = wallet.stop()  # a graceful shutdown after all that is part of the test
        escaped = wallet.escaped_exceptions()
        stats = sim.stats
        ok = (
            verdict.ok
            and stats.problem_count == 0
            and stats.unresolved == 0
            and escaped == 0
            and failures_after == 0
            and exit_code == 0
        )
        return {
            "ok": ok,
            "seconds": round(elapsed, 1),
            "players": args.players,
            "concurrency": args.concurrency,
            "seed": args.seed,
            **stats.summary(),
            "errors": {k: v for k, v in sorted(stats.answers.items()) if k != "R0"},
            "faults": dict(injector.injected),
            **verdict.summary(),
            "exceptions_logged": escaped,
            "wallet_exit_code": exit_code,
            "ready_after_seconds": None if ready_after is None else round(ready_after, 2),
            "internal_errors_after_recovery": failures_after,
            "problem_examples": stats.problems[:10],
        }
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if client is not None:
            await client.aclose()
        if wallet is not None:
            wallet.stop()
        await stack.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=300, help="seconds of load and faults")
    parser.add_argument("--players", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32, help="players playing at once")
    parser.add_argument("--calm", type=float, default=5, help="seconds between faults")
    parser.add_argument("--progress", type=float, default=10, help="seconds between lines")
    parser.add_argument("--seed", type=int, help="random seed for amounts, choices and faults")
    parser.add_argument("--keep", action="store_true", help="keep the folder after a clean run")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = secrets.randbelow(2**31)
    if args.players < 1 or args.concurrency < 1 or args.duration <= 0:
        parser.error("--players, --concurrency and --duration must be positive")
    folder = Path(tempfile.mkdtemp(prefix="wallet-chaos-"))
    result: dict[str, Any] | None = None
    try:
        result = asyncio.run(_main_task(args, folder))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted; servers stopped")
        return 130
    finally:
        if result is not None and result["ok"] and not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            say(f"kept {folder} (wallet.log, pg/, redis/)")
    print(orjson.dumps(result).decode(), flush=True)
    return 0 if result["ok"] else 1


async def _main_task(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """The run, cancelled (and so cleaned up) on SIGTERM as on Ctrl-C."""
    task = asyncio.current_task()
    assert task is not None
    with contextlib.suppress(NotImplementedError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await chaos(args, folder)


if __name__ == "__main__":
    sys.exit(main())
