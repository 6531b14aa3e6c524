"""Free-round grants over the operator API (issue 14, item 3; contract 2 [1.1]): grant, list,
read and withdraw, every refusal, the Idempotency-Key, the audit, and the races a withdrawal
can meet (another withdrawal, a bet taking a round).

The seamless bet that spends a round is not driven here: its effect on the grant (``used + 1``
under the guard of sql/migrations/016's comment) is written in SQL, as the bet function does."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import httpx
import pytest

from app.operator.free_rounds import STATES
from tests.fixtures.app import Operator, Table
from tests.operator.test_api import api_key, as_role

# The bet function's use of a round (the lead's seamless_bet), as sql/migrations/016 states it.
TAKE_ROUND = (
    "UPDATE free_rounds SET used = used + 1 WHERE id = $1 AND withdrawn_at IS NULL "
    "AND expires_at > now() AND used < rounds"
)


def key() -> dict[str, str]:
    return {"idempotency-key": "fr-" + secrets.token_hex(6)}


def later(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat().replace("+00:00", "Z")


def grant_body(provider: str, /, **fields: Any) -> dict[str, Any]:
    return {
        "provider": provider,
        "game_id": "slot-1",
        "rounds": 10,
        "bet_value": 20,
        "expires_at": later(days=7),
        **fields,
    }


async def grant(
    operator: Operator, player: str, provider: str, /, expect: int = 201, **fields: Any
) -> Any:
    return await operator.call(
        "POST",
        f"/v1/players/{player}/free-rounds",
        grant_body(provider, **fields),
        headers=key(),
        expect=expect,
    )


async def audit_of(operator: Operator, free_round_id: str) -> list[dict[str, Any]]:
    page = await operator.call("GET", f"/v1/audit?target=free_round:{free_round_id}", expect=200)
    return page["data"]  # type: ignore[no-any-return]


@pytest.fixture
async def setting(operator: Operator) -> tuple[str, str]:
    """A player in USD and a provider the player never had a session with."""
    return await operator.player(currency="USD"), (await operator.provider())["code"]


async def test_a_grant_is_active_in_the_players_currency_and_audited(
    operator: Operator, setting: tuple[str, str], pool: asyncpg.Pool
) -> None:
    player, provider = setting
    expires = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=123456)
    # Any zone is read as the instant it names, answered in UTC, kept to the millisecond.
    sent = expires.astimezone(timezone(timedelta(hours=2))).isoformat()
    granted = await grant(operator, player, provider, rounds=25, bet_value=50, expires_at=sent)
    free_round_id = granted.pop("free_round_id")
    assert free_round_id.isdigit() and isinstance(free_round_id, str)
    created_at = granted.pop("created_at")
    assert granted == {
        "player_id": player,
        "provider": provider,
        "game_id": "slot-1",
        "rounds": 25,
        "used": 0,
        "remaining": 25,
        "bet_value": 50,
        "currency": "USD",
        "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%S.123Z"),
        "withdrawn_at": None,
        "state": "active",
    }
    stored = await pool.fetchrow("SELECT * FROM free_rounds WHERE id = $1", int(free_round_id))
    assert stored["expires_at"] == expires.replace(microsecond=123000)
    assert stored["currency"] == "USD" and stored["player_id"] == player
    # A grant is legal before any session: the player is not in the provider's scope yet.
    scoped = await pool.fetchval(
        "SELECT count(*) FROM provider_players WHERE provider = $1 AND player_id = $2",
        provider,
        player,
    )
    assert scoped == 0
    (entry,) = await audit_of(operator, free_round_id)
    assert entry["action"] == "free_rounds.grant" and entry["actor"] == "admin:bootstrap"
    assert entry["before"] is None
    assert entry["after"]["player_id"] == player and entry["after"]["rounds"] == 25
    assert entry["after"]["free_round_id"] == free_round_id
    got = await operator.call(
        "GET", f"/v1/players/{player}/free-rounds/{free_round_id}", expect=200
    )
    assert got == {**granted, "free_round_id": free_round_id, "created_at": created_at}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"rounds": 5.0}, "rounds"),
        ({"rounds": "5"}, "rounds"),
        ({"rounds": True}, "rounds"),
        ({"rounds": 0}, "rounds"),
        ({"rounds": 100_001}, "rounds"),
        ({"bet_value": "20"}, "bet_value"),
        ({"bet_value": 20.5}, "bet_value"),
        ({"bet_value": 0}, "bet_value"),
        ({"bet_value": -5}, "bet_value"),
        ({"bet_value": 10**15 + 1}, "bet_value"),
        ({"provider": "bad code"}, "provider"),
        ({"game_id": ""}, "game_id"),
        ({"game_id": None}, "game_id"),
        ({"expires_at": 1893456000}, "expires_at"),
        ({"expires_at": "2030-01-01"}, "expires_at"),
        ({"expires_at": "2030-01-01T00:00:00"}, "expires_at"),  # no zone
        ({"expires_at": "2030-01-01 00:00:00Z"}, "expires_at"),
        ({"expires_at": "tomorrow"}, "expires_at"),
        ({"expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),  # past
        ({"expires_at": "now"}, "expires_at"),
        ({"expires_at": "2030-01-01T00:00:60Z"}, "expires_at"),
        ({"expires_at": "2030-01-01T00:00:00+24:00"}, "expires_at"),
        ({"expires_at": "9999-12-31T23:59:59-01:00"}, "expires_at"),  # past year 9999 in UTC
        ({"expires_at": "0001-01-01T00:00:00+01:00"}, "expires_at"),
    ],
)
async def test_a_bad_field_is_refused_naming_it(
    operator: Operator, setting: tuple[str, str], fields: dict[str, Any], field: str
) -> None:
    player, provider = setting
    refused = await grant(operator, player, provider, expect=400, **fields)
    assert refused["error"]["field"] == field, refused
    assert refused["error"]["code"] == "invalid_request"


async def test_expiry_must_be_ahead_and_within_366_days(
    operator: Operator, setting: tuple[str, str]
) -> None:
    player, provider = setting
    for expires_at, message in (
        (later(seconds=-1), "in the future"),
        (later(days=366, hours=1), "at most 366 days ahead"),
    ):
        refused = await grant(operator, player, provider, expect=400, expires_at=expires_at)
        assert message in refused["error"]["message"]
    missing = await operator.call(
        "POST",
        f"/v1/players/{player}/free-rounds",
        {k: v for k, v in grant_body(provider).items() if k != "expires_at"},
        headers=key(),
        expect=400,
    )
    assert missing["error"]["message"].startswith("expires_at is required")
    assert (await grant(operator, player, provider, expires_at=later(days=365)))["state"] == (
        "active"
    )
    assert (await grant(operator, player, provider, rounds=100_000))["remaining"] == 100_000
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=456789)
    lower = tomorrow.strftime("%Y-%m-%dt%H:%M:%S.456789z")  # RFC 3339 allows t and z
    kept = await grant(operator, player, provider, expires_at=lower)
    assert kept["expires_at"] == tomorrow.strftime("%Y-%m-%dT%H:%M:%S.456Z")  # floored to ms


async def test_unknown_player_and_provider_are_refused(
    operator: Operator, setting: tuple[str, str], pool: asyncpg.Pool
) -> None:
    player, provider = setting
    ghost = "ghost-" + secrets.token_hex(4)
    refused = await grant(operator, ghost, provider, expect=404)
    assert refused["error"]["code"] == "resource_not_found"
    unknown = await grant(operator, player, "no-such-provider", expect=400)
    assert unknown["error"]["field"] == "provider"
    for url in (f"/v1/players/{ghost}/free-rounds", f"/v1/players/{ghost}/free-rounds/1"):
        await operator.call("GET", url, expect=404)
    await operator.call("DELETE", f"/v1/players/{ghost}/free-rounds/1", expect=404)
    assert await pool.fetchval("SELECT count(*) FROM free_rounds WHERE player_id = $1", player) == 0


async def test_roles(operator: Operator, http: httpx.AsyncClient, setting: tuple[str, str]) -> None:
    player, provider = setting
    granted = await grant(operator, player, provider)
    one = f"/v1/players/{player}/free-rounds/{granted['free_round_id']}"
    for role in ("support", "finance"):
        other = as_role(http, await api_key(operator, role))
        refused = await other.call(
            "POST",
            f"/v1/players/{player}/free-rounds",
            grant_body(provider),
            headers=key(),
            expect=403,
        )
        assert refused["error"]["code"] == "forbidden_for_tenant"
        await other.call("DELETE", one, expect=403)
        assert (await other.call("GET", one, expect=200))["state"] == "active"
        listed = await other.call("GET", f"/v1/players/{player}/free-rounds", expect=200)
        assert [g["free_round_id"] for g in listed["data"]] == [granted["free_round_id"]]
    back_office = as_role(http, await api_key(operator, "operator"))
    assert (await grant(back_office, player, provider))["state"] == "active"
    assert (await back_office.call("DELETE", one, expect=200))["state"] == "withdrawn"


async def test_the_idempotency_key_gives_one_grant(
    operator: Operator, setting: tuple[str, str], pool: asyncpg.Pool
) -> None:
    player, provider = setting
    url = f"/v1/players/{player}/free-rounds"
    body = grant_body(provider)
    missing = await operator.call("POST", url, body, expect=400)
    assert missing["error"]["field"] == "Idempotency-Key"
    headers = key()
    first = await operator.call("POST", url, body, headers=headers, expect=201)
    assert await operator.call("POST", url, body, headers=headers, expect=201) == first
    conflict = await operator.call("POST", url, {**body, "rounds": 11}, headers=headers, expect=409)
    assert conflict["error"]["code"] == "idempotency_conflict"
    # A refusal is a first answer too: the same key and body get it again.
    past = {**body, "expires_at": "2020-01-01T00:00:00Z"}
    refusal = key()
    refused = await operator.call("POST", url, past, headers=refusal, expect=400)
    assert await operator.call("POST", url, past, headers=refusal, expect=400) == refused
    # Racing requests with one key: one grant, the same answer for all.
    raced = key()
    answers = await asyncio.gather(
        *(
            operator.http.post(url, json=body, headers={**operator.headers, **raced})
            for _ in range(4)
        )
    )
    assert [a.status_code for a in answers] == [201] * 4, [a.text for a in answers]
    assert all(a.json() == answers[0].json() for a in answers)
    assert await pool.fetchval("SELECT count(*) FROM free_rounds WHERE player_id = $1", player) == 2
    grants = await pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'free_rounds.grant' "
        "AND after ->> 'player_id' = $1",
        player,
    )
    assert grants == 2


async def test_states_remaining_and_the_state_filter(
    operator: Operator, setting: tuple[str, str], pool: asyncpg.Pool
) -> None:
    player, provider = setting
    ids = {
        state: (await grant(operator, player, provider, rounds=3))["free_round_id"]
        for state in STATES
    }
    for _ in range(2):
        assert await pool.execute(TAKE_ROUND, int(ids["active"])) == "UPDATE 1"
    for _ in range(3):
        assert await pool.execute(TAKE_ROUND, int(ids["used_up"])) == "UPDATE 1"
    assert await pool.execute(TAKE_ROUND, int(ids["used_up"])) == "UPDATE 0"  # none left
    await pool.execute(
        "UPDATE free_rounds SET used = 1, expires_at = now() - interval '1 second' WHERE id = $1",
        int(ids["expired"]),
    )
    assert await pool.execute(TAKE_ROUND, int(ids["expired"])) == "UPDATE 0"
    await pool.execute(TAKE_ROUND, int(ids["withdrawn"]))
    await operator.call(
        "DELETE", f"/v1/players/{player}/free-rounds/{ids['withdrawn']}", expect=200
    )
    base = f"/v1/players/{player}/free-rounds"
    listed = (await operator.call("GET", base, expect=200))["data"]
    assert [g["free_round_id"] for g in listed] == list(reversed(ids.values()))  # newest first
    seen = {g["state"]: (g["used"], g["remaining"]) for g in listed}
    assert seen == {"active": (2, 1), "used_up": (3, 0), "expired": (1, 0), "withdrawn": (1, 0)}
    for state, free_round_id in ids.items():
        only = (await operator.call("GET", f"{base}?state={state}", expect=200))["data"]
        assert [g["free_round_id"] for g in only] == [free_round_id]
        one = await operator.call("GET", f"{base}/{free_round_id}", expect=200)
        assert one["state"] == state
    refused = await operator.call("GET", f"{base}?state=spent", expect=400)
    assert refused["error"]["field"] == "state"
    # A cancel of a used-up grant's bet gives its round back: active again.
    await pool.execute("UPDATE free_rounds SET used = used - 1 WHERE id = $1", int(ids["used_up"]))
    again = await operator.call("GET", f"{base}/{ids['used_up']}", expect=200)
    assert (again["state"], again["remaining"]) == ("active", 1)


async def test_the_list_is_paged(operator: Operator, setting: tuple[str, str]) -> None:
    player, provider = setting
    made = [(await grant(operator, player, provider))["free_round_id"] for _ in range(5)]
    base = f"/v1/players/{player}/free-rounds"
    seen: list[str] = []
    cursor = ""
    while True:
        page = await operator.call("GET", f"{base}?limit=2{cursor}", expect=200)
        assert len(page["data"]) <= 2
        seen += [g["free_round_id"] for g in page["data"]]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert seen == list(reversed(made))
    refused = await operator.call("GET", f"{base}?cursor=nonsense", expect=400)
    assert refused["error"]["field"] == "cursor"


async def test_a_grant_is_read_only_under_its_player(
    operator: Operator, setting: tuple[str, str]
) -> None:
    player, provider = setting
    other = await operator.player()
    granted = await grant(operator, player, provider)
    free_round_id = granted["free_round_id"]
    for url in (
        f"/v1/players/{other}/free-rounds/{free_round_id}",
        f"/v1/players/{player}/free-rounds/999999999999",
        f"/v1/players/{player}/free-rounds/abc",
        f"/v1/players/{player}/free-rounds/{2**63}",
        f"/v1/players/{player}/free-rounds/-1",
        f"/v1/players/{player}/free-rounds/0{free_round_id}",  # its id, but not as given out
    ):
        missing = await operator.call("GET", url, expect=404)
        assert missing["error"]["code"] == "resource_not_found"
        await operator.call("DELETE", url, expect=404)
    bad = await operator.call("GET", f"/v1/players/{player}/free-rounds/a%20b", expect=400)
    assert bad["error"]["field"] == "free_round_id"
    assert (await operator.call("GET", f"/v1/players/{other}/free-rounds", expect=200)) == {
        "data": [],
        "next_cursor": None,
    }
    unchanged = await operator.call(
        "GET", f"/v1/players/{player}/free-rounds/{free_round_id}", expect=200
    )
    assert unchanged == granted


async def test_a_withdrawal_keeps_used_and_is_repeatable(
    operator: Operator, setting: tuple[str, str], pool: asyncpg.Pool
) -> None:
    player, provider = setting
    granted = await grant(operator, player, provider, rounds=4)
    free_round_id = granted["free_round_id"]
    await pool.execute(TAKE_ROUND, int(free_round_id))
    url = f"/v1/players/{player}/free-rounds/{free_round_id}"
    withdrawn = await operator.call("DELETE", url, expect=200)
    assert withdrawn["state"] == "withdrawn" and withdrawn["withdrawn_at"] is not None
    assert (withdrawn["used"], withdrawn["remaining"], withdrawn["rounds"]) == (1, 0, 4)
    assert await operator.call("DELETE", url, expect=200) == withdrawn  # again: as it is
    assert await operator.call("GET", url, expect=200) == withdrawn
    assert await pool.execute(TAKE_ROUND, int(free_round_id)) == "UPDATE 0"
    entries = await audit_of(operator, free_round_id)
    assert [e["action"] for e in entries] == ["free_rounds.withdraw", "free_rounds.grant"]
    assert (entries[0]["before"], entries[0]["after"]) == (
        {"state": "active", "used": 1, "remaining": 3},
        {"state": "withdrawn", "used": 1, "remaining": 0},
    )
    # With an Idempotency-Key, the same request again gets the first answer; another request
    # with the key is 409.
    other = await grant(operator, player, provider)
    headers = key()
    other_url = f"/v1/players/{player}/free-rounds/{other['free_round_id']}"
    first = await operator.call("DELETE", other_url, headers=headers, expect=200)
    assert await operator.call("DELETE", other_url, headers=headers, expect=200) == first
    conflict = await operator.call("DELETE", url, headers=headers, expect=409)
    assert conflict["error"]["code"] == "idempotency_conflict"


async def test_two_withdrawals_at_once_withdraw_once(
    operator: Operator, setting: tuple[str, str]
) -> None:
    player, provider = setting
    for _ in range(3):
        granted = await grant(operator, player, provider)
        url = f"/v1/players/{player}/free-rounds/{granted['free_round_id']}"
        answers = await asyncio.gather(
            *(operator.http.delete(url, headers=operator.headers) for _ in range(2))
        )
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        assert answers[0].json() == answers[1].json()
        assert answers[0].json()["state"] == "withdrawn"
        entries = await audit_of(operator, granted["free_round_id"])
        assert [e["action"] for e in entries] == ["free_rounds.withdraw", "free_rounds.grant"]


async def test_a_withdrawal_racing_a_bet_waits_for_its_row_lock(
    operator: Operator, setting: tuple[str, str], pool: asyncpg.Pool
) -> None:
    """A bet holding the grant's row lock: the withdrawal waits, then answers the round it took.
    A bet after the withdrawal takes no round."""
    player, provider = setting
    granted = await grant(operator, player, provider, rounds=2)
    free_round_id = int(granted["free_round_id"])
    url = f"/v1/players/{player}/free-rounds/{free_round_id}"
    async with pool.acquire() as bet:
        transaction = bet.transaction()
        await transaction.start()
        assert await bet.execute(TAKE_ROUND, free_round_id) == "UPDATE 1"
        withdrawal = asyncio.ensure_future(operator.http.delete(url, headers=operator.headers))
        await asyncio.sleep(0.3)
        assert not withdrawal.done()  # waiting on the bet's row lock
        await transaction.commit()
    answer = await withdrawal
    assert answer.status_code == 200, answer.text
    assert (answer.json()["state"], answer.json()["used"]) == ("withdrawn", 1)
    assert await pool.execute(TAKE_ROUND, free_round_id) == "UPDATE 0"
    assert await pool.fetchval("SELECT used FROM free_rounds WHERE id = $1", free_round_id) == 1
    # What the withdrawal found is what it locked: the bet's round already taken.
    withdrawal_entry, _ = await audit_of(operator, str(free_round_id))
    assert withdrawal_entry["before"] == {"state": "active", "used": 1, "remaining": 1}


async def test_a_grant_is_spent_by_the_providers_bets(table: Table) -> None:
    """End to end with the seamless bet (sql/functions/seamless.sql): a grant made here is what
    the provider's `bet.free_round_id` spends; cancelling gives the round back; a withdrawal
    ends it."""
    operator = table.operator
    granted = await grant(operator, table.player_id, table.provider, rounds=2, bet_value=100)
    free_round_id = granted["free_round_id"]
    url = f"/v1/players/{table.player_id}/free-rounds/{free_round_id}"
    balance = await table.balance()
    first = await table.bet(0, free_round_id=free_round_id, txn="fr-1")
    assert first["code"] == "R0", first
    assert await table.balance() == balance  # it debits nothing
    state = await operator.call("GET", url, expect=200)
    assert (state["used"], state["remaining"], state["state"]) == (1, 1, "active")
    # Another game, or a grant id that is no grant: no round taken.
    other_game = await table.bet(0, free_round_id=free_round_id, game_id="slot-2")
    assert other_game["reason"] == "free_round_unavailable", other_game
    assert (await table.bet(0, free_round_id="999999999"))["reason"] == "free_round_unavailable"
    assert (await table.bet(0, free_round_id=free_round_id, round_id="r2"))["code"] == "R0"
    used_up = await operator.call("GET", url, expect=200)
    assert (used_up["used"], used_up["remaining"], used_up["state"]) == (2, 0, "used_up")
    assert (await table.cancel("fr-1"))["code"] == "R0"
    back = await operator.call("GET", url, expect=200)
    assert (back["used"], back["remaining"], back["state"]) == (1, 1, "active")
    withdrawn = await operator.call("DELETE", url, expect=200)
    assert (withdrawn["used"], withdrawn["remaining"], withdrawn["state"]) == (1, 0, "withdrawn")
    refused = await table.bet(0, free_round_id=free_round_id, round_id="r3")
    assert (refused["code"], refused["reason"]) == ("R1", "free_round_unavailable")
    assert await table.balance() == balance
