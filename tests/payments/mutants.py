"""Plant payment bugs one at a time and see whether the payments model test catches each.

Run: ``.venv/bin/python -m tests.payments.mutants [--profile full|main-safe] [--examples N]
[NAME ...]`` (not part of ``make test``). It starts its own Postgres and Redis, runs the state
machine of tests/payments/test_model.py once unmutated (the baseline), then once per planted bug,
each applied with a monkeypatch, and prints one line per bug: caught or not, and the step that
caught it.

A bug can only be said to be caught against a baseline that passes. ``--profile full`` (the
default) is the test as ``make test`` runs it; when the baseline fails on it (main at 2100caa
does: see ``MAIN_SAFE`` in the test), the run says so and measures the bugs with
``--profile main-safe``, which leaves out what that code fails anyway. Bugs that need a left-out
feature to show are then reported as not measurable.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import hypothesis
import orjson
import pytest
from hypothesis import HealthCheck, Phase

import tests.support.keys  # noqa: F401  (sets the environment before the app is imported)
from app.config import Settings
from app.dev.devstack import EmbeddedPostgres, EmbeddedRedis
from app.payments import service, signing
from app.payments.psp import PspError, SandboxPsp
from app.web import messages
from tests.payments.test_model import (
    FULL,
    MAIN_SAFE,
    PROFILES,
    PaymentsMachine,
    Profile,
    run_machine,
)

Patch = Callable[[pytest.MonkeyPatch], None]

EXTRA_CREDIT = """
SELECT wallet_post('#payment', p.id || ':' || $2, 'deposit', p.player_id, acc.account_id,
                   acc.balance, p.currency, p.amount, p.amount, NULL, NULL, NULL, NULL, 'house',
                   'psp:' || p.psp, '{}'::jsonb)
  FROM payments p, wallet_lock_player(p.player_id) acc WHERE p.id = $1
"""
EXTRA_RELEASE = """
SELECT wallet_post('#payment', p.id || ':' || $2, 'withdrawal_release', p.player_id,
                   acc.account_id, acc.balance, p.currency, p.amount, p.amount, NULL, NULL, NULL,
                   NULL, 'house', 'withdrawal_holds', '{}'::jsonb)
  FROM payments p, wallet_lock_player(p.player_id) acc WHERE p.id = $1
"""


def failover_after_timeout(mp: pytest.MonkeyPatch) -> None:
    """The adapter reports a read timeout as a connection never made: the payout goes on to the
    next route although the first may have paid it."""
    real = SandboxPsp._call

    async def call(self: SandboxPsp, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return await real(self, *args, **kwargs)
        except PspError as exc:
            if exc.ambiguous:
                raise PspError("unreachable", retryable=True, not_sent=True) from None
            raise

    mp.setattr(SandboxPsp, "_call", call)


def release_on_unknown_outcome(mp: pytest.MonkeyPatch) -> None:
    """A timeout counts as a refusal: the withdrawal fails and its hold is released while the PSP
    may have paid it."""
    real = SandboxPsp._call

    async def call(self: SandboxPsp, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return await real(self, *args, **kwargs)
        except PspError as exc:
            if exc.ambiguous:
                raise PspError("timeout", retryable=False) from None
            raise

    mp.setattr(SandboxPsp, "_call", call)


def duplicate_webhook_credits_again(mp: pytest.MonkeyPatch) -> None:
    """A repeated ``succeeded`` event of a deposit credits the player once more."""
    real = service.Payments.apply_webhook

    async def apply(self: service.Payments, psp: str, body: bytes, signature: str | None) -> str:
        try:
            return await real(self, psp, body, signature)
        except service._AlreadyApplied:
            event = orjson.loads(body)
            data = event["data"]
            if data["kind"] == "deposit" and data["status"] == "succeeded":
                async with self.pool.acquire() as conn:
                    await conn.execute(EXTRA_CREDIT, data["reference"], event["id"])
            raise

    mp.setattr(service.Payments, "apply_webhook", apply)


def late_event_after_paid_releases(mp: pytest.MonkeyPatch) -> None:
    """A late, out-of-order event for a paid withdrawal gives the player the money back."""
    real = service.Payments._apply

    async def apply(self: service.Payments, conn: Any, payment: Any, event: Any) -> str:
        outcome = await real(self, conn, payment, event)
        if payment["kind"] == "withdrawal" and payment["status"] == "paid":
            await conn.execute(EXTRA_RELEASE, payment["id"], event.event_id)
        return outcome

    mp.setattr(service.Payments, "_apply", apply)


def skip_idempotency_check(mp: pytest.MonkeyPatch) -> None:
    """A repeated Idempotency-Key is not looked up: the payment is started again."""

    async def first_answer(self: service.Payments, *args: Any) -> None:
        return None

    mp.setattr(service.Payments, "_first_answer", first_answer)
    mp.setattr(service.Payments, "_repeat", lambda self, existing, req: None)


def skip_signature_check(mp: pytest.MonkeyPatch) -> None:
    """Webhook signatures are not verified."""
    mp.setattr(signing, "verify", lambda *args, **kwargs: None)


def ignore_amount_mismatch(mp: pytest.MonkeyPatch) -> None:
    """A PSP event is applied whatever amount it names."""
    mp.setattr(service, "_mismatch", lambda payment, event: None)


def accept_float_amount(mp: pytest.MonkeyPatch) -> None:
    """The API takes 1000.0 for 1000 (and so any float that happens to be whole)."""
    real = messages.parse

    def parse(model: Any, data: Any, *, strict: bool | None = None) -> Any:
        whole = {
            k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in data.items()
        }
        return real(model, whole, strict=strict)

    mp.setattr(messages, "parse", parse)


def credit_deposit_on_pending(mp: pytest.MonkeyPatch) -> None:
    """A deposit's ``pending`` (processing) status is taken for success."""
    real = service._target

    def target(kind: str, psp_status: str) -> str | None:
        if kind == "deposit" and psp_status == "pending":
            return "succeeded"
        return real(kind, psp_status)

    mp.setattr(service, "_target", target)


