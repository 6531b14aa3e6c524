"""What every profile shares: the encrypted contract spoken through ``app.client``, and outcomes
counted by contract code.

Each answer is recorded under the name ``"<event> <code>"`` (``"bet R0"``, ``"bet R4"``,
``"cancel R1"``), so Locust's statistics, CSV and HTML reports break every event down by code.
An answer whose code the profile did not expect is also a failure, with ``"<code> <reason>"`` as
its error: R1 to R3 always, R4 unless the profile expects it for that request. Checks that are not
one request (a replay giving another answer) are recorded as requests of type ``CHECK``.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Collection
from typing import Any

import gevent
from locust import FastHttpUser, events
from locust.env import Environment

from app.client import open_answer, seal_event
from loadtests.config import GAME_ID, LoadConfig

CONFIG = LoadConfig.from_env()
KEY = base64.b64decode(CONFIG.key)
PATH = f"/v1/seamless/{CONFIG.provider}"
HEADERS = {"content-type": "application/json"}
if CONFIG.key_id:
    HEADERS["x-key-id"] = CONFIG.key_id
R0 = frozenset({"R0"})
R0_OR_R4 = frozenset({"R0", "R4"})
# Wins per round, as multiples of the bet: half the rounds lose, a few pay double or triple; the
# game returns 7/8 of the stakes, so players drift down slowly, as in a casino.
WIN_MULTIPLES = (0, 0, 0, 0, 1, 1, 2, 3)


@events.init.add_listener
def _refresh_clock(environment: Environment, **_: object) -> None:
    """gevent times ``-t`` from its loop's cached clock, last read before the imports: on a busy
    machine that reading is seconds old, and a 2 s run ended at once. Read it afresh."""
    gevent.get_hub().loop.update_now()


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


class SeamlessUser(FastHttpUser):
    """A provider's game server: builds events, seals them, and counts each answer by its code."""

    abstract = True
    host = CONFIG.host
    # Gevent greenlets of one user may send at once (duplicate-storm); one connection per copy.
    concurrency = max(10, CONFIG.storm_copies)

    def event(self, name: str, **fields: Any) -> dict[str, Any]:
        """An event with a fresh request_id and the current timestamp."""
        return {
            "event": name,
            "request_id": new_id("lt"),
            "timestamp": int(time.time()),
            **fields,
        }

    def send(
        self, name: str, *, expect: Collection[str] = R0, **fields: Any
    ) -> dict[str, Any] | None:
        """Send a new event; its answer, or None when there was no readable answer."""
        return self.post(self.event(name, **fields), expect=expect)

    def post(
        self,
        event: dict[str, Any],
        *,
        expect: Collection[str] = R0,
        body: bytes | None = None,
        label: str | None = None,
    ) -> dict[str, Any] | None:
        """Send ``event`` (as ``body`` when given: resending identical bytes) and count it.

        ``expect`` holds the codes that count as success, or ``"<code> <reason>"`` for one
        reason only; the answer is recorded as ``"<label> <code>"`` (label: the event's name).
        """
        label = label or event["event"]
        if body is None:
            body = seal_event(KEY, CONFIG.provider, event)
        with self.client.post(
            PATH, data=body, headers=HEADERS, name=label, catch_response=True
        ) as response:
            if response.status_code != 200 or not response.content:
                response.request_meta["name"] = f"{label} HTTP {response.status_code}"
                response.failure(f"HTTP {response.status_code}")
                return None
            answer = open_answer(KEY, CONFIG.provider, response.content)
            code, reason = answer.get("code"), answer.get("reason")
            response.request_meta["name"] = f"{label} {code}"
            if code in expect or f"{code} {reason}" in expect:
                response.success()
            else:
                response.failure(f"{code} {reason}: {answer.get('message')}")
            return answer

    def check(self, name: str, problem: str | None) -> None:
        """Record a check that is not one request: a failure named ``name`` when ``problem``."""
        self.environment.events.request.fire(
            request_type="CHECK",
            name=name,
            response_time=0,
            response_length=0,
            response=None,
            context={},
            exception=AssertionError(problem) if problem else None,
        )

    # --- the events, with the fields every profile fills in the same way ---------------------

    def bet_event(
        self, player_id: str, token: str, round_id: str, amount: int, txn: str | None = None
    ) -> dict[str, Any]:
        return self.event(
            "bet",
            player_id=player_id,
            session_token=token,
            transaction_id=txn or new_id("b"),
            round_id=round_id,
            game_id=GAME_ID,
            amount=amount,
            currency=CONFIG.currency,
        )

    def bet(
        self,
        player: dict[str, str],
        round_id: str,
        amount: int,
        *,
        token: str | None = None,
        expect: Collection[str] = R0,
    ) -> tuple[str, dict[str, Any] | None]:
        """A bet on ``round_id`` (with the player's seeded session by default); (its
        transaction_id, the answer)."""
        token = token or player["session_token"]
        event = self.bet_event(player["player_id"], token, round_id, amount)
        return event["transaction_id"], self.post(event, expect=expect)

    def result_event(self, player_id: str, round_id: str, amount: int) -> dict[str, Any]:
        return self.event(
            "result",
            player_id=player_id,
            transaction_id=new_id("w"),
            round_id=round_id,
            game_id=GAME_ID,
            amount=amount,
            currency=CONFIG.currency,
        )

    def cancel_event(self, player_id: str, round_id: str, ref: str) -> dict[str, Any]:
        return self.event(
            "cancel",
            player_id=player_id,
            transaction_id=new_id("c"),
            ref_transaction_id=ref,
            round_id=round_id,
            currency=CONFIG.currency,
        )

    def win(self) -> int:
        return CONFIG.bet_amount * secrets.choice(WIN_MULTIPLES)


class RoundPlayer(SeamlessUser):
    """Plays rounds, a bet then its result, for players picked from ``players()`` each round."""

    abstract = True
    expect_on_bet: Collection[str] = R0

    def players(self) -> list[dict[str, str]]:
        return CONFIG.players

    def play_round(self) -> None:
        player = secrets.choice(self.players())
        round_id = new_id("rd")
        _, answer = self.bet(player, round_id, CONFIG.bet_amount, expect=self.expect_on_bet)
        if answer is None or answer.get("code") != "R0":
            return  # no stake taken: a result now would be a free round, not this round's outcome
        self.post(self.result_event(player["player_id"], round_id, self.win()))
