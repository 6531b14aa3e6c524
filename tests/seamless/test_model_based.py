"""Model-based test of the seamless contract: random sequences of events against the real webhook.

A Hypothesis ``RuleBasedStateMachine`` sends every kind of event through the real HTTP endpoint (the
app over httpx's ASGI transport, on the session's real Postgres and Redis) and compares each answer,
field by field, with :class:`tests.seamless.model.Wallet`, a small in-memory model written from
docs/seamless.md. The sequences mix bets of random amounts (beyond the balance, exactly the balance,
zero, negative, at a limit), cancels of known and never-seen bets, results that close a round or
leave it open, corrections, logins and logouts with live, ended, other players' and other providers'
tokens, an unknown player, wrong currencies, stale timestamps, replays of identical bytes, a
request_id reused for other content, retries under a new request_id, operator changes of status,
limits and balance, whole rounds as a game plays them, and concurrent bursts.

One rule. Each step is one action drawn with fixed weights (``ACTIONS``). Hypothesis switches
rules off at random in each example (swarm testing); with separate rules, a run of a few dozen
examples left most examples without bets or without cancels and missed most seeded bugs.

How the async app is driven. Hypothesis runs state machines synchronously, so this test is a
plain function and the app runs in an event loop of its own: an anyio blocking portal (the loop
in a worker thread, as Starlette's TestClient does it) holding an app, a Postgres pool and Redis
clients made for it by ``start_app``. Each step calls ``portal.call(coroutine_function, ...)``.
The pytest-asyncio session loop and its app are left alone; the two apps share only the servers.

Bursts. Two or three events of any kind and player go out at once with ``asyncio.gather``, some also
under a second request_id, some twice in identical bytes. The check is linearisability rather than a
restriction to commutative sets: some serial order of the distinct deliveries must explain every
answer exactly (codes, balances, wallet ids, duplicate flags), and the model goes on from that order
(``tests.seamless.model.serial_order``, a search over at most six deliveries). A copy in identical
bytes must get its twin's answer or R1 ``request_in_progress``. Comparing only a final balance would
let wrong answers through, and commutative sets would leave out the races that matter, such as two
players naming one transaction id.

Invariants after every step, read in one statement (one snapshot): each player's balance is the
model's; the provider's postings (wallet id, transaction id, kind, player, round, amount,
currency, reference, delta) are exactly the model's, so a refusal that posted anything, even a
zero amount, shows; the rules of the ledger check hold for this example's players (balanced
postings, balance equal to the sum of entries, no negative balance, delta equal to the player's
entry, two entries per money movement), and the provider's clearing accounts hold minus the
players' deltas. The whole-ledger check (``GET /v1/ledger/check``) runs once at the end, as it
reads every entry of the session.

Reproducing a failure. Hypothesis shrinks the example and prints its steps in the test's own
names (``state.step(action=Send(spec=Spec(event='bet', player='p0', ...)))``; players p0 and
p1 in EUR, p2 in USD, ghost unknown) and a ``@reproduce_failure`` blob, which can be put on
``SeamlessMachine``. The example is saved in ``.hypothesis/examples`` in the project (ignored by
git), and the next ``.venv/bin/pytest tests/seamless/test_model_based.py`` replays it first. Longer
searches: ``WALLET_MODEL_EXAMPLES=500``. A failure takes up to five minutes more, to shrink.

Limits count postings in UTC calendar windows; the model takes every posting of a run to fall in
the current day, so a run across midnight UTC may see a limit differently. Session expiry is
tested in test_protocol.py, not here.
"""

from __future__ import annotations

import asyncio
import copy
import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
import httpx
import hypothesis
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from redis.asyncio import Redis

from app import db
from app.client import ProviderClient, new_id, seal_event
from app.config import Settings
from tests.fixtures.app import Operator, start_app
from tests.seamless.model import Answer, Expectation, Grant, Posting, Wallet, serial_order

ROOT = Path(__file__).resolve().parents[2]

MACHINE_SETTINGS = hypothesis.settings(
    # 40 examples take about 14 s on an idle 2-core machine, and find each bug seeded in the
    # model's rules in most runs; 25 missed some in most runs.
    max_examples=int(os.environ.get("WALLET_MODEL_EXAMPLES", "40")),
    stateful_step_count=30,
    deadline=None,
    database=DirectoryBasedExampleDatabase(ROOT / ".hypothesis" / "examples"),
    print_blob=True,
    # Each step is a real HTTP round trip and a ledger read; that is the point, not a slow draw.
    suppress_health_check=[HealthCheck.too_slow],
)

# --- what the rules draw: events in the test's own names --------------------------------------

CURRENCIES = {"p0": "EUR", "p1": "EUR", "p2": "USD", "ghost": "EUR"}
OTHER_PLAYER = {"p0": "p1", "p1": "p2", "p2": "p0"}


