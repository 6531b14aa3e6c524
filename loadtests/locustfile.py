"""Locust entry point: re-exports the profiles. Pick one with its class name, e.g.

    python -m loadtests.seed --players 1000
    .venv/bin/locust -f loadtests/locustfile.py BetBurst --host http://127.0.0.1:8080 \
        --headless -u 64 -r 16 -t 60s --csv loadtests/reports/bet-burst \
        --html loadtests/reports/bet-burst.html
"""

from loadtests.profiles.bet_burst import BetBurst

__all__ = ["BetBurst"]
