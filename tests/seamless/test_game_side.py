"""The game side of contract 1.1 through the real webhook: promo_win, end_round, result kinds and
bets of free rounds, each rule with its refusals, and the races that matter for them."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from typing import Any

import asyncpg
import httpx

from tests.fixtures.app import Table, TableFactory

GRANT = """
INSERT INTO free_rounds (player_id, provider, game_id, rounds, bet_value, currency, expires_at)
VALUES ($1, $2, $3, $4, 20, 'EUR', now() + $5::text::interval)
RETURNING id::text
"""


async def grant(
    pool: asyncpg.Pool,
    table: Table,
    rounds: int = 1,
    *,
    game: str = "slot-1",
    provider: str | None = None,
    expires: str = "1 day",
) -> str:
    """A free-round grant for the table's player, as the operator API makes one."""
    value: str = await pool.fetchval(
        GRANT, table.player_id, provider or table.provider, game, rounds, expires
    )
    return value


async def used(pool: asyncpg.Pool, grant_id: str) -> int:
    value: int = await pool.fetchval("SELECT used FROM free_rounds WHERE id = $1", int(grant_id))
    return value


async def posting(pool: asyncpg.Pool, table: Table, txn: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await pool.fetchrow(
        "SELECT kind, amount, delta, result_kind, free_round_id, ref_external_id, round_id"
        "  FROM ledger_transactions WHERE source = $1 AND external_id = $2",
        table.provider,
        txn,
    )
    return row


async def promo(table: Table, amount: int = 500, **extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "player_id": table.player_id,
        "transaction_id": "pw-" + secrets.token_hex(6),
        "promo_id": "spring-cup",
        "amount": amount,
        "currency": "EUR",
        **extra,
    }
    return await table.client.send("promo_win", **fields)


async def end_round(table: Table, round_id: str, **extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"player_id": table.player_id, "round_id": round_id, **extra}
    return await table.client.send("end_round", **fields)


def outcome(answer: dict[str, Any]) -> tuple[str, str]:
    return answer["code"], answer["reason"]


# --- promo_win ------------------------------------------------------------------------------------


async def test_a_promo_win_credits_outside_rounds_once(table: Table, pool: asyncpg.Pool) -> None:
    first = await promo(table, 700, transaction_id="pw-1")
    assert outcome(first) == ("R0", "ok") and first["balance"] == 10_700
    again = await promo(table, 700, transaction_id="pw-1")
    assert again["duplicate"] is True and again["transaction_id"] == first["transaction_id"]
    assert again["balance"] == 10_700
    other = await promo(table, 700, transaction_id="pw-1", promo_id="cash-drop")
    assert outcome(other) == ("R3", "idempotency_conflict")
    row = await posting(pool, table, "pw-1")
    assert row is not None
    assert (row["kind"], row["delta"], row["ref_external_id"]) == ("promo_win", 700, "spring-cup")
    # No round: a promotion is not play.
    rounds = await pool.fetchval(
        "SELECT count(*) FROM rounds WHERE player_id = $1", table.player_id
    )
    assert rounds == 0


async def test_a_promo_win_lands_for_a_blocked_player_without_a_session(
    table: Table, operator: Any
) -> None:
    await operator.call(
        "PUT", f"/v1/players/{table.player_id}/status", {"status": "blocked"}, expect=200
    )
    answer = await promo(table, 300)
    assert outcome(answer) == ("R0", "ok") and answer["balance"] == 10_300


async def test_a_promo_win_is_refused_for_players_out_of_scope_and_wrong_currency(
    table: Table, table_factory: TableFactory
) -> None:
    other = await table_factory()
    assert outcome(await promo(table, player_id=other.player_id)) == ("R3", "player_not_found")
    assert outcome(await promo(table, currency="USD")) == ("R3", "currency_mismatch")
    assert await table.balance() == 10_000


async def test_duplicate_promo_wins_at_once_post_once(table: Table, pool: asyncpg.Pool) -> None:
    answers = await asyncio.gather(
        *(promo(table, 250, transaction_id="pw-race") for _ in range(10))
    )
    assert all(outcome(a) == ("R0", "ok") for a in answers), answers
    assert sum(1 for a in answers if not a.get("duplicate")) == 1
    assert len({a["transaction_id"] for a in answers}) == 1
    assert await table.balance() == 10_250


# --- end_round ------------------------------------------------------------------------------------


async def test_end_round_closes_the_round_and_is_repeatable(
    table: Table, pool: asyncpg.Pool
) -> None:
    assert outcome(await table.bet(100, round_id="er-1")) == ("R0", "ok")
    ended = await end_round(table, "er-1", game_id="slot-1")
    assert outcome(ended) == ("R0", "ok") and ended["balance"] == 9_900
    assert outcome(await end_round(table, "er-1")) == ("R0", "ok")
    assert outcome(await table.bet(100, round_id="er-1")) == ("R1", "round_closed")
    assert outcome(await table.result(50, round_id="er-1")) == ("R1", "round_closed")
    state = await pool.fetchrow(
        "SELECT wallet_round_state(rounds) AS state, closed_by FROM rounds"
        " WHERE provider = $1 AND player_id = $2 AND round_id = 'er-1'",
        table.provider,
        table.player_id,
    )
    assert (state["state"], state["closed_by"]) == ("closed", "end_round")
    # One close in the round's history, however often it was said.
    closes = await pool.fetchval(
        "SELECT count(*) FROM round_events WHERE provider = $1 AND player_id = $2",
        table.provider,
        table.player_id,
    )
    assert closes == 1


async def test_end_round_of_an_unknown_round_changes_nothing(
    table: Table, pool: asyncpg.Pool
) -> None:
    assert outcome(await end_round(table, "never-played")) == ("R0", "ok")
    assert (
        await pool.fetchval("SELECT count(*) FROM rounds WHERE player_id = $1", table.player_id)
        == 0
    )
    assert outcome(await table.bet(100, round_id="never-played")) == ("R0", "ok")


async def test_end_round_needs_a_player_in_scope(table: Table, table_factory: TableFactory) -> None:
    other = await table_factory()
    answer = await end_round(table, "r1", player_id=other.player_id)
    assert outcome(answer) == ("R3", "player_not_found")


async def test_end_round_racing_a_result_fits_one_order(table: Table) -> None:
    for i in range(8):
        round_id = f"race-{i}"
        assert outcome(await table.bet(100, round_id=round_id)) == ("R0", "ok")
        before = await table.balance()
        won, ended = await asyncio.gather(
            table.result(40, round_id=round_id, round_closed=False), end_round(table, round_id)
        )
        assert outcome(ended) == ("R0", "ok")
        assert outcome(won) in {("R0", "ok"), ("R1", "round_closed")}
        credited = 40 if won["code"] == "R0" else 0
        assert await table.balance() == before + credited
        # Closed either way: by end_round, after the result or before it.
        assert outcome(await table.result(1, round_id=round_id)) == ("R1", "round_closed")


# --- result kinds --------------------------------------------------------------------------------


async def test_result_kinds_are_stored_and_their_corrections_carry_them(
    table: Table, pool: asyncpg.Pool
) -> None:
    for kind in ("win", "jackpot", "bonus", "free_round"):
        answer = await table.result(10, round_id=f"k-{kind}", txn=f"k-{kind}", kind=kind)
        assert outcome(answer) == ("R0", "ok")
        row = await posting(pool, table, f"k-{kind}")
        assert row is not None and row["result_kind"] == kind
    plain = await table.result(10, round_id="k-plain", txn="k-plain")
    assert outcome(plain) == ("R0", "ok")
    row = await posting(pool, table, "k-plain")
    assert row is not None and row["result_kind"] == "win"
    fix = await table.result_change("k-jackpot", 25, round_id="k-jackpot", txn="k-fix")
    assert outcome(fix) == ("R0", "ok")
    row = await posting(pool, table, "k-fix")
    assert row is not None and (row["result_kind"], row["delta"]) == ("jackpot", 15)
    # The same result with another kind is another result.
    conflict = await table.result(10, round_id="k-bonus", txn="k-bonus", kind="jackpot")
    assert outcome(conflict) == ("R3", "idempotency_conflict")
    same = await table.result(10, round_id="k-plain", txn="k-plain", kind="win")
    assert same.get("duplicate") is True


async def test_credits_are_counted_by_kind_in_the_metrics(
    table: Table, http: httpx.AsyncClient
) -> None:
    def counted(text: str, kind: str) -> float:
        line = f'wallet_seamless_credited_minor_units_total{{currency="EUR",kind="{kind}"}} '
        found = [row for row in text.splitlines() if row.startswith(line)]
        return float(found[0].split()[-1]) if found else 0.0

    before = (await http.get("/metrics")).text
    await table.result(70, round_id="m-1", kind="jackpot")
    await promo(table, 30)
    after = (await http.get("/metrics")).text
    assert counted(after, "jackpot") - counted(before, "jackpot") == 70
    assert counted(after, "promo_win") - counted(before, "promo_win") == 30


# --- free rounds ----------------------------------------------------------------------------------


async def test_a_free_round_bet_debits_nothing_and_uses_a_round(
    table: Table, pool: asyncpg.Pool
) -> None:
    grant_id = await grant(pool, table, rounds=2)
    bet = await table.bet(0, round_id="fr-1", txn="fr-b1", free_round_id=grant_id)
    assert outcome(bet) == ("R0", "ok") and bet["balance"] == 10_000
    assert await used(pool, grant_id) == 1
    row = await posting(pool, table, "fr-b1")
    assert row is not None
    assert (row["kind"], row["amount"], row["delta"], row["free_round_id"]) == (
        "bet",
        0,
        0,
        int(grant_id),
    )
    # Its win is a free-round win, though the provider said nothing of a kind.
    won = await table.result(300, round_id="fr-1", txn="fr-w1")
    assert won["balance"] == 10_300
    row = await posting(pool, table, "fr-w1")
    assert row is not None and row["result_kind"] == "free_round"
    # A retry of the bet uses no second round.
    again = await table.bet(0, round_id="fr-1", txn="fr-b1", free_round_id=grant_id)
    assert again.get("duplicate") is True
    assert await used(pool, grant_id) == 1
    # The same transaction_id as a paid bet, or on another grant, is another bet.
    assert outcome(await table.bet(5, round_id="fr-1", txn="fr-b1")) == (
        "R3",
        "idempotency_conflict",
    )


async def test_free_rounds_used_up_or_not_the_players_are_unavailable(
    table: Table, table_factory: TableFactory, pool: asyncpg.Pool
) -> None:
    grant_id = await grant(pool, table, rounds=1)
    assert outcome(await table.bet(0, round_id="u-1", free_round_id=grant_id)) == ("R0", "ok")
    unavailable = ("R1", "free_round_unavailable")
    assert outcome(await table.bet(0, round_id="u-2", free_round_id=grant_id)) == unavailable
    other_game = await grant(pool, table, game="other-game")
    assert outcome(await table.bet(0, round_id="u-3", free_round_id=other_game)) == unavailable
    expired = await grant(pool, table, expires="-1 second")
    assert outcome(await table.bet(0, round_id="u-4", free_round_id=expired)) == unavailable
    withdrawn = await grant(pool, table)
    await pool.execute("UPDATE free_rounds SET withdrawn_at = now() WHERE id = $1", int(withdrawn))
    assert outcome(await table.bet(0, round_id="u-5", free_round_id=withdrawn)) == unavailable
    other = await table_factory()
    foreign = await grant(pool, other)  # another player's, at another provider
    assert outcome(await table.bet(0, round_id="u-6", free_round_id=foreign)) == unavailable
    elsewhere = await grant(pool, table, provider=other.provider)
    assert outcome(await table.bet(0, round_id="u-7", free_round_id=elsewhere)) == unavailable
    for unknown in ("999999999", "not-a-grant", "9" * 40, "0" + grant_id):
        assert outcome(await table.bet(0, round_id="u-8", free_round_id=unknown)) == unavailable
    assert await table.balance() == 10_000
    assert [await used(pool, g) for g in (other_game, expired, withdrawn, foreign, elsewhere)] == [
        0
    ] * 5


async def test_a_free_round_bet_keeps_the_other_rules_of_a_bet(
    table: Table, pool: asyncpg.Pool, operator: Any
) -> None:
    grant_id = await grant(pool, table, rounds=5)
    bogus = await table.bet(0, round_id="o-1", free_round_id=grant_id, session_token="nope")
    assert outcome(bogus) == ("R2", "invalid_session")
    assert outcome(await table.bet(20, round_id="o-1", free_round_id=grant_id)) == (
        "R3",
        "invalid_field",
    )
    await operator.call(
        "PUT", f"/v1/players/{table.player_id}/status", {"status": "self_excluded"}, expect=200
    )
    assert outcome(await table.bet(0, round_id="o-1", free_round_id=grant_id)) == (
        "R1",
        "player_blocked",
    )
    assert await used(pool, grant_id) == 0


async def test_cancelling_a_free_round_bet_gives_the_round_back(
    table: Table, pool: asyncpg.Pool
) -> None:
    grant_id = await grant(pool, table, rounds=1)
    assert outcome(await table.bet(0, round_id="c-1", txn="c-b1", free_round_id=grant_id)) == (
        "R0",
        "ok",
    )
    cancelled = await table.cancel("c-b1", round_id="c-1", amount=0)
    assert outcome(cancelled) == ("R0", "ok") and cancelled["balance"] == 10_000
    assert await used(pool, grant_id) == 0
    # A repeat of the cancel gives nothing back twice.
    again = await table.cancel("c-b1", round_id="c-1", amount=0)
    assert again.get("duplicate") is True
    assert await used(pool, grant_id) == 0
    assert outcome(await table.bet(0, round_id="c-2", free_round_id=grant_id)) == ("R0", "ok")


async def test_two_bets_for_the_last_free_round_at_once_use_it_once(
    table: Table, pool: asyncpg.Pool
) -> None:
    for attempt in range(5):
        grant_id = await grant(pool, table, rounds=1)
        answers = await asyncio.gather(
            *(table.bet(0, round_id=f"l-{attempt}-{i}", free_round_id=grant_id) for i in range(4))
        )
        assert Counter(outcome(a) for a in answers) == {
            ("R0", "ok"): 1,
            ("R1", "free_round_unavailable"): 3,
        }, answers
        assert await used(pool, grant_id) == 1
    assert await table.balance() == 10_000


async def test_a_withdrawal_racing_free_round_bets_leaves_the_count_exact(
    table: Table, pool: asyncpg.Pool
) -> None:
    grant_id = await grant(pool, table, rounds=10)

    async def withdraw() -> None:
        await asyncio.sleep(0.005)
        await pool.execute(
            "UPDATE free_rounds SET withdrawn_at = now() WHERE id = $1", int(grant_id)
        )

    answers, _ = await asyncio.gather(
        asyncio.gather(
            *(table.bet(0, round_id=f"w-{i}", free_round_id=grant_id) for i in range(10))
        ),
        withdraw(),
    )
    taken = sum(1 for a in answers if a["code"] == "R0")
    assert all(outcome(a) in {("R0", "ok"), ("R1", "free_round_unavailable")} for a in answers)
    assert await used(pool, grant_id) == taken
    bets = await pool.fetchval(
        "SELECT count(*) FROM ledger_transactions WHERE free_round_id = $1", int(grant_id)
    )
    assert bets == taken
