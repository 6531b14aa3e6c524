"""Model-based test of payments: random deposits and withdrawals against the real service, with
two fake PSP routes that misbehave, checked after every step against the PSPs' truth.

A Hypothesis ``RuleBasedStateMachine`` drives the wallet's real HTTP API (the app from
``app.main.create_app`` over httpx's ASGI transport, on the session's Postgres server, in a database
of its own) with two routes from :mod:`tests.payments.fake_psps`. The routes answer through the
wallet's real PSP adapter; what they do is scripted per call: accept and then time out, 5xx before
or after acting, 429, connection refused, decline. Webhooks are delivered by the test: late,
duplicated (racing copies), out of order, forged (bad signature, stale, wrong amount, a float or
string amount, sent by the other PSP). Polls (``Payments.poll_once``) may meet a PSP that is down or
one whose status lags behind its webhooks. Clients retry creations and operator actions with the
same ``Idempotency-Key``, also concurrently (``asyncio.gather`` of one POST).

The model is small: each payment is open, held or final, and it becomes final only on a final
outcome the wallet was told of (a verified webhook, a poll answered with the truth, an operator's
resolve after checking with the PSP), or at creation by what the routes answered. What the wallet
should have done at creation is derived from the calls the PSPs saw (decisions of issue 12):

- a payout that may have reached a PSP (anything but connection refused or 429) stays with it:
  at most one more ask there under the same key, never another route; unanswered, it stays
  ``approved`` with its funds held, flagged ``payout_outcome_unknown``, answered 503
  ``route_degraded``, and that answer is the key's answer from then on;
- a decline fails it and releases the hold; no route that may have acted: failed, 503;
- a decline of the second ask after a timeout refuses that ask, not the first one, which may
  have been taken: "When the same route, asked again, refuses (...), that says nothing about the
  first request: the outcome stays unknown" (docs/payments.md, section 4). A payout stays
  unknown; a deposit goes on to the next route.

Invariants after every step:

- each payment reference was sent to at most one PSP that may have acted, and at most one payout
  exists for it at all PSPs together (the fakes dedupe by key, as a real PSP does); no PSP call
  happens outside the payment's one start (repeats, polls and resolves never start it again);
- the wallet's status of each payment is the model's, and is consistent with the PSP's truth (paid
  only if the PSP paid it; failed or rejected only if no PSP has a live or paid payout for it);
- balances are the model's; each payment's postings (hold, release, settle, credit) are exactly
  those its model status calls for, and the PSPs' clearing accounts hold what they paid and took;
  ``GET /v1/ledger/check`` is ok;
- a withdrawal not final is either at a PSP that holds it (and can still report), or listed by
  ``GET /v1/withdrawals?attention=true`` (and a final one is not listed as unknown or held);
  one whose outcome was unknown at its start shows ``needs_attention: true`` in its view.

At the end of each example every open payment is brought to an end (the PSPs decide and their
webhooks arrive; payouts no PSP knows are resolved by an operator), and everything must be final.

Reproducing a failure: Hypothesis prints the steps (``state.step(action=...)``) and a
``@reproduce_failure`` blob; the example is saved under ``.hypothesis/examples`` and replayed
first next time. ``WALLET_PAYMENTS_MODEL_EXAMPLES=200`` searches longer.
``tests/payments/mutants.py`` plants bugs and runs this machine against each.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
import httpx
import hypothesis
import orjson
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

from app import db
from app.config import Settings
from app.payments import signing
from app.payments.service import Payments
from tests.fixtures.app import Operator, start_app
from tests.payments.fake_psps import (
    ANSWERED,
    FAULTS,
    FINAL,
    PROVABLY_NOT_ACTED,
    Call,
    FakePsp,
    deliver,
)

ROOT = Path(__file__).resolve().parents[2]
FUNDS = 20_000  # each player's balance at the start of an example
REVIEW = 2_000  # withdrawals above this wait for an operator
PLAYERS = ("p0", "p1")

MACHINE_SETTINGS = hypothesis.settings(
    max_examples=int(os.environ.get("WALLET_PAYMENTS_MODEL_EXAMPLES", "25")),
    stateful_step_count=20,
    deadline=None,
    database=DirectoryBasedExampleDatabase(ROOT / ".hypothesis" / "examples"),
    print_blob=True,
    # Each step is real HTTP, real Postgres and a ledger check: slow draws are the point.
    suppress_health_check=[HealthCheck.too_slow],
)

# Model statuses: the wallet's own for final ones; "open" for a payment under way.
OPEN, HELD = "open", "held"
WALLET_OPEN = {
    "deposit": {"awaiting_method", "processing"},
    "withdrawal": {"approved", "processing"},
}
RELEASED = {"failed", "rejected"}
# What a PSP's final status means for each kind.
OUTCOME = {
    ("deposit", "succeeded"): "succeeded",
    ("deposit", "failed"): "failed",
    ("withdrawal", "succeeded"): "paid",
    ("withdrawal", "failed"): "failed",
}
ATTENTION_UNKNOWN = "payout_outcome_unknown"


# --- profiles: which misbehaviour the machine draws -------------------------------------------


@dataclass(frozen=True)
class Profile:
    """What the machine may draw. ``FULL`` is the test; the others leave out what a known defect
    of some code version fails anyway, so that :mod:`tests.payments.mutants` can still measure
    the planted bugs against that code (see its docstring)."""

    name: str
    payout_faults: tuple[str, ...] = FAULTS
    # Every second ask under a key is answered (no payout outcome ever stays unknown).
    reask_answers: bool = False
    typed_webhooks: bool = True  # webhooks with a float or string amount
    action_keys: bool = True  # Idempotency-Key on approve/reject/resolve, repeats, races
    resolve: bool = True  # POST /v1/withdrawals/{id}/resolve


FULL = Profile("full")
# Left out, each because main (2100caa) fails it already: 5xx answers fail a payout over to the
# next route; an unknown outcome is not stored as the key's answer, not found by polls, not
# listed, and there is no resolve; webhooks take 2000.0 and "2000" as amounts; approve and reject
# ignore Idempotency-Key.
MAIN_SAFE = Profile(
    "main-safe",
    payout_faults=("ok", "decline", "refused", "429", "timeout_before", "timeout_after"),
    reask_answers=True,
    typed_webhooks=False,
    action_keys=False,
    resolve=False,
)
PROFILES = {p.name: p for p in (FULL, MAIN_SAFE)}


# --- what the rules draw ----------------------------------------------------------------------


@dataclass(frozen=True)
class Create:
    """POST /v1/deposits or /v1/withdrawals: ``copies`` identical requests at once."""

    kind: str
    player: str
    amount: int | str  # "all": the player's whole balance, "all+1" one more
    faults: tuple[tuple[str, ...], tuple[str, ...]]  # per route, in order of calls
    copies: int
    bad_amount: str | None  # "float" | "string": refused, nothing created


@dataclass(frozen=True)
class Repeat:
    """The request of an earlier creation again, with its key (``other_body``: changed)."""

    back: int
    other_body: bool


@dataclass(frozen=True)
class Decide:
    """A PSP finishes one of its open payments (a payout is paid or fails; a depositor pays or
    gives up), and sends its webhook (delivered by :class:`Deliver`)."""

    back: int
    succeed: bool


@dataclass(frozen=True)
class Deliver:
    """A webhook event sent earlier, delivered now (``copies`` at once)."""

    back: int
    variant: str
    copies: int


@dataclass(frozen=True)
class Poll:
    """The polling job, with each PSP answering status questions in its ``modes``."""

    modes: tuple[str, str]


@dataclass(frozen=True)
class Decision:
    """An operator approves or rejects a withdrawal (held ones, mostly)."""

    back: int
    approve: bool
    faults: tuple[tuple[str, ...], tuple[str, ...]]
    copies: int
    keyed: bool


@dataclass(frozen=True)
class Resolve:
    """An operator checks with the PSP and resolves an open withdrawal; ``variant``: ``check``
    (resolve as the PSP says), ``final`` (a final one: refused), ``no_key`` (refused)."""

    back: int
    variant: str


Action = Create | Repeat | Decide | Deliver | Poll | Decision | Resolve

BACK = st.integers(0, 30)
POLL_MODES = st.sampled_from(["truth", "truth", "stale", "down"])
AMOUNTS = st.sampled_from([1, 300, 1_000, 1_999, 2_000, 2_001, 3_500, "all", "all+1"])
VARIANTS = st.sampled_from(
    ["valid"] * 6 + ["bad_signature", "stale", "wrong_amount", "float", "string", "other_psp"]
)


def fault_lists(profile: Profile) -> st.SearchStrategy[tuple[tuple[str, ...], tuple[str, ...]]]:
    calls = st.one_of(st.just("ok"), st.sampled_from(profile.payout_faults))
    per_route = st.lists(calls, max_size=3).map(tuple)
    return st.tuples(per_route, per_route)


def actions(profile: Profile) -> st.SearchStrategy[Action]:
    """One step, drawn with fixed weights (one rule: see tests/seamless/test_model_based.py on
    why)."""
    faults = fault_lists(profile)
    copies = st.sampled_from([1, 1, 2, 3]) if profile.action_keys else st.just(1)
    creates = st.builds(
        Create,
        kind=st.sampled_from(["withdrawal", "withdrawal", "deposit"]),
        player=st.sampled_from(PLAYERS),
        amount=AMOUNTS,
        faults=faults,
        copies=st.sampled_from([1, 1, 2, 3]),
        bad_amount=st.sampled_from([None] * 10 + ["float", "string"]),
    )
    variants = VARIANTS
    if not profile.typed_webhooks:
        variants = variants.filter(lambda v: v not in ("float", "string"))
    weighted: list[tuple[int, st.SearchStrategy[Any]]] = [
        (5, creates),
        (1, st.builds(Repeat, BACK, st.booleans())),
        (3, st.builds(Decide, BACK, st.booleans())),
        (4, st.builds(Deliver, BACK, variants, st.sampled_from([1, 1, 2, 3]))),
        (
            2,
            st.builds(Poll, st.tuples(*[st.sampled_from(["truth", "truth", "stale", "down"])] * 2)),
        ),
        (
            2,
            st.builds(
                Decision,
                BACK,
                st.booleans(),
                faults,
                copies,
                st.booleans() if profile.action_keys else st.just(False),
            ),
        ),
    ]
    if profile.resolve:
        variants_r = st.sampled_from(["check", "check", "check", "final", "no_key"])
        weighted.append((2, st.builds(Resolve, BACK, variants_r)))
    return st.sampled_from([s for weight, s in weighted for _ in range(weight)]).flatmap(
        lambda s: s
    )


_ACTIONS: dict[Profile, st.SearchStrategy[Action]] = {}


def actions_of(profile: Profile) -> st.SearchStrategy[Action]:
    if profile not in _ACTIONS:
        _ACTIONS[profile] = actions(profile)
    return _ACTIONS[profile]


# --- the wallet under test, in its own event loop and database ---------------------------------


@dataclass(frozen=True)
class Services:
    http: httpx.AsyncClient
    operator: Operator
    pool: asyncpg.Pool
    payments: Payments


@asynccontextmanager
async def payment_services(settings: Settings) -> AsyncIterator[Services]:
    """An app of its own on a fresh database of the session's server: the polling job then sees
    only this test's payments, and the whole-ledger check stays cheap enough for every step."""
    assert settings.database_url is not None
    dsn = await db.ensure_database(settings.database_url, "wallet_paymodel_" + secrets.token_hex(4))
    conn = await db.connect(dsn)
    try:
        await db.migrate(conn)
    finally:
        await conn.close()
    async with AsyncExitStack() as stack:
        own = replace(settings, database_url=dsn, withdrawal_review_threshold=REVIEW, psps=())
        app = await start_app(own, stack)
        http = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://wallet.test")
        )
        pool = await db.create_pool(dsn, min_size=1, max_size=2)
        stack.push_async_callback(pool.close)
        payments = app.state["wallet"].payments  # type: ignore[attr-defined]
        payments.webhook_base = "http://wallet.test/v1/psp"
        yield Services(http, Operator(http), pool, payments)