@dataclass(frozen=True)
class Spec:
    """One event in the test's names; :meth:`SeamlessMachine.event_of` makes it a wire event.

    ``token``: own (the player's latest session), first (their first, maybe ended), other
    (another player's), elsewhere (the player's session at another provider), bogus (never
    issued). ``ref="@"``: the player's latest bet (cancel) or result (result_change), as the
    model knows it. ``round="@"``: the referenced posting's round, or else the round of the
    player's latest bet. ``amount="bet"`` on a cancel: the referenced bet's amount. Without them
    most references would miss, and a cancel would rarely meet its bet."""

    event: str
    player: str
    token: str | None = None
    txn: str | None = None
    ref: str | None = None
    round: str | None = None
    game: str | None = None
    amount: int | str | None = None
    round_closed: bool | None = None
    wrong_currency: bool = False
    skew: int = 0  # seconds added to the timestamp: 400 makes the event stale
    kind: str | None = None  # a result's kind
    grant: str | None = None  # a bet's free-round grant, by its name in GRANTS (or "bogus")
    promo: str | None = None

    def __repr__(self) -> str:
        shown = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if getattr(self, f.name) is not None
            and getattr(self, f.name) != f.default
            or f.name in ("event", "player")
        ]
        return f"Spec({', '.join(shown)})"


PLAYERS = st.sampled_from(["p0"] * 6 + ["p1"] * 2 + ["p2", "ghost"])
REAL_PLAYERS = st.sampled_from(["p0", "p1", "p2"])
TOKENS = st.sampled_from(["own"] * 8 + ["first", "other", "elsewhere", "bogus"])
BET_ROUNDS = st.sampled_from(["r0", "r1", "r2", "r3", "@"])
ROUNDS = st.sampled_from(["@", "@", "r0", "r1", "r2"])
BET_REFS = st.sampled_from(["@", "@", "@", "b0", "b1", "b2", "b3", "w0"])
RESULT_REFS = st.sampled_from(["@", "@", "@", "w0", "w1", "w2", "w3", "b0"])
GAMES = st.sampled_from(["g1", "g2"])  # not part of a transaction's identity
WRONG_CURRENCY = st.sampled_from([False] * 11 + [True])
STALE = st.sampled_from([-400, 400])


def ids(prefix: str, count: int, *foreign: str) -> st.SearchStrategy[str]:
    """Few transaction ids, so that repeats, conflicts and references happen; ``foreign`` ids
    of another event kind make cross-kind conflicts."""
    return st.sampled_from([f"{prefix}{i}" for i in range(count)] + list(foreign))


