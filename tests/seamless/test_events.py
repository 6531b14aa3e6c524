"""The seamless event models (app/seamless/events.py) without a server: the digest that stored
claims and replay records carry, the refusal that names the first bad field, and the answer
model that the response objects follow."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from app.seamless import events
from app.seamless.outcome import CODES, REASONS, Outcome, Reason, Refusal

BASE = {"request_id": "r-1", "timestamp": 1700000000, "player_id": "p-1"}
MONEY = {"transaction_id": "t-1", "round_id": "rd-1", "currency": "EUR"}

# Digests computed by the hand-written parser the models replaced (commit 2edc651): Redis
# claims and seamless_requests rows written before carry them, so they must never change.
DIGESTS: list[tuple[dict[str, Any], str]] = [
    ({"event": "login", "session_token": "tok"}, "5b7cb83ab8e1f8a416ca7c4a87b1a825"),
    ({"event": "balance", "request_id": "r-2"}, "d01e5f267f329cea2857823b35cddfda"),
    (
        {"event": "balance", "request_id": "r-2b", "session_token": "tok ü"},
        "b4ed9c725d075c4ec0dc5f5c69152284",
    ),
    (
        {"event": "logout", "request_id": "r-3", "session_token": "tok"},
        "70591c4b615a9e0a6b1251eb0471a617",
    ),
    (
        {
            "event": "bet",
            "request_id": "r-4",
            "session_token": "tok",
            "game_id": "slot-1",
            "amount": 100,
            "extra": 1,  # ignored, and not part of the digest
            **MONEY,
        },
        "e2423c8a77842d7afdb26221fdff9186",
    ),
    (
        {
            "event": "cancel",
            "request_id": "r-5",
            "transaction_id": "c-1",
            "ref_transaction_id": "t-1",
        },
        "0d5c440d7031d6cf1bcb86a70625c169",
    ),
    (
        {
            "event": "cancel",
            "request_id": "r-5b",
            "transaction_id": "c-1",
            "ref_transaction_id": "t-1",
            "amount": 100,
        },
        "b20a147b886e93035ed88a3a64441ffa",
    ),
    (
        {
            "event": "result",
            "request_id": "r-6",
            "transaction_id": "w-1",
            "game_id": "slot-1",
            "amount": 0,
        },
        "1850bf36fd0a4a829dfd25e3edde21bf",
    ),
    (
        {
            "event": "result",
            "request_id": "r-6b",
            "transaction_id": "w-1",
            "game_id": "slot-1",
            "amount": 5,
            "round_closed": False,
        },
        "6ca3e159bc09351a4e065eb4e72170c5",
    ),
    (
        {
            "event": "result_change",
            "request_id": "r-7",
            "transaction_id": "rc-1",
            "ref_transaction_id": "w-1",
            "amount": 7,
        },
        "de9b52c045857aa2d33a20d7ecf07a2b",
    ),
]


def event_of(fields: dict[str, Any]) -> dict[str, Any]:
    extra = MONEY if fields["event"] in events.MONEY_EVENTS else {}
    return {**BASE, **extra, **fields}


@pytest.mark.parametrize(("fields", "expected"), DIGESTS, ids=lambda v: str(v)[:24])
def test_digest_is_the_one_stored_before(fields: dict[str, Any], expected: str) -> None:
    event = events.parse(event_of(fields))
    assert events.digest(event).hex() == expected
    # The timestamp is not part of the event's identity: a provider refreshes it on a retry.
    later = events.parse({**event_of(fields), "timestamp": 1700000099})
    assert events.digest(later) == events.digest(event)


def test_a_null_optional_field_is_an_absent_one() -> None:
    result = {**event_of(DIGESTS[7][0])}
    assert events.parse({**result, "round_closed": None}) == events.parse(result)
    assert events.parse(result).round_closed is True  # type: ignore[union-attr]
    balance = event_of({"event": "balance"})
    assert events.parse({**balance, "session_token": None}) == events.parse(balance)


def refusal(data: dict[str, Any]) -> tuple[str, str, str]:
    with pytest.raises(Refusal) as caught:
        events.parse(data)
    return caught.value.code, caught.value.reason, caught.value.message


def test_the_first_bad_field_in_the_contracts_order_is_named() -> None:
    bet = event_of(DIGESTS[4][0])
    # Several bad fields: the first the model declares wins, whatever the object's key order.
    rest = {k: v for k, v in bet.items() if k not in ("currency", "amount", "timestamp")}
    bad = {"currency": "eur", "amount": True, **rest, "timestamp": 1.5}
    assert refusal(bad) == ("R3", "invalid_field", "timestamp: must be integer unix seconds")
    del bad["timestamp"]
    assert refusal(bad) == ("R3", "malformed_request", "missing field: timestamp")
    assert refusal({**bet, "amount": 0}) == (
        "R3",
        "invalid_field",
        f"amount: must be between 1 and {events.MAX_AMOUNT}",
    )
    assert refusal({**bet, "amount": None, "currency": 5}) == (
        "R3",
        "malformed_request",
        "missing field: amount",
    )
    # A bet of a free round stakes 0, and only such a bet may.
    assert refusal({**bet, "free_round_id": "7"}) == (
        "R3",
        "invalid_field",
        "amount: must be 0 for a bet of a free round",
    )
    free = events.parse({**bet, "amount": 0, "free_round_id": "7"})
    assert isinstance(free, events.Bet) and (free.amount, free.free_round_id) == (0, "7")
    # A grant id that is not a string is named as itself, not as a bad amount.
    assert refusal({**bet, "free_round_id": 7})[2].startswith("free_round_id: ")
    # A cancel may say 0: the amount of the free round's bet it cancels (the ledger checks it).
    cancel = event_of(DIGESTS[6][0])
    assert events.parse({**cancel, "amount": 0}).amount == 0  # type: ignore[union-attr]
    assert (
        refusal({**cancel, "amount": -1})[2] == f"amount: must be between 0 and {events.MAX_AMOUNT}"
    )
    result = event_of(DIGESTS[7][0])
    assert refusal({**result, "kind": "prize"}) == (
        "R3",
        "invalid_field",
        "kind: must be one of win, jackpot, bonus, free_round",
    )
    assert refusal({**bet, "event": "wager"}) == ("R3", "unknown_event", "unknown event: 'wager'")
    assert refusal({**bet, "event": 7}) == ("R3", "unknown_event", "unknown event: a JSON number")


def test_models_are_frozen_and_strict() -> None:
    bet = events.parse(event_of(DIGESTS[4][0]))
    with pytest.raises(ValueError):
        bet.amount = 5  # type: ignore[misc,union-attr]
    for wrong in ("100", 100.0, True):
        assert refusal({**event_of(DIGESTS[4][0]), "amount": wrong})[1] == "invalid_field"
    assert refusal({**event_of(DIGESTS[4][0]), "round_id": 12})[1] == "invalid_field"


def test_the_union_gives_one_schema_per_event() -> None:
    schema = TypeAdapter(events.Event).json_schema()
    assert schema["discriminator"]["propertyName"] == "event"
    assert sorted(schema["discriminator"]["mapping"]) == sorted(events.MODELS)
    bet = schema["$defs"]["Bet"]
    # One bet schema for both kinds of bet: 0 is the amount of a free round's.
    assert bet["properties"]["amount"]["minimum"] == 0
    assert "free_round_id" in bet["properties"]["amount"]["description"]
    assert bet["properties"]["amount"]["maximum"] == events.MAX_AMOUNT
    assert "extra" not in bet["properties"]


@pytest.mark.parametrize(
    "outcome",
    [
        Outcome(Reason.OK, "Success", "r-1", "p-1", 900, "EUR", 42, True),
        Outcome(Reason.OK, "Success", "r-1", "p-1", 900, "EUR"),
        Outcome(Reason.BAD_SIGNATURE, "no", None, "p-1", 900, "EUR"),
        Outcome(Reason.INVALID_FIELD, "amount: must be", "r-1"),
    ],
)
def test_answers_follow_the_answer_model(outcome: Outcome) -> None:
    obj = outcome.to_object()
    answer = events.Answer.model_validate(obj)
    assert answer.model_dump(mode="json", exclude_none=True) == obj


def test_the_docs_reason_table_is_the_enum() -> None:
    """docs/seamless.md's table of codes and reasons lists exactly the enum's, in its order."""
    doc = (Path(__file__).parents[2] / "docs" / "seamless.md").read_text()
    table = {
        row.group(1): tuple(re.findall(r"`(\w+)`", row.group(2)))
        for row in re.finditer(r"^\| `(R\d)` \| [^|]+ \|(.+)\|$", doc, re.MULTILINE)
    }
    assert table == {code: tuple(r.value for r in reasons) for code, reasons in REASONS.items()}
    assert all(reason.code in CODES and reason.message for reason in Reason)


def test_fields_added_later_keep_the_digest_of_events_that_do_not_use_them() -> None:
    """A result that says ``kind: win`` (the default) is the same event as one that says no kind,
    across the upgrade that added it; a jackpot, or a bet of a free round, is another event."""
    result = event_of(DIGESTS[7][0])
    plain = events.digest(events.parse(result))
    assert events.digest(events.parse({**result, "kind": "win"})) == plain
    assert events.digest(events.parse({**result, "kind": None})) == plain
    assert events.digest(events.parse({**result, "kind": "jackpot"})) != plain
    bet = event_of(DIGESTS[4][0])
    free = {**bet, "amount": 0, "free_round_id": "7"}
    assert events.digest(events.parse(free)) != events.digest(
        events.parse({**free, "free_round_id": "8"})
    )


def test_the_new_events_parse_with_their_optional_fields() -> None:
    end = events.parse({**BASE, "event": "end_round", "round_id": "r-1"})
    assert isinstance(end, events.EndRound) and end.game_id is None
    promo = {**BASE, "event": "promo_win", "transaction_id": "p-1", "promo_id": "cup-7",
             "amount": 500, "currency": "EUR"}  # fmt: skip
    parsed = events.parse(promo)
    assert isinstance(parsed, events.PromoWin) and parsed.round_id is None
    assert refusal({**promo, "amount": 0})[1] == "invalid_field"
    assert (
        refusal({k: v for k, v in promo.items() if k != "promo_id"})[2] == "missing field: promo_id"
    )
    assert refusal({**BASE, "event": "end_round"})[2] == "missing field: round_id"
