"""An in-memory model of the seamless contract, for tests/seamless/test_model_based.py.

Given every delivery so far, the model says what the wallet must answer to the next one, and
keeps what the ledger must then hold: balances, postings, rounds, sessions, the request_id replay
records. It is plain Python with no I/O, written from docs/seamless.md and checked against what
tests/seamless/test_money.py, test_protocol.py and test_edges.py pin. One
difference from the document: its list of a bet's checks puts transaction_cancelled first, but
an unknown player, an idempotency conflict and a currency mismatch are answered before it (the
edge tests pin the conflict: "a changed resend is still a conflict first"); the model follows
the service there.

The model cannot know the wallet's own transaction ids in advance. When it predicts a new posting
it takes the id from the actual answer if that id is a string of digits never seen before, and
expects a placeholder that cannot match otherwise; every later duplicate must then carry that id,
and the ledger check compares the ids of all postings.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import time
from dataclasses import dataclass, field
from typing import Any

FRESHNESS_SECONDS = 300
KINDS = ("win", "jackpot", "bonus", "free_round")
MAX_AMOUNT = 10**15
# Expected instead of a new posting's id when the actual answer carries none that is fresh.
NOT_A_NEW_ID = "<a new wallet transaction id>"

Answer = dict[str, Any]


@dataclass
class Player:
    player_id: str
    currency: str
    balance: int
    status: str = "active"
    limits: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind, period): in force


@dataclass
class Session:
    player_id: str
    provider: str
    ended: bool = False


@dataclass(frozen=True)
class Posting:
    """One row of ledger_transactions, as the model expects it."""

    wallet_id: int
    txn: str
    kind: str
    player_id: str
    round_id: str | None
    amount: int | None
    currency: str
    ref: str | None  # the referenced transaction; a promo_win's promo_id
    delta: int
    result_kind: str | None = None  # a result's (and its corrections') kind of win
    free_round: int | None = None  # a bet's free-round grant


@dataclass
class Round:
    bets: int = 0
    cancelled: int = 0
    results: int = 0
    closed: bool = False
    free_bets: int = 0
    settled: str | None = None  # an operator's settlement: refund or close


@dataclass
class Grant:
    """A free-round grant (docs/operator.md, Free rounds)."""

    player_id: str
    provider: str
    game_id: str
    rounds: int
    used: int = 0
    withdrawn: bool = False
    expired: bool = False

    def usable(self, player_id: str, provider: str, game_id: str) -> bool:
        return (
            (self.player_id, self.provider, self.game_id) == (player_id, provider, game_id)
            and not (self.withdrawn or self.expired)
            and self.used < self.rounds
        )


@dataclass(frozen=True)
class Expectation:
    """What one answer must be: ``exact`` compares the whole object (a replayed first answer),
    otherwise everything but the human ``message``."""

    answer: Answer
    exact: bool = False
    message_names: str | None = None  # a field the message must name

    def matches(self, actual: Answer) -> bool:
        message = actual.get("message")
        if not isinstance(message, str) or not message:
            return False
        if self.message_names is not None and self.message_names not in message:
            return False
        if self.exact:
            return actual == self.answer
        return {k: v for k, v in actual.items() if k != "message"} == self.answer


class Wallet:
    """The contract's state for one provider and its players."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.players: dict[str, Player] = {}
        self.sessions: dict[str, Session] = {}  # by token
        self.postings: dict[str, Posting] = {}  # by the provider's transaction_id
        self.cancel_of: dict[str, str] = {}  # referenced transaction_id -> the cancel's id
        self.rounds: dict[tuple[str, str], Round] = {}  # (player, round): rounds are per player
        self.totals: dict[str, int] = {}  # result transaction_id -> its corrected total
        self.grants: dict[str, Grant] = {}  # by free_round_id
        # request_id -> the first delivery's answer, and what makes an event that event
        self.replies: dict[str, tuple[Answer, dict[str, Any]]] = {}
        self.wallet_ids: set[int] = set()

    # --- set-up and operator actions ------------------------------------------------------

    def add_player(self, player_id: str, currency: str, balance: int) -> None:
        self.players[player_id] = Player(player_id, currency, balance)

    def add_session(self, token: str, player_id: str, provider: str) -> None:
        self.sessions[token] = Session(player_id, provider)

    def add_grant(self, grant_id: str, grant: Grant) -> None:
        self.grants[grant_id] = grant

    def settle(self, player_id: str, round_id: str, action: str) -> list[str]:
        """An operator settles a stale round (docs/operator.md, Rounds): ``refund`` refunds each
        bet not cancelled yet, as a cancel ``#settle:<bet>``; both close the round. The
        transaction ids of the refunds, in the order posted (the bets' order)."""
        player = self.players[player_id]
        round_ = self.rounds[(player_id, round_id)]
        refunds = []
        if action == "refund":
            for bet in list(self.postings.values()):
                if bet.kind != "bet" or bet.player_id != player_id or bet.round_id != round_id:
                    continue
                if bet.txn in self.cancel_of:
                    continue
                txn = "#settle:" + bet.txn
                assert bet.amount is not None
                player.balance += bet.amount
                self.postings[txn] = Posting(
                    -1, txn, "cancel", player_id, round_id, bet.amount, player.currency,
                    bet.txn, bet.amount,
                )  # fmt: skip
                self.cancel_of[bet.txn] = txn
                if bet.free_round is not None:
                    grant = self.grants[str(bet.free_round)]
                    grant.used = max(grant.used - 1, 0)
                refunds.append(txn)
            round_.cancelled = round_.bets
        round_.closed = True
        round_.settled = action
        return refunds

    def settled_ids(self, ids: dict[str, int]) -> None:
        """The wallet ids of a settlement's refunds, as the ledger gave them."""
        for txn, wallet_id in ids.items():
            self.postings[txn] = dataclasses.replace(self.postings[txn], wallet_id=wallet_id)
            self.wallet_ids.add(wallet_id)

    def set_limit(self, player_id: str, kind: str, period: str, amount: int | None) -> int | None:
        """docs/operator.md, Limits: a new or lower limit applies at once; a raise or a removal
        waits for the cooling-off period (a day), so within a test it never applies."""
        limits = self.players[player_id].limits
        current = limits.get((kind, period))
        if amount is not None and (current is None or amount <= current):
            limits[(kind, period)] = amount
        return limits.get((kind, period))

    # --- deliveries -----------------------------------------------------------------------

    def deliver(self, event: dict[str, Any], actual: Answer) -> Expectation:
        """The answer to one delivery of ``event``; ``actual`` (the wallet's answer) only lends
        the id of a new posting and becomes the stored reply of its request_id."""
        rid = event["request_id"]
        bad = self._invalid_field(event)
        if bad is not None:
            # Refused while parsing, before the replay record: not remembered.
            player = self.players.get(event["player_id"])
            return Expectation(self._answer("R3", "invalid_field", rid, player), message_names=bad)
        if abs(time.time() - event["timestamp"]) > FRESHNESS_SECONDS:
            return Expectation(self._answer("R2", "stale_request", rid))
        identity = _identity(event)
        if rid in self.replies:
            first, first_identity = self.replies[rid]
            if identity != first_identity:
                # Contract 1 [1.1]: another event under a used request_id is refused, and
                # nothing is processed or remembered.
                player = self.players.get(event["player_id"])
                return Expectation(self._answer("R3", "idempotency_conflict", rid, player))
            # From Redis or, when Redis forgot it, from Postgres: the first answer, exactly (its
            # balance included).
            return Expectation(first, exact=True)
        apply = getattr(self, "_" + event["event"])
        expected: Answer = apply(event, actual)
        self.replies[rid] = (actual, identity)
        return Expectation(expected)

    def _invalid_field(self, e: dict[str, Any]) -> str | None:
        """The field a parser refuses, for the invalid values the test sends (amounts and
        kinds only)."""
        amount = e.get("amount")
        if amount is not None:  # declared before the kind: named first
            if e["event"] == "bet" and isinstance(e.get("free_round_id"), str):
                if amount != 0:  # a free round stakes nothing
                    return "amount"
            elif not (0 if e["event"] in ("result", "result_change", "cancel") else 1) <= amount:
                return "amount"
            elif amount > MAX_AMOUNT:
                return "amount"
        if e.get("kind", "win") not in KINDS:
            return "kind"
        return None

    def _bet(self, e: dict[str, Any], actual: Answer) -> Answer:
        rid, txn = e["request_id"], e["transaction_id"]
        player = self.players.get(e["player_id"])
        if player is None:
            return self._answer("R3", "player_not_found", rid)
        stop = self._opened(e, "bet", player, e["amount"], None)
        # A cancelled transaction_id, unless the bet is refused as a conflict or a mismatch
        # first (tests/seamless/test_edges.py: "a changed resend is still a conflict first").
        if txn in self.cancel_of and (stop is None or stop["code"] == "R0"):
            return self._answer("R1", "transaction_cancelled", rid, player)
        if stop is not None:
            return stop
        problem = self._session_problem(e["session_token"], player.player_id)
        if problem is not None:
            return self._answer("R2", problem, rid, player)
        if player.status != "active":
            return self._answer("R1", "player_blocked", rid, player)
        round_ = self.rounds.get((player.player_id, e["round_id"]))
        if round_ is not None and round_.closed:
            return self._answer("R1", "round_closed", rid, player)
        grant_id = e.get("free_round_id")
        if grant_id is not None:
            grant = self.grants.get(grant_id)
            if grant is None or not grant.usable(player.player_id, self.provider, e["game_id"]):
                return self._answer("R1", "free_round_unavailable", rid, player)
            grant.used += 1
        else:
            if self._limit_exceeded(player, e["amount"]):
                return self._answer("R1", "limit_exceeded", rid, player)
            if player.balance < e["amount"]:
                return self._answer("R4", "insufficient_funds", rid, player)
        tx = self._post(e, "bet", player, e["amount"], None, -e["amount"], actual)
        round_ = self.rounds.setdefault((player.player_id, e["round_id"]), Round())
        round_.bets += 1
        round_.free_bets += grant_id is not None
        return self._answer("R0", "ok", rid, player, tx)

    def _cancel(self, e: dict[str, Any], actual: Answer) -> Answer:
        rid, ref = e["request_id"], e["ref_transaction_id"]
        player = self.players.get(e["player_id"])
        if player is None:
            return self._answer("R3", "player_not_found", rid)
        amount = e.get("amount")
        stop = self._opened(e, "cancel", player, amount, ref)
        if stop is not None:
            return stop
        prior = self.postings[self.cancel_of[ref]] if ref in self.cancel_of else None
        bet = self.postings.get(ref)
        if bet is None:
            if prior is not None:
                if prior.player_id != player.player_id:
                    return self._answer("R1", "transaction_not_found", rid, player)
                return self._answer("R0", "ok", rid, player, prior.wallet_id, duplicate=True)
            # Never seen: a tombstone, so that a late bet is refused and the round counts a
            # cancelled bet.
            tx = self._post(e, "cancel", player, amount, ref, 0, actual)
            self.cancel_of[ref] = e["transaction_id"]
            round_ = self.rounds.setdefault((player.player_id, e["round_id"]), Round())
            round_.bets += 1
            round_.cancelled += 1
            return self._answer("R0", "ok", rid, player, tx)
        if bet.kind != "bet" or bet.player_id != player.player_id or bet.round_id != e["round_id"]:
            return self._answer("R1", "transaction_not_found", rid, player)
        if amount is not None and amount != bet.amount:
            return self._answer("R3", "invalid_field", rid, player)
        if prior is not None:
            return self._answer("R0", "ok", rid, player, prior.wallet_id, duplicate=True)
        round_ = self.rounds[(player.player_id, e["round_id"])]
        if round_.results > 0 or round_.settled == "close":
            return self._answer("R1", "bet_already_settled", rid, player)
        assert bet.amount is not None
        tx = self._post(e, "cancel", player, amount, ref, bet.amount, actual)
        self.cancel_of[ref] = e["transaction_id"]
        round_.cancelled += 1
        if bet.free_round is not None:  # the round goes back to its grant
            grant = self.grants[str(bet.free_round)]
            grant.used = max(grant.used - 1, 0)
        return self._answer("R0", "ok", rid, player, tx)

    def _result(self, e: dict[str, Any], actual: Answer) -> Answer:
        rid = e["request_id"]
        player = self.players.get(e["player_id"])
        if player is None:
            return self._answer("R3", "player_not_found", rid)
        stop = self._opened(e, "result", player, e["amount"], None)
        if stop is not None:
            return stop
        round_ = self.rounds.get((player.player_id, e["round_id"]))
        if round_ is not None and round_.closed:
            return self._answer("R1", "round_closed", rid, player)
        if round_ is not None and round_.bets > 0 and round_.bets == round_.cancelled:
            return self._answer("R1", "round_cancelled", rid, player)
        kind = e.get("kind") or "win"
        if kind == "win" and round_ is not None and round_.free_bets > 0:
            kind = "free_round"
        # Whatever the player's status or session: the stake was taken when it was allowed.
        tx = self._post(e, "result", player, e["amount"], None, e["amount"], actual, kind)
        round_ = self.rounds.setdefault((player.player_id, e["round_id"]), Round())
        round_.results += 1
        round_.closed = e.get("round_closed", True)
        return self._answer("R0", "ok", rid, player, tx)

    def _result_change(self, e: dict[str, Any], actual: Answer) -> Answer:
        rid, ref = e["request_id"], e["ref_transaction_id"]
        player = self.players.get(e["player_id"])
        if player is None:
            return self._answer("R3", "player_not_found", rid)
        stop = self._opened(e, "result_change", player, e["amount"], ref)
        if stop is not None:
            return stop
        result = self.postings.get(ref)
        if (
            result is None
            or result.kind != "result"
            or result.player_id != player.player_id
            or result.round_id != e["round_id"]
        ):
            return self._answer("R1", "transaction_not_found", rid, player)
        assert result.amount is not None
        diff = e["amount"] - self.totals.get(ref, result.amount)
        if player.balance + diff < 0:
            return self._answer("R4", "insufficient_funds", rid, player)
        kind = result.result_kind or "win"
        tx = self._post(e, "result_change", player, e["amount"], ref, diff, actual, kind)
        self.totals[ref] = e["amount"]
        return self._answer("R0", "ok", rid, player, tx)

    def _promo_win(self, e: dict[str, Any], actual: Answer) -> Answer:
        rid = e["request_id"]
        player = self.players.get(e["player_id"])
        if player is None:
            return self._answer("R3", "player_not_found", rid)
        stop = self._opened(e, "promo_win", player, e["amount"], e["promo_id"])
        if stop is not None:
            return stop
        # Whatever the player's status or session, and outside any round.
        tx = self._post(e, "promo_win", player, e["amount"], e["promo_id"], e["amount"], actual)
        return self._answer("R0", "ok", rid, player, tx)

    def _end_round(self, e: dict[str, Any], actual: Answer) -> Answer:
        rid = e["request_id"]
        player = self.players.get(e["player_id"])
        if player is None:
            return self._answer("R3", "player_not_found", rid)
        round_ = self.rounds.get((player.player_id, e["round_id"]))
        if round_ is not None:  # closed already, or unknown: nothing changes
            round_.closed = True
        return self._answer("R0", "ok", rid, player)

    def _login(self, e: dict[str, Any], actual: Answer) -> Answer:
        rid = e["request_id"]
        player = self.players.get(e["player_id"])
        if player is None:
            return self._answer("R2", "invalid_session", rid)
        problem = self._session_problem(e["session_token"], player.player_id)
        if problem is not None:
            return self._answer("R2", problem, rid, player)
        if player.status != "active":
            return self._answer("R1", "player_blocked", rid, player)
        return self._answer("R0", "ok", rid, player)

    def _logout(self, e: dict[str, Any], actual: Answer) -> Answer:
        rid = e["request_id"]
        player = self.players.get(e["player_id"])
        if player is None:
            return self._answer("R3", "player_not_found", rid)
        session = self.sessions.get(e["session_token"])
        if (
            session is None
            or session.player_id != player.player_id
            or session.provider != self.provider
        ):
            return self._answer("R2", "invalid_session", rid, player)
        session.ended = True  # ending an ended session is fine
        return self._answer("R0", "ok", rid, player)

    def _balance(self, e: dict[str, Any], actual: Answer) -> Answer:
        rid = e["request_id"]
        player = self.players.get(e["player_id"])
        if player is None:
            return self._answer("R3", "player_not_found", rid)
        return self._answer("R0", "ok", rid, player)  # a session_token is not checked

    # --- the rules' building blocks -------------------------------------------------------

    def _opened(
        self, e: dict[str, Any], kind: str, player: Player, amount: int | None, ref: str | None
    ) -> Answer | None:
        """Idempotency by transaction_id, then the currency: the answer when the event ends
        here, None when it goes on."""
        rid = e["request_id"]
        earlier = self.postings.get(e["transaction_id"])
        if earlier is not None:
            sent_kind = e.get("kind") or "win"
            same = (
                earlier.kind == kind
                and earlier.player_id == player.player_id
                and earlier.round_id == e.get("round_id")
                and earlier.amount == amount
                and earlier.currency == e["currency"]
                and earlier.ref == ref
                and earlier.free_round == _grant_number(e.get("free_round_id"))
                and (
                    kind != "result"
                    or earlier.result_kind == sent_kind
                    or (sent_kind == "win" and earlier.result_kind == "free_round")
                )
            )
            if same:
                return self._answer("R0", "ok", rid, player, earlier.wallet_id, duplicate=True)
            return self._answer("R3", "idempotency_conflict", rid, player)
        if e["currency"] != player.currency:
            return self._answer("R3", "currency_mismatch", rid, player)
        return None

    def _session_problem(self, token: str, player_id: str) -> str | None:
        session = self.sessions.get(token)
        if (
            session is None
            or session.player_id != player_id
            or session.provider != self.provider
            or session.ended
        ):
            return "invalid_session"
        return None

    def limit_room(self, player_id: str) -> int | None:
        """How much the player may still stake under their wager and loss limits (None: no
        limit). A bet above it is refused, as it would pass a limit if lost entirely. Every
        posting of a test falls in the current day, week and month, so the period does not
        matter here."""
        wagered = sum(
            p.amount or 0
            for p in self.postings.values()
            if p.kind == "bet" and p.player_id == player_id and p.txn not in self.cancel_of
        )
        won = sum(
            p.delta
            for p in self.postings.values()
            if p.kind in ("result", "result_change") and p.player_id == player_id
        )
        rooms = [
            limit - max(wagered - won if kind == "loss" else wagered, 0)
            for (kind, _period), limit in self.players[player_id].limits.items()
            if kind in ("wager", "loss")
        ]
        return min(rooms) if rooms else None

    def _limit_exceeded(self, player: Player, amount: int) -> bool:
        room = self.limit_room(player.player_id)
        return room is not None and amount > room

    def _post(
        self,
        e: dict[str, Any],
        kind: str,
        player: Player,
        amount: int | None,
        ref: str | None,
        delta: int,
        actual: Answer,
        result_kind: str | None = None,
    ) -> int | str:
        """Record a new posting; its wallet id is the actual answer's when that is a fresh one
        (otherwise NOT_A_NEW_ID, which no answer matches)."""
        offered = actual.get("transaction_id")
        wallet_id = None
        if isinstance(offered, str) and offered.isdigit() and int(offered) not in self.wallet_ids:
            wallet_id = int(offered)
            self.wallet_ids.add(wallet_id)
        player.balance += delta
        self.postings[e["transaction_id"]] = Posting(
            wallet_id=wallet_id if wallet_id is not None else -1,
            txn=e["transaction_id"],
            kind=kind,
            player_id=player.player_id,
            round_id=e.get("round_id"),
            amount=amount,
            currency=player.currency,
            ref=ref,
            delta=delta,
            result_kind=result_kind,
            free_round=_grant_number(e.get("free_round_id")) if kind == "bet" else None,
        )
        return wallet_id if wallet_id is not None else NOT_A_NEW_ID

    def _answer(
        self,
        code: str,
        reason: str,
        request_id: str,
        player: Player | None = None,
        tx: int | str | None = None,
        *,
        duplicate: bool = False,
    ) -> Answer:
        """The response object without its message (docs/seamless.md, Response object)."""
        answer: Answer = {"code": code, "reason": reason, "request_id": request_id}
        if player is not None and code != "R2":  # plain R2 answers never carry money
            answer["player_id"] = player.player_id
            answer["balance"] = player.balance
            answer["currency"] = player.currency
        if code == "R0" and tx is not None:
            answer["transaction_id"] = str(tx)
            if duplicate:
                answer["duplicate"] = True
        return answer