@dataclass
class Pay:
    """A payment as the model knows it."""

    id: str
    kind: str
    player: str
    amount: int
    key: str
    body: dict[str, Any]
    first: tuple[int, Any]  # the first answer: status code and body (error code for errors)
    status: str  # OPEN, HELD or a final wallet status
    unknown: bool = False  # its payout's outcome was unknown at its start


# One statement, one snapshot: the example's payments, their postings, balances, clearing.
SNAPSHOT = """
SELECT
  (SELECT coalesce(jsonb_object_agg(id, jsonb_build_object(
              'kind', kind, 'status', status, 'psp', psp, 'amount', amount)), '{}')
     FROM payments WHERE player_id = ANY($1::text[])) AS payments,
  (SELECT coalesce(jsonb_agg(jsonb_build_array(external_id, kind)), '[]')
     FROM ledger_transactions WHERE source = '#payment' AND player_id = ANY($1::text[]))
     AS postings,
  (SELECT jsonb_object_agg(p.player_id, a.balance)
     FROM players p JOIN accounts a ON a.id = p.account_id
    WHERE p.player_id = ANY($1::text[])) AS balances,
  (SELECT coalesce(jsonb_object_agg(a.owner, (SELECT coalesce(sum(e.amount), 0)
                                                FROM entries e WHERE e.account_id = a.id)), '{}')
     FROM accounts a WHERE a.kind = 'house' AND a.owner = ANY($2::text[])) AS clearing
"""


