"""Locust entry point: re-exports the profiles; pick one by its class name. See docs/loadtests.md.

    make load-seed PLAYERS=1000
    make load PROFILE=bet-burst USERS=64 SPAWN=16 DURATION=60s HOST=http://127.0.0.1:8080

which runs, for example::

    .venv/bin/locust -f loadtests/locustfile.py BetBurst --host http://127.0.0.1:8080 \
        --headless -u 64 -r 16 -t 60s --csv loadtests/reports/bet-burst \
        --html loadtests/reports/bet-burst.html
"""

from loadtests.profiles.bet_burst import BetBurst
from loadtests.profiles.duplicate_storm import DuplicateStorm
from loadtests.profiles.hot_player import HotPlayer
from loadtests.profiles.mixed import Mixed
from loadtests.shapes import chosen

__all__ = ["BetBurst", "DuplicateStorm", "HotPlayer", "Mixed"]

# Locust runs the load shape it finds in this module, if any: there is one only when asked for.
Shape = chosen()
if Shape is None:
    del Shape