def _grant_number(free_round_id: str | None) -> int | None:
    """A grant id as the ledger keeps it: the wallet's ids are digits; any other names none."""
    if free_round_id is None:
        return None
    canonical = re.fullmatch(r"[1-9][0-9]{0,17}", free_round_id)
    return int(free_round_id) if canonical else -1


def _identity(event: dict[str, Any]) -> dict[str, Any]:
    """An event as the replay rule compares it: every field but the timestamp (a result's
    ``kind: win`` is the default, and a null optional field an absent one)."""
    return {
        k: v
        for k, v in event.items()
        if k != "timestamp" and v is not None and not (k == "kind" and v == "win")
    }


def serial_order(
    wallet: Wallet, events: list[dict[str, Any]], actual: list[Answer]
) -> Wallet | None:
    """The model after some serial order of ``events`` that explains every one of the ``actual``
    answers (``actual[i]`` answers ``events[i]``), or None when no order does.

    A depth-first search that drops an order as soon as one answer does not fit, so it stays
    small for the few deliveries of a burst; each branch works on its own copy of the model."""

    def search(current: Wallet, remaining: tuple[int, ...]) -> Wallet | None:
        if not remaining:
            return current
        for i in remaining:
            trial = copy.deepcopy(current)
            if trial.deliver(events[i], actual[i]).matches(actual[i]):
                found = search(trial, tuple(j for j in remaining if j != i))
                if found is not None:
                    return found
        return None

    return search(wallet, tuple(range(len(events))))
