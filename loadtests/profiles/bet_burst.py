"""bet-burst: many players, each round a bet then its result, as fast as answers come back.

The players are all seeded players (``WALLET_LOAD_PLAYERS``), one picked at random per round.
Bursts come from the ramp: ``-u``/``-r`` alone ramp once to the peak; with
``WALLET_LOAD_SHAPE=burst`` the load alternates between a quiet level and ramps to the peak (see
``loadtests/shapes.py``). Every answer but R0 is a failure: the seed funds players for many
thousands of rounds.
"""

from __future__ import annotations

from locust import task

from loadtests.profiles.base import RoundPlayer


class BetBurst(RoundPlayer):
    @task
    def round(self) -> None:
        self.play_round()