def rarely(usual: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` eleven draws in twelve, else ``rare`` (shrinks towards usual)."""
    return st.integers(0, 11).flatmap(lambda n: rare if n == 11 else usual)


def sometimes_invalid(
    valid: st.SearchStrategy[Any], invalid: st.SearchStrategy[Any], *, valid_only: bool
) -> st.SearchStrategy[Any]:
    return valid if valid_only else rarely(valid, invalid)


def bet_specs(*, valid_only: bool = False) -> st.SearchStrategy[Spec]:
    return st.builds(
        Spec,
        event=st.just("bet"),
        player=PLAYERS,
        token=TOKENS,
        txn=ids("b", 6, "w0"),
        round=BET_ROUNDS,
        game=GAMES,
        amount=sometimes_invalid(
            st.integers(1, 1_500), st.sampled_from([0, -1]), valid_only=valid_only
        ),
        wrong_currency=WRONG_CURRENCY,
        skew=sometimes_invalid(st.just(0), STALE, valid_only=valid_only),
    )


def cancel_specs(*, valid_only: bool = False) -> st.SearchStrategy[Spec]:
    return st.builds(
        Spec,
        event=st.just("cancel"),
        player=PLAYERS,
        txn=ids("c", 4, "b0"),
        ref=BET_REFS,
        round=ROUNDS,
        amount=sometimes_invalid(
            st.one_of(st.none(), st.just("bet"), st.integers(1, 1_500)),
            st.just(0),
            valid_only=valid_only,
        ),
        wrong_currency=WRONG_CURRENCY,
    )


def result_specs(*, valid_only: bool = False) -> st.SearchStrategy[Spec]:
    return st.builds(
        Spec,
        event=st.just("result"),
        player=PLAYERS,
        txn=ids("w", 6, "b0"),
        round=ROUNDS,
        game=GAMES,
        amount=sometimes_invalid(st.integers(0, 2_000), st.just(-1), valid_only=valid_only),
        round_closed=st.sampled_from([None, True, False]),
        wrong_currency=WRONG_CURRENCY,
        kind=sometimes_invalid(KINDS, st.just("prize"), valid_only=valid_only),
    )


def change_specs(*, valid_only: bool = False) -> st.SearchStrategy[Spec]:
    return st.builds(
        Spec,
        event=st.just("result_change"),
        player=PLAYERS,
        txn=ids("x", 4, "w0"),
        ref=RESULT_REFS,
        round=ROUNDS,
        # A correction to zero is the largest take-back, so it comes often.
        amount=sometimes_invalid(
            st.one_of(st.just(0), st.integers(0, 3_000), st.integers(0, 3_000)),
            st.just(-1),
            valid_only=valid_only,
        ),
        wrong_currency=WRONG_CURRENCY,
    )


# The free-round grants of an example, made at its start: name -> (owner, game, rounds, what
# else). "mine": the provider's; "elsewhere": another provider's; "expired", "withdrawn".
GRANTS = {
    "a": ("p0", "g1", 2, "mine"),
    "b": ("p1", "g1", 1, "mine"),
    "c": ("p0", "g2", 1, "mine"),
    "e": ("p0", "g1", 3, "expired"),
    "w": ("p1", "g1", 3, "withdrawn"),
    "f": ("p0", "g1", 3, "elsewhere"),
}
FREE_GRANT = {"p0": "a", "p1": "b", "p2": "a"}  # p2 has none: p0's is refused
KINDS = st.sampled_from([None, None, None, "win", "jackpot", "bonus", "free_round"])


def free_bet_specs(*, valid_only: bool = False) -> st.SearchStrategy[Spec]:
    """Bets of free rounds: grants of the player or not, of the game or not, used up, gone."""
    return st.builds(
        Spec,
        event=st.just("bet"),
        player=PLAYERS,
        token=TOKENS,
        txn=ids("fb", 5, "b0"),
        round=BET_ROUNDS,
        game=GAMES,
        amount=sometimes_invalid(st.just(0), st.just(5), valid_only=valid_only),
        grant=st.sampled_from(["a", "a", "a", "b", "c", "e", "w", "f", "bogus"]),
    )


def promo_specs(*, valid_only: bool = False) -> st.SearchStrategy[Spec]:
    return st.builds(
        Spec,
        event=st.just("promo_win"),
        player=PLAYERS,
        txn=ids("pw", 3, "w0"),
        promo=st.sampled_from(["cup-1", "drop-2"]),
        round=st.sampled_from([None, None, "r0"]),
        amount=sometimes_invalid(st.integers(1, 1_000), st.just(0), valid_only=valid_only),
        wrong_currency=WRONG_CURRENCY,
    )


def end_round_specs(*, valid_only: bool = False) -> st.SearchStrategy[Spec]:
    return st.builds(Spec, event=st.just("end_round"), player=PLAYERS, round=ROUNDS)


def session_specs(*, valid_only: bool = False) -> st.SearchStrategy[Spec]:
    # A session_token on a balance is accepted and not checked.
    return st.builds(
        Spec,
        event=st.sampled_from(["login", "balance", "logout"]),
        player=PLAYERS,
        token=TOKENS,
        skew=sometimes_invalid(st.just(0), STALE, valid_only=valid_only),
    )


def any_specs(*, valid_only: bool = False) -> st.SearchStrategy[Spec]:
    return st.one_of(
        bet_specs(valid_only=valid_only),
        bet_specs(valid_only=valid_only),
        cancel_specs(valid_only=valid_only),
        result_specs(valid_only=valid_only),
        change_specs(valid_only=valid_only),
        session_specs(valid_only=valid_only),
        free_bet_specs(valid_only=valid_only),
        promo_specs(valid_only=valid_only),
        end_round_specs(valid_only=valid_only),
    )


@dataclass(frozen=True)
class Send:
    """Deliver one event."""

    spec: Spec


@dataclass(frozen=True)
class PlayRound:
    """A round as a game plays it, for one player with their latest session and fresh
    transaction ids: a login; bets, the first maybe cancelled at once (and retried by the
    provider, which must stay refused); maybe a result; maybe a bet elsewhere of all but
    ``spend_all_but`` of the balance; corrections of the result; a cancel of the last bet after
    the result. Single events reach these combinations too, but too rarely. ``round="new"``: a
    round id of its own.

    Amounts may name a boundary the model knows, which random numbers would almost never hit:
    a stake of ``"all"`` the balance or ``"room"`` left under the limits (``"+1"``: one more); a
    correction ``"to_zero"`` that takes the balance exactly to zero, ``"below_zero"`` one more."""

    player: str
    round: str
    bets: tuple[int | str, ...]
    cancel_first: bool
    retry_cancelled: bool
    result: int | None
    round_closed: bool
    spend_all_but: int | None
    changes: tuple[int | str, ...]
    cancel_last: bool
    free: bool = False  # the bets are of the player's free-round grant (FREE_GRANT)


@dataclass(frozen=True)
class Replay:
    """Resend the identical bytes of a delivery ``back`` deliveries ago (0: the latest)."""

    back: int


@dataclass(frozen=True)
class Retry:
    """Send a money event of ``back`` money deliveries ago under a new request_id and a fresh
    timestamp."""

    back: int


@dataclass(frozen=True)
class ReuseRequestId:
    """Send other content under the request_id of a delivery ``back`` deliveries ago."""

    back: int
    spec: Spec


@dataclass(frozen=True)
class ForgetRedis:
    """Redis loses everything it held, as a restart of a server that keeps nothing on disk
    does: replays must still get their first answer (contract 1 [1.1])."""


@dataclass(frozen=True)
class Burst:
    """Deliveries at once: each item's event, plus (first flag) a copy under a new request_id
    and (second flag) a copy in identical bytes."""

    items: tuple[tuple[Spec, bool, bool], ...]


@dataclass(frozen=True)
class SetStatus:
    player: str
    status: str


@dataclass(frozen=True)
class SetLimit:
    player: str
    kind: str
    period: str
    amount: int | None  # None: remove


@dataclass(frozen=True)
class Fund:
    player: str
    amount: int


@dataclass(frozen=True)
class NewSession:
    player: str


@dataclass(frozen=True)
class Settle:
    """The operator settles the round of the player's latest bet as stale (``refund`` or
    ``close``); a round not open is refused (400), which the model predicts too."""

    player: str
    action: str


Action = (
    Send
    | PlayRound
    | Replay
    | Retry
    | ReuseRequestId
    | ForgetRedis
    | Burst
    | SetStatus
    | SetLimit
    | Fund
    | NewSession
    | Settle
)

BACK = st.one_of(st.integers(0, 3), st.integers(0, 40))  # mostly a recent delivery
# One stake in four, and one correction in two, at a boundary (see PlayRound).
ROUND_STAKES = st.one_of(
    st.integers(1, 1_500),
    st.integers(1, 1_500),
    st.integers(1, 1_500),
    st.sampled_from(["all", "all+1", "room", "room+1"]),
)
ROUND_CORRECTIONS = st.one_of(st.integers(0, 3_000), st.sampled_from(["to_zero", "below_zero"]))

# Weights of the actions: money events first, then resends, bursts and the back office.
ACTIONS: dict[str, tuple[int, st.SearchStrategy[Any]]] = {
    "bet": (4, st.builds(Send, bet_specs())),
    "cancel": (2, st.builds(Send, cancel_specs())),
    "result": (2, st.builds(Send, result_specs())),
    "result_change": (2, st.builds(Send, change_specs())),
    "session": (2, st.builds(Send, session_specs())),
    "free_bet": (2, st.builds(Send, free_bet_specs())),
    "promo_win": (1, st.builds(Send, promo_specs())),
    "end_round": (1, st.builds(Send, end_round_specs())),
    "settle": (2, st.builds(Settle, REAL_PLAYERS, st.sampled_from(["refund", "close"]))),
    "round": (
        4,
        st.builds(
            PlayRound,
            player=REAL_PLAYERS,
            round=st.sampled_from(["new", "new", "new", "r0", "r1"]),
            bets=st.lists(ROUND_STAKES, min_size=1, max_size=3).map(tuple),
            cancel_first=st.booleans(),
            retry_cancelled=st.booleans(),
            result=st.one_of(st.none(), st.integers(0, 2_500), st.integers(0, 2_500)),
            round_closed=st.booleans(),
            spend_all_but=st.one_of(st.none(), st.integers(0, 300)),
            changes=st.lists(ROUND_CORRECTIONS, max_size=2).map(tuple),
            cancel_last=st.booleans(),
            free=st.sampled_from([False, False, True]),
        ),
    ),
    "replay": (1, st.builds(Replay, BACK)),
    "retry": (1, st.builds(Retry, BACK)),
    "reuse": (1, st.builds(ReuseRequestId, BACK, any_specs())),
    "forget": (1, st.just(ForgetRedis())),
    "burst": (
        2,
        st.builds(
            Burst,
            st.lists(
                st.tuples(any_specs(valid_only=True), st.booleans(), st.booleans()),
                min_size=2,
                max_size=3,
            ).map(tuple),
        ),
    ),
    "status": (
        1,
        st.builds(SetStatus, REAL_PLAYERS, st.sampled_from(["active", "blocked", "self_excluded"])),
    ),
    "limit": (
        2,
        st.builds(
            SetLimit,
            REAL_PLAYERS,
            st.sampled_from(["wager", "loss"]),
            st.sampled_from(["daily", "weekly", "monthly"]),
            st.sampled_from([None, 0, 50, 100, 500]) | st.integers(0, 3_000),
        ),
    ),
    "fund": (1, st.builds(Fund, REAL_PLAYERS, st.integers(1, 3_000))),
    "new_session": (1, st.builds(NewSession, REAL_PLAYERS)),
}
ACTION = st.sampled_from([name for name, (weight, _) in ACTIONS.items() for _ in range(weight)])
ANY_ACTION: st.SearchStrategy[Action] = ACTION.flatmap(lambda name: ACTIONS[name][1])


# --- the wallet under test, in its own event loop ---------------------------------------------


@dataclass(frozen=True)
class Services:
    http: httpx.AsyncClient
    operator: Operator
    pool: asyncpg.Pool
    elsewhere: str  # another provider, for sessions that are not this provider's
    redis: Redis  # the wallet's Redis, to make it forget


@asynccontextmanager
async def wallet_services(settings: Settings) -> AsyncIterator[Services]:
    async with AsyncExitStack() as stack:
        app = await start_app(settings, stack)
        http = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://wallet.test")
        )
        assert settings.database_url is not None
        pool = await db.create_pool(settings.database_url, min_size=1, max_size=2)
        stack.push_async_callback(pool.close)
        operator = Operator(http)
        elsewhere = await operator.provider()
        assert settings.redis_url is not None
        redis = Redis.from_url(settings.redis_url)
        stack.push_async_callback(redis.aclose)
        yield Services(http, operator, pool, elsewhere["code"], redis)


@dataclass(frozen=True)
class Sent:
    """A delivery already made, for replays, retries and reuse of its request_id."""

    event: dict[str, Any]
    body: bytes


# A free-round grant as the operator API makes one (written here directly: the grants' own API
# is tested in tests/operator/), used up by the example's bets.
GRANT = """
INSERT INTO free_rounds (player_id, provider, game_id, rounds, bet_value, currency, expires_at,
                         withdrawn_at)
VALUES ($1, $2, $3, $4, 10, $5,
        CASE WHEN $6 = 'expired' THEN now() - interval '1 second' ELSE now() + interval '1 day' END,
        CASE WHEN $6 = 'withdrawn' THEN now() END)
RETURNING id
"""

# An open round made old enough to be stale, as the model has no clock.
AGE_ROUND = """
UPDATE rounds SET created_at = now() - interval '30 days'
 WHERE provider = $1 AND player_id = $2 AND round_id = $3
"""

# The ledger as it concerns one example (its players and its provider), in one statement and so
# one snapshot. The problems are the rules of `wallet ledger check` (sql/queries/ledger.sql) for
# these players' postings only: the whole-ledger queries read every entry of the session, too
# slow for every step.
LEDGER_SNAPSHOT = """
WITH mine AS (
    SELECT p.player_id, p.account_id, a.balance
      FROM players p JOIN accounts a ON a.id = p.account_id
     WHERE p.player_id = ANY($1::text[])
), txs AS (
    SELECT id, player_id, delta FROM ledger_transactions WHERE player_id = ANY($1::text[])
), clearing AS (
    SELECT a.currency, coalesce(sum(e.amount), 0) AS total
      FROM accounts a LEFT JOIN entries e ON e.account_id = a.id
     WHERE a.kind = 'provider' AND a.owner = $2
     GROUP BY a.currency
), problems AS (
    SELECT 'unbalanced_transaction' AS problem, e.transaction_id::text AS detail
      FROM entries e JOIN accounts a ON a.id = e.account_id
     WHERE e.transaction_id IN (SELECT id FROM txs)
     GROUP BY e.transaction_id, a.currency
    HAVING sum(e.amount) <> 0
    UNION ALL
    SELECT 'player_balance_mismatch', m.player_id FROM mine m
     WHERE m.balance <> (SELECT coalesce(sum(e.amount), 0) FROM entries e
                          WHERE e.account_id = m.account_id)
    UNION ALL
    SELECT 'negative_balance', m.player_id FROM mine m WHERE m.balance < 0
    UNION ALL
    SELECT 'transaction_delta_mismatch', t.id::text
      FROM txs t JOIN mine m ON m.player_id = t.player_id
      LEFT JOIN entries e ON e.transaction_id = t.id AND e.account_id = m.account_id
     WHERE t.delta <> coalesce(e.amount, 0)
    UNION ALL
    SELECT 'orphan_entry', e.id::text FROM entries e
     WHERE e.transaction_id IN (SELECT id FROM txs)
       AND NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = e.account_id)
    UNION ALL
    SELECT 'entry_count', t.id::text FROM txs t
     WHERE (SELECT count(*) FROM entries e WHERE e.transaction_id = t.id)
           <> CASE WHEN t.delta = 0 THEN 0 ELSE 2 END
)
SELECT
    (SELECT jsonb_object_agg(player_id, balance) FROM mine) AS balances,
    (SELECT coalesce(jsonb_agg(jsonb_build_array(
                id, external_id, kind, player_id, round_id, amount, currency,
                ref_external_id, delta, result_kind, free_round_id)), '[]')
       FROM ledger_transactions WHERE source = $2) AS postings,
    (SELECT coalesce(jsonb_object_agg(currency, total), '{}') FROM clearing) AS clearing,
    (SELECT coalesce(jsonb_agg(jsonb_build_array(problem, detail)), '[]') FROM problems)
        AS problems
"""


class SeamlessMachine(RuleBasedStateMachine):
    """One example: a fresh provider and three players, then random deliveries and operator
    actions, each answer compared with the model and the ledger checked after each step."""

    portal: ClassVar[BlockingPortal]
    services: ClassVar[Services]

    def __init__(self) -> None:
        super().__init__()
        self.wallet = Wallet("")
        self.client: ProviderClient | None = None
        self.ids: dict[str, str] = {}  # test name -> player_id
        self.tokens: dict[str, list[str]] = {}  # test name -> sessions here, oldest first
        self.elsewhere: dict[str, str] = {}  # test name -> a session at the other provider,
        # issued when first needed: most examples never use one
        self.sent: list[Sent] = []  # every delivery, for replays and reused request_ids
        self.money: list[Sent] = []  # deliveries of money events, for retries
        self.rounds_played = 0
        self.grants: dict[str, str] = {}  # GRANTS name -> free_round_id

    # --- set-up -------------------------------------------------------------------------------

    @initialize(funds=st.tuples(*[st.integers(0, 3_000)] * 3))
    def open_table(self, funds: tuple[int, int, int]) -> None:
        self.portal.call(self._open_table, funds)

    async def _open_table(self, funds: tuple[int, int, int]) -> None:
        operator = self.services.operator
        provider = await operator.provider()
        code = provider["code"]
        self.client = ProviderClient(
            "http://wallet.test", code, provider["keys"][0]["key"], http=self.services.http
        )
        self.wallet = Wallet(code)
        for name, balance in zip(("p0", "p1", "p2"), funds, strict=True):
            player_id = await operator.player(balance, CURRENCIES[name])
            self.ids[name] = player_id
            self.wallet.add_player(player_id, CURRENCIES[name], balance)
            token = await operator.session(player_id, code)
            self.tokens[name] = [token]
            self.wallet.add_session(token, player_id, code)
        self.ids["ghost"] = "ghost-" + secrets.token_hex(5)
        for name, (owner, game, rounds, state) in GRANTS.items():
            provider = self.services.elsewhere if state == "elsewhere" else code
            player_id = self.ids[owner]
            grant_id = await self.services.pool.fetchval(
                GRANT, player_id, provider, game, rounds, CURRENCIES[owner], state
            )
            self.grants[name] = str(grant_id)
            self.wallet.add_grant(
                str(grant_id),
                Grant(
                    player_id, provider, game, rounds,
                    withdrawn=state == "withdrawn", expired=state == "expired",
                ),
            )  # fmt: skip

    # --- one step ---------------------------------------------------------------------------

    @rule(action=ANY_ACTION)
    def step(self, action: Action) -> None:
        """One action (a single rule: see the module's docstring)."""
        match action:
            case Send(spec):
                self.send(self.event_of(spec))
            case PlayRound():
                self.play_round(action)
            case Replay(back):
                # The first answer, unless the first delivery was refused before it was
                # remembered (stale, or invalid).
                if self.sent:
                    earlier = self.sent[-1 - back % len(self.sent)]
                    self.send(earlier.event, earlier.body)
            case Retry(back):
                # Processed again, and answered from the transaction_id's idempotency.
                if self.money:
                    earlier = self.money[-1 - back % len(self.money)]
                    now = int(time.time())
                    self.send({**earlier.event, "request_id": new_id("req"), "timestamp": now})
            case ReuseRequestId(back, spec):
                # A remembered request_id with other content is a conflict (contract 1 [1.1]).
                event = self.event_of(spec)
                if self.sent:
                    event["request_id"] = self.sent[-1 - back % len(self.sent)].event["request_id"]
                self.send(event)
            case ForgetRedis():
                # Keys only: the wallet's scripts stay loaded (a real restart is a fault test).
                # Replays are answered from Postgres then, exactly as before (the model
                # needs no change).
                self.portal.call(self.services.redis.flushdb)
            case Burst(items):
                self.burst(items)
            case SetStatus(player, status):
                player_id = self.ids[player]
                self.operate("PUT", f"/v1/players/{player_id}/status", {"status": status})
                self.wallet.players[player_id].status = status
            case SetLimit(player, kind, period, amount):
                player_id = self.ids[player]
                answer = self.operate(
                    "PUT", f"/v1/players/{player_id}/limits", {kind: {period: amount}}
                )
                in_force = self.wallet.set_limit(player_id, kind, period, amount)
                assert answer["limits"][kind].get(period) == in_force, answer
            case Fund(player, amount):
                player_id = self.ids[player]
                adjustment = self.portal.call(self.services.operator.fund, player_id, amount)
                self.wallet.players[player_id].balance += amount
                assert adjustment["balance_after"] == self.wallet.players[player_id].balance
            case Settle(player, action):
                self.settle(player, action)
            case NewSession(player):
                assert self.client is not None
                player_id, provider = self.ids[player], self.client.provider
                token = self.portal.call(self.services.operator.session, player_id, provider)
                self.tokens[player].append(token)
                self.wallet.add_session(token, player_id, provider)

    def play_round(self, play: PlayRound) -> None:
        assert self.client is not None
        self.rounds_played += 1
        prefix = f"p{self.rounds_played}"
        player_id, token = self.ids[play.player], self.tokens[play.player][-1]
        common = {
            "player_id": player_id,
            "round_id": prefix if play.round == "new" else play.round,
            "currency": CURRENCIES[play.player],
        }
        self.send(self.client.event("login", player_id=player_id, session_token=token))
        bets = []
        for i, amount in enumerate(play.bets):
            grant = {"free_round_id": self.grants[FREE_GRANT[play.player]]} if play.free else {}
            bet = self.client.event(
                "bet",
                **common,
                session_token=token,
                transaction_id=f"{prefix}-b{i}",
                game_id="g1",
                amount=0 if play.free else self.stake(player_id, amount),
                **grant,
            )
            self.send(bet)
            bets.append(bet)
            if i == 0 and play.cancel_first:
                # Before the next bets, so that they meet a limit after a refund.
                self.send(
                    self.client.event(
                        "cancel",
                        **common,
                        transaction_id=f"{prefix}-c0",
                        ref_transaction_id=bet["transaction_id"],
                        amount=bet["amount"],
                    )
                )
                if play.retry_cancelled:
                    now = int(time.time())
                    self.send({**bet, "request_id": new_id("req"), "timestamp": now})
        if play.result is None:
            return
        self.send(
            self.client.event(
                "result",
                **common,
                transaction_id=f"{prefix}-w",
                game_id="g1",
                amount=play.result,
                round_closed=play.round_closed,
            )
        )
        if play.spend_all_but is not None:
            balance = self.wallet.players[player_id].balance
            spend = {**common, "round_id": f"{prefix}-next", "game_id": "g1"}
            self.send(
                self.client.event(
                    "bet",
                    **spend,
                    session_token=token,
                    transaction_id=f"{prefix}-s",
                    amount=max(balance - play.spend_all_but, 1),
                )
            )
        for i, total in enumerate(play.changes):
            self.send(
                self.client.event(
                    "result_change",
                    **common,
                    transaction_id=f"{prefix}-x{i}",
                    ref_transaction_id=f"{prefix}-w",
                    amount=self.corrected_total(player_id, f"{prefix}-w", total),
                )
            )
        if play.cancel_last:
            self.send(
                self.client.event(
                    "cancel",
                    **common,
                    transaction_id=f"{prefix}-c1",
                    ref_transaction_id=bets[-1]["transaction_id"],
                )
            )

    def settle(self, player: str, action: str) -> None:
        """Settle the round of the player's latest bet through the operator API, as stale (its
        round is aged first: the model has no clock)."""
        assert self.client is not None
        player_id = self.ids[player]
        bets = [
            p for p in reversed(self.wallet.postings.values())
            if p.kind == "bet" and p.player_id == player_id and p.round_id is not None
        ]  # fmt: skip
        if not bets:
            return
        # Mostly a round that can be settled; otherwise the latest, to be refused.
        settleable = [
            b for b in bets
            if not (r := self.wallet.rounds[(player_id, str(b.round_id))]).closed
            and r.bets > r.cancelled
        ]  # fmt: skip
        bet = (settleable or bets)[0]
        assert bet.round_id is not None
        round_ = self.wallet.rounds[(player_id, bet.round_id)]
        self.portal.call(
            self.services.pool.execute, AGE_ROUND, self.client.provider, player_id, bet.round_id
        )
        path = f"/v1/rounds/{self.client.provider}/{player_id}/{bet.round_id}/settle"
        body = {"action": action, "reason": "stale in the model test"}
        # A round a result left open is closed, never refunded (its win is paid).
        open_ = not round_.closed and round_.bets > round_.cancelled
        open_ = open_ and not (action == "refund" and round_.results > 0)
        answer = self.portal.call(self.services.operator.settle, path, body, 200 if open_ else 400)
        if not open_:
            return
        refunds = self.wallet.settle(player_id, bet.round_id, action)
        posted = {
            entry["transaction_id"]: int(entry["wallet_transaction_id"])
            for entry in answer["timeline"]
            if entry.get("transaction_id") in refunds
        }
        assert sorted(posted) == sorted(refunds), answer
        self.wallet.settled_ids(posted)

    def stake(self, player_id: str, amount: int | str) -> int:
        if isinstance(amount, int):
            return amount
        balance = self.wallet.players[player_id].balance
        room = self.wallet.limit_room(player_id)
        base = room if amount.startswith("room") and room is not None else balance
        return max(base, 1) + int(amount.endswith("+1"))

    def corrected_total(self, player_id: str, result: str, total: int | str) -> int:
        if isinstance(total, int):
            return total
        posted = self.wallet.postings.get(result)
        current = self.wallet.totals.get(result, posted.amount or 0) if posted else 0
        balance = self.wallet.players[player_id].balance
        return max(current - balance - (total == "below_zero"), 0)

    def burst(self, items: tuple[tuple[Spec, bool, bool], ...]) -> None:
        events: list[dict[str, Any]] = []
        bodies: list[bytes] = []
        posts: list[tuple[int, bytes]] = []  # (delivery, body)
        for spec, new_request, same_bytes in items:
            event = self.event_of(spec)
            copies = [event, {**event, "request_id": new_id("req")}] if new_request else [event]
            for i, outgoing in enumerate(copies):
                body = self.seal(outgoing)
                events.append(outgoing)
                bodies.append(body)
                posts += [(len(events) - 1, body)] * (2 if same_bytes and i == 0 else 1)
        answers = self.portal.call(self._post_all, [body for _, body in posts])
        actual: list[Answer] = []
        for delivery, event in enumerate(events):
            got = [a for (d, _), a in zip(posts, answers, strict=True) if d == delivery]
            first = [a for a in got if a.get("reason") != "request_in_progress"]
            assert first and all(a == first[0] for a in first), (
                f"identical deliveries answered differently: {event} -> {got}"
            )
            for answer in got:
                if answer.get("reason") == "request_in_progress":
                    self.check_in_progress(event, answer)
            actual.append(first[0])
        wallet = serial_order(self.wallet, events, actual)
        assert wallet is not None, "no serial order explains the burst:\n" + "\n".join(
            in_sent_order(self.wallet, events, actual)
        )
        self.wallet = wallet
        for event, body in zip(events, bodies, strict=True):
            self.remember(Sent(event, body))

    async def _post_all(self, bodies: list[bytes]) -> list[Answer]:
        assert self.client is not None
        return list(await asyncio.gather(*(self.client.post(body) for body in bodies)))

    def operate(self, method: str, path: str, body: Any) -> Any:
        async def call() -> Any:
            return await self.services.operator.call(method, path, body, expect=200)

        return self.portal.call(call)

    # --- after every step ---------------------------------------------------------------------

    @invariant()
    def ledger_agrees_with_the_model(self) -> None:
        self.portal.call(self._check_ledger)

    async def _check_ledger(self) -> None:
        players = [self.ids[name] for name in ("p0", "p1", "p2")]
        row = await self.services.pool.fetchrow(LEDGER_SNAPSHOT, players, self.wallet.provider)
        assert row["balances"] == {p: self.wallet.players[p].balance for p in players}
        # The SQL array lists the columns in the order of Posting's fields.
        assert {Posting(*values) for values in row["postings"]} == set(
            self.wallet.postings.values()
        )
        clearing: dict[str, int] = {}
        for posting in self.wallet.postings.values():
            clearing[posting.currency] = clearing.get(posting.currency, 0) - posting.delta
        for currency in clearing.keys() | row["clearing"].keys():
            assert row["clearing"].get(currency, 0) == clearing.get(currency, 0), currency
        assert row["problems"] == []

    # --- helpers ------------------------------------------------------------------------------

    def event_of(self, spec: Spec) -> dict[str, Any]:
        """The wire event of ``spec``, with a fresh request_id and the current timestamp."""
        assert self.client is not None
        wire: dict[str, Any] = {"player_id": self.ids[spec.player]}
        ref = spec.ref
        if ref == "@":
            kind = "bet" if spec.event == "cancel" else "result"
            latest = self.latest(wire["player_id"], kind)
            ref = latest.txn if latest is not None else {"bet": "b0", "result": "w0"}[kind]
        referenced = self.wallet.postings.get(ref) if ref is not None else None
        if spec.token is not None:
            wire["session_token"] = self.token(spec.player, spec.token)
        if spec.txn is not None:
            wire["transaction_id"] = spec.txn
        if ref is not None:
            wire["ref_transaction_id"] = ref
        if spec.round == "@":
            anchor = referenced or self.latest(wire["player_id"], "bet")
            round_id = anchor.round_id if anchor is not None else None
            wire["round_id"] = round_id if round_id is not None else "r0"  # a promo has none
        elif spec.round is not None:
            wire["round_id"] = spec.round
        if spec.game is not None:
            wire["game_id"] = spec.game
        if spec.amount == "bet":
            bet = referenced if referenced is not None and referenced.kind == "bet" else None
            wire["amount"] = bet.amount if bet is not None else 100
        elif spec.amount is not None:
            wire["amount"] = spec.amount
        if spec.round_closed is not None:
            wire["round_closed"] = spec.round_closed
        if spec.kind is not None:
            wire["kind"] = spec.kind
        if spec.grant is not None:
            wire["free_round_id"] = self.grants.get(spec.grant, "no-such-grant")
        if spec.promo is not None:
            wire["promo_id"] = spec.promo
        if spec.event in ("bet", "cancel", "result", "result_change", "promo_win"):
            currency = CURRENCIES[spec.player]
            if spec.wrong_currency:
                currency = "USD" if currency == "EUR" else "EUR"
            wire["currency"] = currency
        event = self.client.event(spec.event, **wire)
        event["timestamp"] += spec.skew
        return event

    def latest(self, player_id: str, kind: str) -> Posting | None:
        """The player's latest posting of ``kind`` in the model."""
        for posting in reversed(self.wallet.postings.values()):
            if posting.kind == kind and posting.player_id == player_id:
                return posting
        return None

    def token(self, player: str, kind: str) -> str:
        owner = "p0" if player == "ghost" else player
        if kind == "own":
            return self.tokens[owner][-1]
        if kind == "first":
            return self.tokens[owner][0]
        if kind == "other":
            return self.tokens[OTHER_PLAYER[owner]][-1]
        if kind == "elsewhere":
            if owner not in self.elsewhere:
                player_id, provider = self.ids[owner], self.services.elsewhere
                token = self.portal.call(self.services.operator.session, player_id, provider)
                self.elsewhere[owner] = token
                self.wallet.add_session(token, player_id, provider)
            return self.elsewhere[owner]
        return "never-issued-" + owner

    def seal(self, event: dict[str, Any]) -> bytes:
        assert self.client is not None
        return seal_event(self.client.key, self.client.provider, event)

    def send(self, event: dict[str, Any], body: bytes | None = None) -> None:
        """Deliver one event (or resend ``body``) and compare the answer with the model's."""
        assert self.client is not None
        body = body if body is not None else self.seal(event)
        actual = self.portal.call(self.client.post, body)
        expected = self.wallet.deliver(event, actual)
        assert expected.matches(actual), mismatch(event, expected, actual)
        self.remember(Sent(event, body))

    def remember(self, sent: Sent) -> None:
        self.sent.append(sent)
        if sent.event["event"] in ("bet", "cancel", "result", "result_change", "promo_win"):
            self.money.append(sent)

    def check_in_progress(self, event: dict[str, Any], answer: Answer) -> None:
        """A twin in identical bytes that met the first one still pending: R1 with the player's
        balance at that moment (any, as the burst's order is not known)."""
        player = self.wallet.players.get(event["player_id"])
        shown = {k: v for k, v in answer.items() if k not in ("message", "balance")}
        expected = {"code": "R1", "reason": "request_in_progress"}
        expected["request_id"] = event["request_id"]
        if player is not None:
            expected |= {"player_id": player.player_id, "currency": player.currency}
            assert isinstance(answer.get("balance"), int) and answer["balance"] >= 0, answer
        assert shown == expected, answer


def mismatch(event: dict[str, Any], expected: Expectation, actual: Answer) -> str:
    return f"event {event}\n  expected {expected.answer}\n  actual   {actual}"


def in_sent_order(wallet: Wallet, events: list[dict[str, Any]], actual: list[Answer]) -> list[str]:
    """Each delivery of a burst, its answer, and the model's answer in the order sent."""
    model = copy.deepcopy(wallet)
    lines = []
    for event, answer in zip(events, actual, strict=True):
        expected = model.deliver(event, answer)
        lines.append(f"  {event}\n    -> {answer}")
        if not expected.matches(answer):
            lines.append(f"    in this order the model expects {expected.answer}")
    return lines


def test_seamless_contract_follows_the_model(settings: Settings) -> None:
    with (
        start_blocking_portal("asyncio") as portal,
        portal.wrap_async_context_manager(wallet_services(settings)) as services,
    ):
        SeamlessMachine.portal = portal
        SeamlessMachine.services = services
        run_state_machine_as_test(SeamlessMachine, settings=MACHINE_SETTINGS)

        async def whole_ledger_check() -> Any:
            return await services.operator.call("GET", "/v1/ledger/check", expect=200)

        assert portal.call(whole_ledger_check) == {"ok": True}
