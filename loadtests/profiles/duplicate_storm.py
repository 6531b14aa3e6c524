"""duplicate-storm: every request delivered several times at once, and every transaction retried.

A round is a bet, then its result (or, one round in five, its cancel). Each of the two events is:

1. sent as ``WALLET_LOAD_STORM_COPIES`` identical bodies at once (``<event> storm``): one is
   processed, the others get its answer from the replay cache, or ``R1 request_in_progress``
   while it is being processed (expected here: the contract's answer to a concurrent copy);
2. sent again as the same bytes until the answer is the remembered one, not in progress
   (``<event> replay``);
3. retried as the same transaction under a new ``request_id`` (``<event> retry``), which must be
   an idempotent repeat.

Checks, recorded as ``CHECK`` requests, a failure named ``duplicate mismatch`` each time one
fails: ``replay check``, every answer to the same bytes is the identical response object;
``retry check``, the retry is R0 ``duplicate`` with the first posting's ``transaction_id`` and the
same balance. The balance is compared only when the user has its player to itself (users are
given players in turn; with more users than players, players are shared).
"""

from __future__ import annotations

import itertools
import secrets
import time
from typing import Any

import gevent
from gevent.pool import Group
from locust import task

from app.client import seal_event
from loadtests.profiles.base import CONFIG, KEY, R0, SeamlessUser, new_id

STORM_EXPECT = frozenset({"R0", "R1 request_in_progress"})
REPLAY_ATTEMPTS = 50  # x 20 ms: a first delivery still in progress after a second is a failure
_claimed = itertools.count()


def _settled(answer: dict[str, Any]) -> bool:
    """An answer the wallet remembers for the request_id. Not a copy's ``request_in_progress``,
    nor ``internal_error``, which is never remembered: the same bytes are processed again (and
    the R1 is counted as a failure where it was answered)."""
    return answer.get("reason") not in ("request_in_progress", "internal_error")


class DuplicateStorm(SeamlessUser):
    def on_start(self) -> None:
        index = next(_claimed)
        self.player = CONFIG.players[index % len(CONFIG.players)]
        self.exclusive = index < len(CONFIG.players)

    @task
    def round(self) -> None:
        player_id = self.player["player_id"]
        round_id = new_id("rd")
        bet = self.bet_event(player_id, self.player["session_token"], round_id, CONFIG.bet_amount)
        if not self.deliver(bet):
            return
        if secrets.randbelow(5) == 0:
            closing = self.cancel_event(player_id, round_id, bet["transaction_id"])
        else:
            closing = self.result_event(player_id, round_id, self.win())
        self.deliver(closing)

    def deliver(self, event: dict[str, Any]) -> bool:
        """Storm, replay and retry ``event``; True when it was posted (R0)."""
        name = event["event"]
        body = seal_event(KEY, CONFIG.provider, event)
        group = Group()
        copies = [
            group.spawn(self.post, event, body=body, label=f"{name} storm", expect=STORM_EXPECT)
            for _ in range(CONFIG.storm_copies)
        ]
        group.join()
        final = [c.value for c in copies if c.value is not None and _settled(c.value)]
        for _ in range(REPLAY_ATTEMPTS):
            again = self.post(event, body=body, label=f"{name} replay", expect=STORM_EXPECT)
            if again is None:
                return False
            if _settled(again):
                final.append(again)
                break
            gevent.sleep(0.02)
        else:
            self.check("replay check", f"duplicate mismatch: {name} still in progress")
            return False
        first = final[0]
        different = [a for a in final if a != first]
        self.check(
            "replay check",
            f"duplicate mismatch: {name} replay answered {different[0]}, first {first}"
            if different
            else None,
        )
        if first.get("code") != "R0":
            return False
        retry = {**event, "request_id": new_id("lt"), "timestamp": int(time.time())}
        repeat = self.post(retry, label=f"{name} retry", expect=R0)
        if repeat is not None:
            self.check("retry check", self._retry_problem(name, first, repeat))
        return True

    def _retry_problem(
        self, name: str, first: dict[str, Any], repeat: dict[str, Any]
    ) -> str | None:
        fields = ["code", "transaction_id"] + (["balance"] if self.exclusive else [])
        if repeat.get("duplicate") is not True or any(
            repeat.get(f) != first.get(f) for f in fields
        ):
            return f"duplicate mismatch: {name} retry answered {repeat}, first {first}"
        return None
