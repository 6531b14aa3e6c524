"""mixed: every event of the contract, in the ratios of ``WALLET_LOAD_MIX`` (loadtests/config.py).

Each user is one player's game session, and keeps what a provider keeps, so every reference is
real: cancels name a bet of this user whose round has no result yet, and corrections name a
result this user posted. The weights, and what each one does:

- ``bet``: a bet on a new round. ``result``: the result of the oldest open round. ``cancel``: the
  refund of the newest open bet (the ``amount`` is sent on every other one). With no open bet,
  ``result`` and ``cancel`` place a bet instead.
- ``cancel_unknown``: the cancel of a bet the wallet never saw (R0, nothing posted, the id kept as
  cancelled), then that late bet, which the contract requires be refused ``R1
  transaction_cancelled``: recorded as ``late bet R1``, expected.
- ``result_change``: a correction of one of the last results, to a new total.
- ``jackpot``, ``bonus``: the result of the oldest open round with that ``kind`` (recorded as
  ``result jackpot`` and ``result bonus``); a jackpot pays 20 bets, a bonus 2.
- ``end_round``: the oldest open round gets a result with ``round_closed: false`` (``result open``),
  then ``end_round`` closes it.
- ``free_round``: a round played with free rounds: a bet of ``amount`` 0 naming a grant
  (``free bet``), then its result, which the wallet credits as ``free_round`` (``result free``).
  The grant is the casino's, made through the operator API (``POST
  /v1/players/{id}/free-rounds``, recorded as ``operator free rounds 201``) when this user has
  none left. Without an operator API key no grant can be made, and ``free_round`` has no weight.
- ``promo_win``: a promotion's credit outside rounds (one of a few promo ids), of one bet.
- ``balance``. ``overdraft``: a bet larger than any balance, expected R4 (and only R4).
- ``login``: a game launch. With an operator API key (the seed writes one) the casino issues a new
  session first (``POST /v1/players/{id}/sessions``, recorded as ``operator session 201``), as a
  real launch does; without one, the seeded session logs in again.
- ``logout``: ends this user's session. A logged-out session stays ended, so the next bet waits
  for a login (a new launch); a logout while logged out repeats the last one, which is R0.
  Without an operator API key no new session could be issued, and the seeded session is shared
  by users, so ``logout`` then has no weight.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from locust import events
from locust.env import Environment

from loadtests.profiles.base import CONFIG, GAME_ID, R0, SeamlessUser, new_id

log = logging.getLogger(__name__)
MAX_AMOUNT = 10**15  # the largest amount the contract takes: more than any balance
OPEN_ROUNDS_KEPT = 20
# What a kind of result pays, in bets.
KIND_MULTIPLES = {"jackpot": 20, "bonus": 2}
FREE_ROUNDS_PER_GRANT = 10
PROMOS = ("tournament-weekly", "cash-drop", "campaign-welcome")


@dataclass
class Bet:
    txn: str
    round_id: str
    amount: int


@dataclass
class Result:
    txn: str
    round_id: str
    total: int  # the result's amount, or its latest correction


# Without an operator API key no session can be issued after a logout, and no free rounds
# granted: those tasks have no weight.
NEEDS_API_KEY = ("logout", "free_round")
OFF = () if CONFIG.api_key else tuple(n for n in NEEDS_API_KEY if CONFIG.mix.get(n))


def _weights(available: dict[str, Callable[[Mixed], None]]) -> dict[Callable[[Mixed], None], int]:
    mix = dict(CONFIG.mix, **dict.fromkeys(OFF, 0))
    return {available[name]: weight for name, weight in mix.items() if weight}


class Mixed(SeamlessUser):
    def on_start(self) -> None:
        self.player = secrets.choice(CONFIG.players)
        self.token: str | None = None  # the live session; None after a logout
        self.ended: str | None = None  # the last session this user logged out
        self.open_bets: deque[Bet] = deque(maxlen=OPEN_ROUNDS_KEPT)
        self.results: deque[Result] = deque(maxlen=OPEN_ROUNDS_KEPT)
        self.grant: str | None = None  # this user's free-round grant, while it has rounds
        self.free_left = 0
        self.login()

    @property
    def player_id(self) -> str:
        return self.player["player_id"]

    def new_session(self) -> str | None:
        """A session issued by the casino (the operator API), or the seeded one without a key."""
        if not CONFIG.api_key:
            return self.player["session_token"]
        with self.client.post(
            f"/v1/players/{self.player_id}/sessions",
            json={"provider": CONFIG.provider, "game_id": GAME_ID},
            headers={"authorization": f"Bearer {CONFIG.api_key}"},
            name="operator session",
            catch_response=True,
        ) as response:
            response.request_meta["name"] = f"operator session {response.status_code}"
            if response.status_code != 201 or not response.content:
                response.failure(f"HTTP {response.status_code}")
                return None
            token: str = response.json()["session_token"]
            return token

    def login(self) -> None:
        token = self.new_session()
        if token is None:
            return
        answer = self.send("login", player_id=self.player_id, session_token=token)
        self.token = token if answer is not None and answer.get("code") == "R0" else None

    def logout(self) -> None:
        # Logged out already: the provider's repeated logout, which the contract answers R0.
        token = self.token or self.ended
        if token is None:  # never logged in: nothing of this user's to end
            self.login()
            return
        self.send("logout", player_id=self.player_id, session_token=token)
        self.ended, self.token = token, None

    def place_bet(self) -> None:
        if self.token is None:
            self.login()
            if self.token is None:
                return
        round_id = new_id("rd")
        txn, answer = self.bet(self.player, round_id, CONFIG.bet_amount, token=self.token)
        if answer is not None and answer.get("code") == "R0":
            self.open_bets.append(Bet(txn, round_id, CONFIG.bet_amount))

    def overdraft(self) -> None:
        if self.token is None:
            self.login()
            if self.token is None:
                return
        self.bet(self.player, new_id("rd"), MAX_AMOUNT, token=self.token, expect={"R4"})

    def oldest_round(self) -> Bet | None:
        """The oldest open round of this user, with a bet placed first when there is none."""
        if not self.open_bets:
            self.place_bet()  # a round to settle first
        return self.open_bets.popleft() if self.open_bets else None

    def settle(self, round_id: str, amount: int, label: str = "result", **fields: object) -> bool:
        """Send the round's result; whether it was posted (and kept for corrections)."""
        event = self.result_event(self.player_id, round_id, amount)
        event.update(fields)
        answer = self.post(event, label=label)
        posted = answer is not None and answer.get("code") == "R0"
        if posted:
            self.results.append(Result(event["transaction_id"], round_id, amount))
        return posted

    def result(self) -> None:
        bet = self.oldest_round()
        if bet is not None:
            self.settle(bet.round_id, self.win())

    def kind_result(self, kind: str) -> None:
        bet = self.oldest_round()
        if bet is not None:
            amount = CONFIG.bet_amount * KIND_MULTIPLES[kind]
            self.settle(bet.round_id, amount, f"result {kind}", kind=kind)

    def jackpot(self) -> None:
        self.kind_result("jackpot")

    def bonus(self) -> None:
        self.kind_result("bonus")

    def end_round(self) -> None:
        """A result that leaves the round open, then the provider's end of the round."""
        bet = self.oldest_round()
        if bet is None:
            return
        if self.settle(bet.round_id, self.win(), "result open", round_closed=False):
            self.send("end_round", player_id=self.player_id, round_id=bet.round_id,
                      game_id=GAME_ID)  # fmt: skip

    def new_grant(self) -> str | None:
        """Free rounds granted by the casino (the operator API) to this user's player."""
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86_400))
        with self.client.post(
            f"/v1/players/{self.player_id}/free-rounds",
            json={
                "provider": CONFIG.provider,
                "game_id": GAME_ID,
                "rounds": FREE_ROUNDS_PER_GRANT,
                "bet_value": CONFIG.bet_amount,
                "expires_at": expires,
            },
            headers={
                "authorization": f"Bearer {CONFIG.api_key}",
                "idempotency-key": new_id("fr"),
            },
            name="operator free rounds",
            catch_response=True,
        ) as response:
            response.request_meta["name"] = f"operator free rounds {response.status_code}"
            if response.status_code != 201 or not response.content:
                response.failure(f"HTTP {response.status_code}")
                return None
            self.free_left = FREE_ROUNDS_PER_GRANT
            grant: str = response.json()["free_round_id"]
            return grant

    def free_round(self) -> None:
        """A round played with a free round: a bet of 0 naming the grant, then its result."""
        if self.token is None:
            self.login()
            if self.token is None:
                return
        if self.grant is None or self.free_left == 0:
            self.grant = self.new_grant()
            if self.grant is None:
                return
        round_id = new_id("fr")
        event = self.bet_event(self.player_id, self.token, round_id, 0)
        event["free_round_id"] = self.grant
        answer = self.post(event, label="free bet")
        if answer is not None and answer.get("code") == "R0":
            self.free_left -= 1
            self.settle(round_id, self.win(), "result free")

    def promo_win(self) -> None:
        self.send(
            "promo_win",
            player_id=self.player_id,
            transaction_id=new_id("pw"),
            promo_id=secrets.choice(PROMOS),
            amount=CONFIG.bet_amount,
            currency=CONFIG.currency,
        )

    def cancel(self) -> None:
        if not self.open_bets:
            self.place_bet()
            return
        bet = self.open_bets.pop()
        event = self.cancel_event(self.player_id, bet.round_id, bet.txn)
        if secrets.randbelow(2):
            event["amount"] = bet.amount  # optional, and then it must equal the bet's
        self.post(event)

    def cancel_unknown(self) -> None:
        round_id, never_sent = new_id("rd"), new_id("b")
        answer = self.post(self.cancel_event(self.player_id, round_id, never_sent))
        if answer is None or answer.get("code") != "R0" or self.token is None:
            return
        late = self.bet_event(
            self.player_id, self.token, round_id, CONFIG.bet_amount, txn=never_sent
        )
        self.post(late, label="late bet", expect={"R1 transaction_cancelled"})

    def result_change(self) -> None:
        if not self.results:
            self.result()  # something to correct first
        if not self.results:
            return
        settled = secrets.choice(self.results)
        totals = {0, settled.total // 2, settled.total + CONFIG.bet_amount} - {settled.total}
        total = secrets.choice(sorted(totals))
        answer = self.send(
            "result_change",
            expect=R0,
            player_id=self.player_id,
            transaction_id=new_id("rc"),
            ref_transaction_id=settled.txn,
            round_id=settled.round_id,
            amount=total,
            currency=CONFIG.currency,
        )
        if answer is not None and answer.get("code") == "R0":
            settled.total = total

    def balance(self) -> None:
        self.send("balance", player_id=self.player_id)

    tasks = _weights(
        {
            "bet": place_bet,
            "result": result,
            "jackpot": jackpot,
            "bonus": bonus,
            "end_round": end_round,
            "free_round": free_round,
            "promo_win": promo_win,
            "balance": balance,
            "cancel": cancel,
            "cancel_unknown": cancel_unknown,
            "result_change": result_change,
            "login": login,
            "logout": logout,
            "overdraft": overdraft,
        }
    )


@events.test_start.add_listener
def _say_what_is_off(environment: Environment, **_: object) -> None:
    if OFF and Mixed in environment.user_classes:
        log.warning(
            "mixed: no operator API key (WALLET_LOAD_API_KEY), so %s have no weight", ", ".join(OFF)
        )