def answer_of(response: httpx.Response) -> tuple[int, Any]:
    """What idempotency compares: the body of a success, the error code of a refusal (an error's
    message and request id are the request's own)."""
    body = response.json()
    if response.status_code >= 400:
        return response.status_code, body["error"]["code"]
    return response.status_code, body


def answer_to(calls: list[Call], index: int) -> str | None:
    """The answer the payment got from call ``index`` of its start: ``ok``, ``decline``, or None
    for none. A route is asked a second time only after a timeout, and a decline of that second
    ask is no answer: the wallet cannot tell it from any other refusal of the second ask (a "key
    in use"), which says nothing about the first ask (docs/payments.md, section 4). A payout then
    stays unknown; a deposit may go on to the next route."""
    call = calls[index]
    if call.fault not in ANSWERED:
        return None
    reasked = index > 0 and calls[index - 1].psp == call.psp
    if call.fault == "decline" and reasked:
        return None
    return call.fault


def in_progress(answer: tuple[int, Any]) -> bool:
    return answer == (409, "idempotency_conflict")


class PaymentsMachine(RuleBasedStateMachine):
    """One example: two players, two fresh PSP routes, then random payments and faults."""

    portal: ClassVar[BlockingPortal]
    services: ClassVar[Services]
    profile: ClassVar[Profile] = FULL
    # The last steps, for tests/payments/mutants.py to say which step caught a bug.
    trail: ClassVar[list[str]] = []

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = []  # every create call at either route, in order
        self.checked = 0  # calls up to here were accounted for
        self.starting: set[str] = set()  # references whose start is this step
        names = [f"fake{i}-{secrets.token_hex(3)}" for i in range(2)]
        self.psps = [FakePsp(name, calls=self.calls) for name in names]
        self.ids: dict[str, str] = {}
        self.base: dict[str, int] = {}
        self.pays: dict[str, Pay] = {}
        self.healthy = True
        type(self).trail = []

    # --- set-up and tear-down -----------------------------------------------------------------

    @initialize()
    def open_wallet(self) -> None:
        self.portal.call(self._open_wallet)

    async def _open_wallet(self) -> None:
        self.services.payments.psps = list(self.psps)
        for name in PLAYERS:
            player_id = await self.services.operator.player(FUNDS)
            self.ids[name] = player_id
            self.base[player_id] = FUNDS

    def teardown(self) -> None:
        try:
            if self.healthy and self.ids:
                self.settle_everything()
        finally:
            self.portal.call(self._close)

    async def _close(self) -> None:
        self.services.payments.psps = []
        for psp in self.psps:
            await psp.aclose()

    def settle_everything(self) -> None:
        """Every held funds end: PSPs decide and report, operators reject or resolve the rest."""
        self.note("settle everything")
        for pay in list(self.pays.values()):
            if pay.status == HELD:
                self.decide_on(pay, approve=False, faults=((), ()), copies=1, keyed=False)
        for psp in self.psps:
            for record in psp.open_records():
                shown = self.route(record.reference) == psp.name
                psp.decide(record.reference, "succeeded" if shown else "failed")
        for psp in self.psps:
            for event in list(psp.events):
                if event.status in FINAL:
                    self.deliver_event(event, "valid", 1)
        for pay in list(self.pays.values()):
            if pay.status == OPEN and pay.kind == "withdrawal":
                self.resolve(pay, "check")
        self.check()
        left = {p.id: p.status for p in self.pays.values() if p.status in (OPEN, HELD)}
        assert not left, f"payments still open after settling everything: {left}"

    # --- one step -----------------------------------------------------------------------------

    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        self.healthy = False
        action = data.draw(actions_of(self.profile), label="action")
        self.note(repr(action))
        match action:
            case Create():
                self.create(action)
            case Repeat(back, other_body):
                if self.pays:
                    self.repeat(self.pick(back), other_body)
            case Decide(back, succeed):
                self.psp_decides(back, succeed)
            case Deliver(back, variant, copies):
                if variant == "valid":
                    events = [e for psp in self.psps for e in psp.events]
                    if events:
                        self.deliver_event(events[-1 - back % len(events)], variant, copies)
                else:
                    self.deliver_forged(back, variant, copies)
            case Poll(modes):
                self.poll(modes)
            case Decision(back, approve, faults, copies, keyed):
                withdrawals = [p for p in self.pays.values() if p.kind == "withdrawal"]
                held = [p for p in withdrawals if p.status == HELD]
                choice = held or withdrawals  # mostly held ones; else a refusal
                if choice:
                    pay = choice[back % len(choice)]
                    self.decide_on(pay, approve, faults, copies, keyed)
            case Resolve(back, variant):
                self.resolve_step(back, variant)

    def note(self, text: str) -> None:
        self.trail.append(text)

    def pick(self, back: int) -> Pay:
        pays = list(self.pays.values())
        return pays[-1 - back % len(pays)]

    # --- creating ------------------------------------------------------------------------------

    def create(self, c: Create) -> None:
        player_id = self.ids[c.player]
        available = self.balance(player_id)
        amount = c.amount
        if isinstance(amount, str):
            amount = max(available, 1) + (amount == "all+1")
        body: dict[str, Any] = {
            "player_id": player_id,
            "amount": amount,
            "currency": "EUR",
            "method": "card",
            "reference": "order-" + secrets.token_hex(3),
        }
        if c.bad_amount is not None:
            body["amount"] = float(amount) if c.bad_amount == "float" else str(amount)
        key = "k-" + secrets.token_hex(8)
        self.arm(c.faults)
        mark = len(self.calls)
        path = f"/v1/{c.kind}s"
        responses = self.portal.call(self.post_all, path, body, key, c.copies)
        answers = [answer_of(r) for r in responses]
        self.disarm()
        first = self.first_of(answers)
        if isinstance(body["amount"], (float, str)) or (
            c.kind == "withdrawal" and amount > available
        ):
            assert first == (400, "invalid_request"), (body, answers)
            assert self.calls[mark:] == [], "a refused request reached a PSP"
            assert self.payment_by_key(c.kind, key) is None, "a refused request made a payment"
            return
        payment_id = self.payment_by_key(c.kind, key)
        assert payment_id is not None, (body, answers)
        pay = Pay(payment_id, c.kind, player_id, amount, key, body, first, OPEN)
        self.pays[payment_id] = pay
        if c.kind == "withdrawal" and amount > REVIEW:
            assert first[0] == 201 and first[1]["status"] == "held", first
            pay.status = HELD
            return
        self.started(pay, mark, first, created=True)

    def arm(self, faults: tuple[tuple[str, ...], tuple[str, ...]]) -> None:
        for psp, script in zip(self.psps, faults, strict=True):
            psp.faults = list(script)
            psp.reask_answers = self.profile.reask_answers

    def disarm(self) -> None:
        for psp in self.psps:
            psp.faults = []

    async def post_all(
        self, path: str, body: Any, key: str | None, copies: int
    ) -> list[httpx.Response]:
        headers = dict(self.services.operator.headers)
        if key is not None:
            headers["idempotency-key"] = key
        http = self.services.http
        return list(
            await asyncio.gather(
                *(http.post(path, json=body, headers=headers) for _ in range(copies))
            )
        )

    def first_of(self, answers: list[tuple[int, Any]]) -> tuple[int, Any]:
        """Racing copies under one key: one effect; each copy gets the first answer or 409
        (still in progress), never a 500."""
        assert all(status < 500 or status == 503 for status, _ in answers), answers
        done = [a for a in answers if not in_progress(a)]
        assert done, f"every copy was told the request is in progress: {answers}"
        assert all(a == done[0] for a in done), f"copies answered differently: {answers}"
        return done[0]

    def started(self, pay: Pay, mark: int, first: tuple[int, Any], *, created: bool) -> None:
        """Check the calls of ``pay``'s start and its answer; the model's status after it."""
        self.starting.add(pay.id)
        calls = [c for c in self.calls[mark:] if c.reference == pay.id]
        outcome, route = self.start_outcome(pay, calls)
        ok = 201 if created else 200
        if outcome in ("answered", "unknown"):
            # Written before the request left: the PSP that may hold the payment reports to it.
            assert self.route(pay.id) == route, (self.route(pay.id), calls)
        if outcome == "answered":
            assert first[0] == ok, (outcome, calls, first)
            if pay.kind == "deposit":
                assert first[1]["status"] == "awaiting_method", first
                record = self.psp(route).payments[pay.id]
                assert first[1]["redirect_url"] == record.answer["redirect_url"], first
            else:
                assert first[1]["status"] in WALLET_OPEN["withdrawal"], first
            pay.status = OPEN
        elif outcome == "declined":
            assert first[0] == ok and first[1]["status"] == "failed", (calls, first)
            pay.status = "failed"
        elif outcome == "unknown":
            assert first == (503, "route_degraded"), (calls, first)
            pay.status, pay.unknown = OPEN, True
            shown = self.portal.call(self.get_view, pay)
            assert shown["status"] == "approved", shown
            assert shown.get("needs_attention") is True, shown
            assert shown.get("attention") == ATTENTION_UNKNOWN, shown
        else:
            assert first == (503, "route_degraded"), (calls, first)
            pay.status = "failed"

    def start_outcome(self, pay: Pay, calls: list[Call]) -> tuple[str, str | None]:
        """What the wallet must have made of its calls; asserts the calls were legal."""
        answers = [answer_to(calls, i) for i in range(len(calls))]
        assert all(a is None for a in answers[:-1]), f"asked again after an answer: {calls}"
        acted = [c for c in calls if c.fault not in PROVABLY_NOT_ACTED]
        if pay.kind == "withdrawal" and acted:
            # Once a payout may have reached a PSP it stays there: one more ask at most.
            since = calls[calls.index(acted[0]) :]
            assert all(c.psp == acted[0].psp for c in since), f"failed over a payout: {calls}"
            assert len(since) <= 2, f"asked the PSP more than twice: {calls}"
        if not calls:
            return "none", None
        last = calls[-1]
        if answers[-1] == "ok":
            return "answered", last.psp
        if answers[-1] == "decline":
            return "declined", last.psp
        if pay.kind == "withdrawal" and acted:
            return "unknown", acted[0].psp
        return "none", None

    def repeat(self, pay: Pay, other_body: bool) -> None:
        body = dict(pay.body)
        if other_body:
            body["amount"] = pay.amount + 1
        path = f"/v1/{pay.kind}s"
        (response,) = self.portal.call(self.post_all, path, body, pay.key, 1)
        got = answer_of(response)
        if other_body:
            assert got == (409, "idempotency_conflict"), got
        else:
            assert got == pay.first, f"a repeat got {got}, the first answer was {pay.first}"

    # --- the PSPs' side ------------------------------------------------------------------------

    def psp_decides(self, back: int, succeed: bool) -> None:
        records = [(psp, r) for psp in self.psps for r in psp.open_records()]
        if not records:
            return
        psp, record = records[back % len(records)]
        pay = self.pays.get(record.reference)
        # A depositor can only pay at the route whose page the wallet showed.
        shown = pay is not None and (pay.kind == "withdrawal" or self.route(pay.id) == psp.name)
        if succeed and shown and record.kind == "deposit" and record.status == "requires_action":
            psp.progress(record.reference)  # the depositor is paying: a step of its own
            return
        psp.decide(record.reference, "succeeded" if succeed and shown else "failed")

    def deliver_forged(self, back: int, variant: str, copies: int) -> None:
        """A delivery the wallet must not act on, about a payment still open: it claims success
        (with a bad signature, a stale one, from the other PSP, for another amount), or is the
        PSP's true status with its amount as a float or a string."""
        records = [
            (psp, r)
            for psp in self.psps
            for r in psp.payments.values()
            if r.reference in self.pays and self.pays[r.reference].status == OPEN
        ]
        if not records:
            return
        psp, record = records[back % len(records)]
        claimed = record.status if variant in ("float", "string") else "succeeded"
        self.deliver_event(psp.claim(record.reference, claimed), variant, copies)

    def deliver_event(self, event: Any, variant: str, copies: int) -> None:
        psp = self.psp(event.psp)
        pay = self.pays.get(event.reference)
        body = dict(event.body)
        data = dict(body["data"])
        sender, at = psp, time.time()
        if variant == "wrong_amount":
            data["amount"] += 1
        elif variant == "float":
            data["amount"] = float(data["amount"])
        elif variant == "string":
            data["amount"] = str(data["amount"])
        elif variant == "other_psp":
            sender = next(p for p in self.psps if p is not psp)
        elif variant == "stale":
            at -= 400
        body["data"] = data
        raw = orjson.dumps(body) if variant != "valid" else event.bytes()
        secret = sender.secret if variant != "bad_signature" else b"not-the-secret"
        signature = signing.sign(secret, raw, int(at))
        wallet_route = self.route(event.reference)
        routed = pay is not None and wallet_route == sender.name
        responses = self.portal.call(self.deliver_all, sender, raw, signature, copies)
        codes = [r.status_code for r in responses]
        if variant in ("bad_signature", "stale"):
            assert codes == [401] * copies, (variant, codes)
            return
        if variant in ("float", "string"):
            assert codes == [400] * copies, (variant, codes, [r.text for r in responses])
            return
        if variant == "wrong_amount":
            assert all(c < 500 for c in codes), codes
            return
        # Not routed there: 404, so the PSP retries; a payment that never reached a route (it
        # ended before) may also ignore the event.
        expected = {200} if routed else {404} if wallet_route is not None else {200, 404}
        assert set(codes) <= expected, (variant, wallet_route, [r.text for r in responses])
        if routed and pay is not None and pay.status == OPEN and event.status in FINAL:
            pay.status = OUTCOME[(pay.kind, event.status)]

    async def deliver_all(
        self, psp: FakePsp, raw: bytes, signature: str, copies: int
    ) -> list[httpx.Response]:
        http = self.services.http
        return list(
            await asyncio.gather(*(deliver(http, psp, raw, signature) for _ in range(copies)))
        )

    def poll(self, modes: tuple[str, str]) -> None:
        for psp, mode in zip(self.psps, modes, strict=True):
            psp.poll_mode = mode
        try:
            self.portal.call(self.poll_once)
        finally:
            for psp in self.psps:
                psp.poll_mode = "truth"
        for pay in self.pays.values():
            route = self.route(pay.id)
            if pay.status != OPEN or route is None:
                continue
            index = [p.name for p in self.psps].index(route)
            record = self.psps[index].payments.get(pay.id)
            if modes[index] == "truth" and record is not None and record.status in FINAL:
                pay.status = OUTCOME[(pay.kind, record.status)]

    async def poll_once(self) -> None:
        # Every open payment of this database, whatever its age (this test's own database). The
        # batch is large because examples that failed leave their payments open, and hundreds
        # of them run while Hypothesis shrinks a failure.
        await self.services.payments.poll_once(quiet_seconds=0, batch=100_000)

    # --- operators -----------------------------------------------------------------------------

    def decide_on(
        self,
        pay: Pay,
        approve: bool,
        faults: tuple[tuple[str, ...], tuple[str, ...]],
        copies: int,
        keyed: bool,
    ) -> None:
        verb = "approve" if approve else "reject"
        key = "a-" + secrets.token_hex(6) if keyed else None
        self.arm(faults)
        mark = len(self.calls)
        path = f"/v1/withdrawals/{pay.id}/{verb}"
        responses = self.portal.call(self.post_all, path, None, key, copies if keyed else 1)
        self.disarm()
        first = self.first_of([answer_of(r) for r in responses])
        if pay.status != HELD:
            assert first == (400, "invalid_request"), (pay.status, verb, first)
            assert not [c for c in self.calls[mark:] if c.reference == pay.id]
            return
        if approve:
            self.started(pay, mark, first, created=False)
        else:
            assert first[0] == 200 and first[1]["status"] == "rejected", first
            pay.status = "rejected"
        if key is not None:
            # The same key again: the first answer, and nothing done twice.
            (again,) = self.portal.call(self.post_all, path, None, key, 1)
            assert answer_of(again) == first, (answer_of(again), first)

    def resolve_step(self, back: int, variant: str) -> None:
        withdrawals = [p for p in self.pays.values() if p.kind == "withdrawal"]
        if variant == "final":
            done = [p for p in withdrawals if p.status not in (OPEN, HELD)]
            if done:
                self.resolve(done[back % len(done)], variant)
            return
        open_ = [p for p in withdrawals if p.status == OPEN]
        if open_:
            self.resolve(open_[back % len(open_)], variant)

    def resolve(self, pay: Pay, variant: str) -> None:
        """The operator checks with the PSPs first: a payout still pending there is left alone."""
        records = [psp.payments[pay.id] for psp in self.psps if pay.id in psp.payments]
        if variant == "check" and any(r.status not in FINAL for r in records):
            return
        paid = any(r.status == "succeeded" for r in records)
        outcome = "paid" if paid else "failed"
        body = {"outcome": outcome, "reason": "checked with the PSP"}
        key = None if variant == "no_key" else "r-" + secrets.token_hex(6)
        path = f"/v1/withdrawals/{pay.id}/resolve"
        (response,) = self.portal.call(self.post_all, path, body, key, 1)
        got = answer_of(response)
        if variant != "check" or pay.status != OPEN:
            assert got == (400, "invalid_request"), (variant, pay.status, got)
            return
        assert got[0] == 200 and got[1]["status"] == outcome, got
        pay.status = outcome
        (again,) = self.portal.call(self.post_all, path, body, key, 1)
        assert answer_of(again) == got, (answer_of(again), got)
        other = {"outcome": "failed" if paid else "paid", "reason": "changed my mind"}
        (conflict,) = self.portal.call(self.post_all, path, other, key, 1)
        assert answer_of(conflict) == (409, "idempotency_conflict"), answer_of(conflict)

    # --- after every step -----------------------------------------------------------------------

    @invariant()
    def money_follows_the_psps(self) -> None:
        if not self.ids:
            return
        self.check()
        self.healthy = True

    def check(self) -> None:
        self.check_calls()
        self.portal.call(self._check)

    def check_calls(self) -> None:
        """No PSP call outside a payment's start; at most one payout per reference anywhere."""
        stray = [c for c in self.calls[self.checked :] if c.reference not in self.starting]
        assert not stray, f"PSP calls outside the payment's start: {stray}"
        self.checked, self.starting = len(self.calls), set()
        for psp in self.psps:
            assert psp.problems == [], psp.problems
        holders: dict[str, list[str]] = {}
        for psp in self.psps:
            for reference in psp.payments:
                holders.setdefault(reference, []).append(psp.name)
        for reference, names in holders.items():
            pay = self.pays.get(reference)
            if pay is not None and pay.kind == "withdrawal":
                assert len(names) == 1, f"payout {reference} exists at {names}"

    async def _check(self) -> None:
        players = list(self.ids.values())
        owners = [f"psp:{psp.name}" for psp in self.psps]
        row = await self.services.pool.fetchrow(SNAPSHOT, players, owners)
        wallet = row["payments"]
        assert set(wallet) == set(self.pays), set(wallet) ^ set(self.pays)
        expected_postings: list[tuple[str, str]] = []
        balances = dict(self.base)
        clearing = dict.fromkeys(owners, 0)
        for pay in self.pays.values():
            status = wallet[pay.id]["status"]
            self.check_status(pay, status)
            truth = [psp.payments[pay.id] for psp in self.psps if pay.id in psp.payments]
            route = wallet[pay.id]["psp"]
            if pay.kind == "deposit":
                if pay.status == "succeeded":
                    paid = self.psp(route).payments.get(pay.id) if route else None
                    assert paid is not None and paid.status == "succeeded", (
                        f"deposit {pay.id} credited, but {route} did not take it: {truth}"
                    )
                    expected_postings.append((pay.id, "deposit"))
                    balances[pay.player] += pay.amount
                    clearing[f"psp:{route}"] -= pay.amount
                continue
            expected_postings.append((f"{pay.id}:hold", "withdrawal_hold"))
            if pay.status in RELEASED:
                assert all(r.status == "failed" for r in truth), (
                    f"withdrawal {pay.id} released while a PSP has its payout: {truth}"
                )
                expected_postings.append((f"{pay.id}:release", "withdrawal_release"))
            else:
                balances[pay.player] -= pay.amount
            if pay.status == "paid":
                assert [r.status for r in truth] == ["succeeded"], (
                    f"withdrawal {pay.id} settled, but the PSP did not pay it: {truth}"
                )
                expected_postings.append((f"{pay.id}:settle", "withdrawal_settle"))
                clearing[f"psp:{route}"] += pay.amount
        postings = sorted(map(tuple, row["postings"]))
        assert postings == sorted(expected_postings), (
            f"postings {postings}, model's {expected_postings}"
        )
        assert row["balances"] == balances, f"balances {row['balances']}, model's {balances}"
        held = {o: row["clearing"].get(o, 0) for o in owners}
        assert held == clearing, f"PSP clearing accounts {held}, model's {clearing}"
        await self.check_attention(wallet)
        check = await self.services.operator.call("GET", "/v1/ledger/check", expect=200)
        assert check == {"ok": True}, check

    def check_status(self, pay: Pay, status: str) -> None:
        if pay.status == OPEN:
            assert status in WALLET_OPEN[pay.kind], f"{pay.id} is {status}; the model: open"
        else:
            assert status == pay.status, f"{pay.id} is {status}; the model: {pay.status}"

    async def check_attention(self, wallet: dict[str, Any]) -> None:
        """Held funds wait for something that exists: a PSP that holds the payout, or an
        operator who sees it listed."""
        orphans = {
            p.id
            for p in self.pays.values()
            if p.kind == "withdrawal"
            and p.status == OPEN
            and not any(p.id in psp.payments for psp in self.psps)
        }
        if not orphans:
            return
        listed = await self.attention_list()
        missing = orphans - set(listed)
        assert not missing, f"open withdrawals no PSP holds and nobody is told of: {missing}"
        # A final one may stay listed for what an operator must still see (an event refused as
        # not matching, money paid twice): "Once final, payout_outcome_unknown is cleared"
        # (docs/payments.md, section 4a), and it is no longer held for review.
        stale = (ATTENTION_UNKNOWN, "held_for_review")
        final = {
            p.id: listed[p.id]
            for p in self.pays.values()
            if p.status not in (OPEN, HELD) and listed.get(p.id) in stale
        }
        assert not final, f"final withdrawals listed as unknown or held: {final}"

    async def attention_list(self) -> dict[str, str]:
        """The listed withdrawals and why each is listed (``attention``)."""
        listed: dict[str, str] = {}
        cursor: str | None = None
        while True:
            query = "/v1/withdrawals?attention=true" + (f"&cursor={cursor}" if cursor else "")
            page = await self.services.operator.call("GET", query, expect=200)
            items = page.get("data", page.get("items"))
            listed |= {item["id"]: item["attention"] for item in items}
            cursor = page.get("next_cursor")
            if not cursor:
                return listed

    # --- helpers ---------------------------------------------------------------------------------

    def balance(self, player_id: str) -> int:
        """The model's balance of the player."""
        total = self.base[player_id]
        for pay in self.pays.values():
            if pay.player != player_id:
                continue
            if pay.kind == "deposit" and pay.status == "succeeded":
                total += pay.amount
            if pay.kind == "withdrawal" and pay.status not in RELEASED:
                total -= pay.amount
        return total

    def psp(self, name: str | None) -> FakePsp:
        return next(p for p in self.psps if p.name == name)

    def route(self, payment_id: str) -> str | None:
        """The route the wallet recorded for the payment."""
        return self.portal.call(self._route, payment_id)

    async def _route(self, payment_id: str) -> str | None:
        value: str | None = await self.services.pool.fetchval(
            "SELECT psp FROM payments WHERE id = $1", payment_id
        )
        return value

    def payment_by_key(self, kind: str, key: str) -> str | None:
        async def find() -> str | None:
            value: str | None = await self.services.pool.fetchval(
                "SELECT id FROM payments WHERE kind = $1 AND idempotency_key = $2", kind, key
            )
            return value

        return self.portal.call(find)

    async def get_view(self, pay: Pay) -> dict[str, Any]:
        view: dict[str, Any] = await self.services.operator.call(
            "GET", f"/v1/{pay.kind}s/{pay.id}", expect=200
        )
        return view


def run_machine(
    settings: Settings,
    profile: Profile = FULL,
    hypothesis_settings: hypothesis.settings = MACHINE_SETTINGS,
    before: Callable[[], None] | None = None,
) -> None:
    """Run :class:`PaymentsMachine` against an app of its own (also for payments_mutants)."""
    with (
        start_blocking_portal("asyncio") as portal,
        portal.wrap_async_context_manager(payment_services(settings)) as services,
    ):
        PaymentsMachine.portal = portal
        PaymentsMachine.services = services
        PaymentsMachine.profile = profile
        if before is not None:
            before()
        run_state_machine_as_test(PaymentsMachine, settings=hypothesis_settings)


def test_payments_follow_the_model(settings: Settings) -> None:
    run_machine(settings, PROFILES[os.environ.get("WALLET_PAYMENTS_MODEL_PROFILE", "full")])