MUTANTS: dict[str, Patch] = {
    f.__name__: f
    for f in (
        failover_after_timeout,
        release_on_unknown_outcome,
        duplicate_webhook_credits_again,
        late_event_after_paid_releases,
        skip_idempotency_check,
        skip_signature_check,
        ignore_amount_mismatch,
        accept_float_amount,
        credit_deposit_on_pending,
    )
}


@dataclass(frozen=True)
class Verdict:
    caught: bool
    step: str  # the step during (or after) which an assertion failed
    steps: int  # how many steps that example had run by then
    error: str
    seconds: float


@contextmanager
def servers() -> Iterator[Settings]:
    folder = Path(tempfile.mkdtemp(prefix="wallet-mutants-"))
    pg = EmbeddedPostgres(folder / "pg", durable=False)
    redis = EmbeddedRedis(folder / "redis")
    try:
        database_url = pg.start()
        redis_url = redis.start()
        yield replace(
            Settings.from_env(),
            database_url=database_url,
            redis_url=redis_url,
            data_dir=folder,
            rate_limit_api_key=0,
        )
    finally:
        redis.stop()
        pg.stop()
        shutil.rmtree(folder, ignore_errors=True)


def run(settings: Settings, profile: Profile, examples: int, patch: Patch | None) -> Verdict:
    chosen = hypothesis.settings(
        max_examples=examples,
        stateful_step_count=20,
        deadline=None,
        database=None,
        # No shrinking: the first failing example is evidence enough, and shrinking a real
        # machine takes minutes per bug.
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow],
        print_blob=False,
    )
    started = time.monotonic()
    with pytest.MonkeyPatch.context() as mp:
        try:
            run_machine(settings, profile, chosen, before=(lambda: patch(mp)) if patch else None)
        except Exception as exc:  # noqa: BLE001  (any failure of the machine is a catch)
            trail = PaymentsMachine.trail
            return Verdict(
                True,
                trail[-1] if trail else "(set-up)",
                len(trail),
                _first_line(exc),
                time.monotonic() - started,
            )
    return Verdict(False, "", 0, "", time.monotonic() - started)


def _first_line(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default=FULL.name)
    parser.add_argument("--examples", type=int, default=40)
    parser.add_argument("names", nargs="*", help=f"some of: {', '.join(MUTANTS)}")
    args = parser.parse_args(argv)
    names = args.names or list(MUTANTS)
    unknown = set(names) - set(MUTANTS)
    if unknown:
        parser.error(f"no planted bug named {', '.join(sorted(unknown))}")
    profile = PROFILES[args.profile]
    with servers() as settings:
        baseline = run(settings, profile, args.examples, None)
        if baseline.caught and profile is FULL:
            print(f"baseline ({profile.name}) FAILS, at {baseline.step}: {baseline.error}")
            profile = MAIN_SAFE
            baseline = run(settings, profile, args.examples, None)
        print(
            f"baseline ({profile.name}): {'FAILS' if baseline.caught else 'passes'}"
            + (f" at {baseline.step}: {baseline.error}" if baseline.caught else "")
        )
        if baseline.caught:
            return 2
        caught = 0
        for name in names:
            verdict = run(settings, profile, args.examples, MUTANTS[name])
            caught += verdict.caught
            if verdict.caught:
                print(
                    f"{name}: caught in {verdict.seconds:.0f} s, at step {verdict.steps} "
                    f"{verdict.step}: {verdict.error}"
                )
            else:
                print(f"{name}: NOT caught ({args.examples} examples, {verdict.seconds:.0f} s)")
            sys.stdout.flush()
        print(f"caught {caught} of {len(names)} planted bugs ({profile.name} profile)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
