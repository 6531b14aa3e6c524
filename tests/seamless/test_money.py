"""Every money rule of the contract's section 1: bet, cancel, result, result_change."""

from __future__ import annotations

import secrets

from tests.fixtures.app import Operator, Table, TableFactory


def txn(prefix: str = "t") -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


# --- bet -------------------------------------------------------------------------------------


async def test_bet_debits_and_returns_wallet_transaction_id(table: Table) -> None:
    answer = await table.bet(300)
    assert answer["code"] == "R0" and answer["reason"] == "ok"
    assert answer["balance"] == 9_700 and answer["currency"] == "EUR"
    assert answer["player_id"] == table.player_id
    assert answer["transaction_id"].isdigit()
    assert "duplicate" not in answer


async def test_bet_repeat_is_duplicate_with_original_id(table: Table) -> None:
    t = txn()
    first = await table.bet(300, txn=t)
    again = await table.bet(300, txn=t)
    assert again["code"] == "R0" and again["duplicate"] is True
    assert again["transaction_id"] == first["transaction_id"]
    assert again["balance"] == 9_700
    assert await table.balance() == 9_700


async def test_bet_repeat_with_other_fields_is_idempotency_conflict(table: Table) -> None:
    t = txn()
    await table.bet(300, txn=t)
    for changed in ({"amount": 301}, {"round_id": "other"}):
        answer = await table.bet(changed.pop("amount", 300), txn=t, **changed)
        assert (answer["code"], answer["reason"]) == ("R3", "idempotency_conflict")
    assert await table.balance() == 9_700


async def test_transaction_id_is_unique_across_money_events(table: Table) -> None:
    t = txn()
    await table.bet(300, txn=t)
    answer = await table.result(300, txn=t)
    assert (answer["code"], answer["reason"]) == ("R3", "idempotency_conflict")


async def test_same_transaction_id_for_another_player_conflicts(
    table: Table, operator: Operator
) -> None:
    t = txn()
    await table.bet(100, txn=t)
    other = await operator.player(1_000)
    token = await operator.session(other, table.provider)
    answer = await table.client.send(
        "bet",
        player_id=other,
        session_token=token,
        transaction_id=t,
        round_id="r1",
        game_id="g",
        amount=100,
        currency="EUR",
    )
    assert (answer["code"], answer["reason"]) == ("R3", "idempotency_conflict")
    assert await operator.balance(other) == 1_000


async def test_bet_insufficient_funds_is_r4_with_balance(table: Table) -> None:
    answer = await table.bet(10_001)
    assert (answer["code"], answer["reason"]) == ("R4", "insufficient_funds")
    assert answer["balance"] == 10_000
    # Refused events post nothing and may be sent again once affordable.
    t = txn()
    assert (await table.bet(20_000, txn=t))["code"] == "R4"
    await table.operator.fund(table.player_id, 10_000)
    assert (await table.bet(20_000, txn=t))["code"] == "R0"
    assert await table.balance() == 0


async def test_bet_exact_balance_reaches_zero(table: Table) -> None:
    assert (await table.bet(10_000))["balance"] == 0
    assert (await table.bet(1))["code"] == "R4"


async def test_bet_currency_mismatch(table: Table) -> None:
    answer = await table.bet(100, currency="USD")
    assert (answer["code"], answer["reason"]) == ("R3", "currency_mismatch")
    assert await table.balance() == 10_000


async def test_bet_blocked_and_self_excluded_player(table: Table) -> None:
    for status in ("blocked", "self_excluded"):
        await table.operator.call(
            "PUT", f"/v1/players/{table.player_id}/status", {"status": status}, expect=200
        )
        answer = await table.bet(100)
        assert (answer["code"], answer["reason"]) == ("R1", "player_blocked")
    await table.operator.call(
        "PUT", f"/v1/players/{table.player_id}/status", {"status": "active"}, expect=200
    )
    assert (await table.bet(100))["code"] == "R0"


async def test_bet_over_wager_limit(table: Table) -> None:
    await table.operator.call(
        "PUT", f"/v1/players/{table.player_id}/limits", {"wager": {"daily": 1_000}}, expect=200
    )
    assert (await table.bet(600))["code"] == "R0"
    answer = await table.bet(500)
    assert (answer["code"], answer["reason"]) == ("R1", "limit_exceeded")
    assert (await table.bet(400))["code"] == "R0"
    assert await table.balance() == 9_000


async def test_bet_over_loss_limit_counts_wins(table: Table) -> None:
    await table.operator.call(
        "PUT", f"/v1/players/{table.player_id}/limits", {"loss": {"weekly": 1_000}}, expect=200
    )
    assert (await table.bet(800, round_id="a"))["code"] == "R0"
    assert (await table.result(0, round_id="a"))["code"] == "R0"
    assert (await table.bet(300, round_id="b"))["reason"] == "limit_exceeded"
    await table.result(500, round_id="x")  # a win lowers the net loss to 300
    assert (await table.bet(300, round_id="b"))["code"] == "R0"


