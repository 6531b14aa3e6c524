"""hot-player: many users on a few players (``WALLET_LOAD_HOT_PLAYERS``), for contention.

Every user plays rounds for the same handful of players, so their events queue on those
players' locks: the profile measures how the wallet serialises one player's money events. A bet
refused R4 is expected here (a hot player seeded with a small balance runs dry, and then plays
on what the wins bring back); it is counted as ``bet R4``, not as a failure, and its round gets
no result.
"""

from __future__ import annotations

from locust import task

from loadtests.profiles.base import CONFIG, R0_OR_R4, RoundPlayer


class HotPlayer(RoundPlayer):
    expect_on_bet = R0_OR_R4

    def players(self) -> list[dict[str, str]]:
        return CONFIG.players[: CONFIG.hot_players]

    @task
    def round(self) -> None:
        self.play_round()
