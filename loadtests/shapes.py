"""Load shapes, chosen with ``WALLET_LOAD_SHAPE`` (the locustfile exports at most one).

``burst``: bursts with a ramp. The run alternates a quiet phase at
``WALLET_LOAD_QUIET_PERCENT`` % of ``-u`` users (``WALLET_LOAD_QUIET_SECONDS``) and a burst at
``-u`` users (``WALLET_LOAD_BURST_SECONDS``); each change ramps at ``-r`` users per second. It
stops after ``-t``, or runs until interrupted without it.
"""

from __future__ import annotations

import os

from locust import LoadTestShape

from loadtests.config import env_int


class BurstShape(LoadTestShape):
    use_common_options = True  # -u, -r and -t keep their meaning: peak, ramp, run time

    def __init__(self) -> None:
        super().__init__()
        self.quiet_seconds = env_int(os.environ, "WALLET_LOAD_QUIET_SECONDS", 10)
        self.burst_seconds = env_int(os.environ, "WALLET_LOAD_BURST_SECONDS", 10)
        self.quiet_percent = env_int(os.environ, "WALLET_LOAD_QUIET_PERCENT", 25, minimum=0)

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None
        options = self.runner.environment.parsed_options
        peak = int(getattr(options, "num_users", None) or 1)
        ramp = float(getattr(options, "spawn_rate", None) or 1)
        run_time = getattr(options, "run_time", None)
        elapsed = self.get_run_time()
        if run_time and elapsed >= run_time:
            return None
        in_cycle = elapsed % (self.quiet_seconds + self.burst_seconds)
        quiet = max(1, peak * self.quiet_percent // 100)
        return (quiet if in_cycle < self.quiet_seconds else peak), ramp


SHAPES = {"burst": BurstShape}


def chosen() -> type[LoadTestShape] | None:
    """The shape named by ``WALLET_LOAD_SHAPE``, or None for Locust's own -u/-r/-t ramp."""
    name = os.environ.get("WALLET_LOAD_SHAPE", "")
    if not name:
        return None
    if name not in SHAPES:
        raise SystemExit(f"WALLET_LOAD_SHAPE: {name!r} is not one of {', '.join(SHAPES)}")
    return SHAPES[name]