async def test_bet_on_closed_round(table: Table) -> None:
    await table.bet(100, round_id="closed")
    await table.result(0, round_id="closed")
    answer = await table.bet(100, round_id="closed")
    assert (answer["code"], answer["reason"]) == ("R1", "round_closed")


async def test_round_may_hold_many_bets(table: Table) -> None:
    for _ in range(3):
        assert (await table.bet(100, round_id="multi"))["code"] == "R0"
    assert (await table.result(1_000, round_id="multi"))["balance"] == 10_700


async def test_bet_with_cancelled_transaction_id(table: Table) -> None:
    t = txn()
    cancel = await table.cancel(t)
    assert cancel["code"] == "R0" and "duplicate" not in cancel
    answer = await table.bet(100, txn=t)
    assert (answer["code"], answer["reason"]) == ("R1", "transaction_cancelled")
    assert await table.balance() == 10_000


# --- cancel ----------------------------------------------------------------------------------


async def test_cancel_refunds_bet_once(table: Table) -> None:
    t = txn()
    await table.bet(400, txn=t)
    first = await table.cancel(t, amount=400)
    assert first["code"] == "R0" and first["balance"] == 10_000
    again = await table.cancel(t)  # another cancel id for the same bet
    assert again["code"] == "R0" and again["duplicate"] is True
    assert again["transaction_id"] == first["transaction_id"]
    assert await table.balance() == 10_000


async def test_cancel_repeat_same_id_is_duplicate_and_conflict_on_change(table: Table) -> None:
    t, c = txn(), txn("c")
    await table.bet(400, txn=t)
    await table.cancel(t, txn=c)
    assert (await table.cancel(t, txn=c))["duplicate"] is True
    changed = await table.cancel(t, txn=c, round_id="elsewhere")
    assert (changed["code"], changed["reason"]) == ("R3", "idempotency_conflict")


async def test_cancel_amount_must_equal_bet(table: Table) -> None:
    t = txn()
    await table.bet(400, txn=t)
    answer = await table.cancel(t, amount=399)
    assert (answer["code"], answer["reason"]) == ("R3", "invalid_field")
    assert await table.balance() == 9_600


async def test_cancel_after_result_is_already_settled(table: Table) -> None:
    t = txn()
    await table.bet(400, txn=t, round_id="s")
    await table.result(0, round_id="s", round_closed=False)
    answer = await table.cancel(t, round_id="s")
    assert (answer["code"], answer["reason"]) == ("R1", "bet_already_settled")
    assert await table.balance() == 9_600


async def test_cancel_of_unknown_bet_is_remembered(table: Table) -> None:
    t = txn()
    answer = await table.cancel(t, amount=100)
    assert answer["code"] == "R0" and answer["balance"] == 10_000
    assert (await table.bet(100, txn=t))["reason"] == "transaction_cancelled"
    again = await table.cancel(t, amount=100)
    assert again["code"] == "R0" and again["duplicate"] is True


async def test_cancel_works_without_session_and_for_blocked_player(table: Table) -> None:
    t = txn()
    await table.bet(400, txn=t)
    await table.client.send("logout", player_id=table.player_id, session_token=table.token)
    await table.operator.call(
        "PUT", f"/v1/players/{table.player_id}/status", {"status": "blocked"}, expect=200
    )
    assert (await table.cancel(t))["balance"] == 10_000


async def test_cancel_reference_of_another_round_or_kind(table: Table) -> None:
    t = txn()
    await table.bet(400, txn=t, round_id="one")
    answer = await table.cancel(t, round_id="two")
    assert (answer["code"], answer["reason"]) == ("R1", "transaction_not_found")
    r = txn()
    await table.result(10, round_id="four", txn=r)
    answer = await table.cancel(r, round_id="four")
    assert answer["reason"] == "transaction_not_found"


async def test_cancel_currency_mismatch(table: Table) -> None:
    t = txn()
    await table.bet(400, txn=t)
    answer = await table.cancel(t, currency="GBP")
    assert (answer["code"], answer["reason"]) == ("R3", "currency_mismatch")


# --- result ----------------------------------------------------------------------------------


async def test_result_credits_and_zero_records_a_loss(table: Table) -> None:
    await table.bet(100, round_id="w")
    assert (await table.result(250, round_id="w"))["balance"] == 10_150
    await table.bet(100, round_id="l")
    lost = await table.result(0, round_id="l")
    assert lost["code"] == "R0" and lost["balance"] == 10_050
    assert lost["transaction_id"].isdigit()


async def test_result_without_bet_is_allowed(table: Table) -> None:
    assert (await table.result(500, round_id="free-spins"))["balance"] == 10_500


async def test_result_lands_for_blocked_player_after_logout(table: Table) -> None:
    await table.bet(100, round_id="late")
    await table.client.send("logout", player_id=table.player_id, session_token=table.token)
    await table.operator.call(
        "PUT", f"/v1/players/{table.player_id}/status", {"status": "self_excluded"}, expect=200
    )
    assert (await table.result(300, round_id="late"))["balance"] == 10_200


async def test_result_on_closed_round(table: Table) -> None:
    await table.bet(100, round_id="c")
    await table.result(0, round_id="c")
    answer = await table.result(50, round_id="c")
    assert (answer["code"], answer["reason"]) == ("R1", "round_closed")


async def test_result_round_open_until_closed(table: Table) -> None:
    await table.bet(100, round_id="o")
    assert (await table.result(10, round_id="o", round_closed=False))["code"] == "R0"
    assert (await table.bet(100, round_id="o"))["code"] == "R0"
    assert (await table.result(20, round_id="o"))["code"] == "R0"
    assert (await table.result(20, round_id="o"))["reason"] == "round_closed"


async def test_result_when_some_bets_cancelled(table: Table) -> None:
    a, b = txn(), txn()
    await table.bet(100, txn=a, round_id="x")
    await table.bet(100, txn=b, round_id="x")
    await table.cancel(a, round_id="x")
    assert (await table.result(0, round_id="x", round_closed=False))["code"] == "R0"


async def test_result_round_cancelled(table: Table) -> None:
    a = txn()
    await table.bet(100, txn=a, round_id="y")
    await table.cancel(a, round_id="y")
    answer = await table.result(500, round_id="y")
    assert (answer["code"], answer["reason"]) == ("R1", "round_cancelled")
    assert await table.balance() == 10_000


async def test_result_duplicate_and_conflict(table: Table) -> None:
    r = txn()
    first = await table.result(70, txn=r, round_id="d")
    again = await table.result(70, txn=r, round_id="d")
    assert again["duplicate"] is True and again["transaction_id"] == first["transaction_id"]
    assert (await table.result(71, txn=r, round_id="d"))["reason"] == "idempotency_conflict"
    assert await table.balance() == 10_070


async def test_result_currency_mismatch(table: Table) -> None:
    assert (await table.result(70, currency="JPY"))["reason"] == "currency_mismatch"


# --- result_change ---------------------------------------------------------------------------


async def change(
    table: Table,
    ref: str,
    amount: int,
    *,
    round_id: str = "rc",
    txn_id: str | None = None,
    **extra: object,
) -> dict[str, object]:
    return await table.result_change(
        ref, amount, round_id=round_id, txn=txn_id or txn("chg"), **extra
    )


async def test_result_change_posts_the_difference(table: Table) -> None:
    r = txn()
    await table.bet(100, round_id="rc")
    await table.result(500, txn=r, round_id="rc")  # 10_400
    up = await change(table, r, 800)
    assert up["code"] == "R0" and up["balance"] == 10_700
    down = await change(table, r, 200)  # from the current total 800
    assert down["balance"] == 10_100
    same = await change(table, r, 200)
    assert same["code"] == "R0" and same["balance"] == 10_100


async def test_result_change_duplicate_and_conflict(table: Table) -> None:
    r, c = txn(), txn("chg")
    await table.result(500, txn=r, round_id="rc")
    first = await change(table, r, 900, txn_id=c)
    again = await change(table, r, 900, txn_id=c)
    assert again["duplicate"] is True and again["transaction_id"] == first["transaction_id"]
    assert (await change(table, r, 901, txn_id=c))["reason"] == "idempotency_conflict"
    assert await table.balance() == 10_900


async def test_result_change_reference_must_be_a_result_of_player_and_round(
    table: Table, table_factory: TableFactory
) -> None:
    b = txn()
    await table.bet(100, txn=b, round_id="rc")
    assert (await change(table, b, 10))["reason"] == "transaction_not_found"
    assert (await change(table, "never-sent", 10))["reason"] == "transaction_not_found"
    r = txn()
    await table.result(100, txn=r, round_id="rc")
    assert (await change(table, r, 10, round_id="other"))["reason"] == "transaction_not_found"
    answer = await change(table, r, 10)
    assert answer["code"] == "R0"


async def test_result_change_negative_beyond_balance_is_r4(table: Table) -> None:
    r = txn()
    await table.result(5_000, txn=r, round_id="rc")  # 15_000
    await table.bet(14_000, round_id="next")  # 1_000 left
    answer = await change(table, r, 0)
    assert (answer["code"], answer["reason"]) == ("R4", "insufficient_funds")
    assert answer["balance"] == 1_000
    assert await table.balance() == 1_000


async def test_result_change_currency_mismatch(table: Table) -> None:
    r = txn()
    await table.result(5, txn=r, round_id="rc")
    assert (await change(table, r, 6, currency="USD"))["reason"] == "currency_mismatch"


# --- unknown players -------------------------------------------------------------------------


async def test_unknown_player_for_money_events(table: Table) -> None:
    base = dict(player_id="nobody-" + txn(), round_id="r", currency="EUR")
    answers = [
        await table.client.send(
            "bet", **base, session_token=table.token, transaction_id=txn(), game_id="g", amount=1
        ),
        await table.client.send("cancel", **base, transaction_id=txn(), ref_transaction_id="x"),
        await table.client.send("result", **base, transaction_id=txn(), game_id="g", amount=1),
        await table.client.send(
            "result_change", **base, transaction_id=txn(), ref_transaction_id="x", amount=1
        ),
    ]
    for answer in answers:
        assert (answer["code"], answer["reason"]) == ("R3", "player_not_found")
        assert "balance" not in answer
