"""Provider scope (contract 1 [1.1]): a provider sees and moves money only for players who have
had at least one session issued for that provider (ever, ended or not). Any other player is
answered exactly as an unknown player (R3 player_not_found; R2 invalid_session for login), so a
provider's key cannot read or credit the players of other providers."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from app import db
from app.client import ProviderClient
from app.db import Queries
from app.seamless.service import token_hash
from tests.conftest import Operator, Services, Table, TableFactory

Send = Callable[[str], Awaitable[dict[str, Any]]]


async def other_provider(operator: Operator, http: httpx.AsyncClient) -> ProviderClient:
    provider = await operator.provider()
    key = provider["keys"][0]["key"]
    return ProviderClient("http://wallet.test", provider["code"], key, http=http)


def events(client: ProviderClient, token: str) -> dict[str, Callable[[str], dict[str, Any]]]:
    """Every seamless event, for any player, as ``client``'s provider would send it."""

    def money(**fields: Any) -> dict[str, Any]:
        return {"round_id": "r-" + secrets.token_hex(4), "currency": "EUR", **fields}

    return {
        "balance": lambda p: {"player_id": p},
        "login": lambda p: {"player_id": p, "session_token": token},
        "logout": lambda p: {"player_id": p, "session_token": token},
        "bet": lambda p: money(
            player_id=p,
            session_token=token,
            transaction_id="bet-" + secrets.token_hex(6),
            game_id="slot-1",
            amount=100,
        ),
        "result": lambda p: money(
            player_id=p,
            transaction_id="res-" + secrets.token_hex(6),
            game_id="slot-1",
            amount=5_000,
        ),
        "cancel": lambda p: money(
            player_id=p,
            transaction_id="can-" + secrets.token_hex(6),
            ref_transaction_id="bet-" + secrets.token_hex(6),
        ),
        "result_change": lambda p: money(
            player_id=p,
            transaction_id="chg-" + secrets.token_hex(6),
            ref_transaction_id="res-" + secrets.token_hex(6),
            amount=9_000,
        ),
        # Refused while parsing (R3 invalid_field): such answers carry the balance of a player
        # the provider may see, so they must not for one it may not.
        "invalid bet": lambda p: money(
            player_id=p,
            session_token=token,
            transaction_id="bet-" + secrets.token_hex(6),
            game_id="slot-1",
            amount="100",
        ),
    }


def without_request_id(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != "request_id"}


async def test_another_providers_player_is_answered_as_unknown(
    table: Table, operator: Operator, http: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    """Provider B holds a live token of its own, for another player; it tries every event on
    the player of provider A, and gets what it would for a player who does not exist."""
    b = await other_provider(operator, http)
    own_player = await operator.player(1_000)
    b_token = await operator.session(own_player, b.provider)
    for token in (table.token, b_token):
        for name, fields in events(b, token).items():
            event = name.split()[-1]
            ghost = "ghost-" + secrets.token_hex(5)
            unknown = await b.send(event, **fields(ghost))
            answer = await b.send(event, **fields(table.player_id))
            assert without_request_id(answer) == without_request_id(unknown), (name, answer)
            assert "balance" not in answer and "currency" not in answer, (name, answer)
            assert answer["reason"] in ("player_not_found", "invalid_session", "invalid_field")
    assert await table.balance() == 10_000
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM ledger_transactions WHERE source = $1 AND player_id = $2",
            b.provider,
            table.player_id,
        )
        == 0
    )
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM rounds WHERE provider = $1 AND player_id = $2",
            b.provider,
            table.player_id,
        )
        == 0
    )
    # Provider A itself still sees its player, and B its own.
    assert (await table.client.send("balance", player_id=table.player_id))["balance"] == 10_000
    assert (await b.send("balance", player_id=own_player))["balance"] == 1_000


async def test_a_session_at_the_provider_brings_the_player_into_its_scope(
    table: Table, operator: Operator, http: httpx.AsyncClient
) -> None:
    b = await other_provider(operator, http)
    before = await b.send("balance", player_id=table.player_id)
    assert before["reason"] == "player_not_found"
    token = await operator.session(table.player_id, b.provider)
    answer = await b.send("balance", player_id=table.player_id)
    assert (answer["code"], answer["balance"], answer["currency"]) == ("R0", 10_000, "EUR")
    login = await b.send("login", player_id=table.player_id, session_token=token)
    assert login["code"] == "R0"
    bet_event = events(b, token)["bet"](table.player_id)
    bet = await b.send("bet", **bet_event)
    assert (bet["code"], bet["balance"]) == ("R0", 9_900)
    won = await b.send(
        "result",
        player_id=table.player_id,
        transaction_id="res-" + secrets.token_hex(6),
        round_id=bet_event["round_id"],
        game_id="slot-1",
        amount=250,
        currency="EUR",
    )
    assert (won["code"], won["balance"]) == ("R0", 10_150)
    # A's own token is still not B's: a session is per provider.
    refused = await b.send("login", player_id=table.player_id, session_token=table.token)
    assert (refused["code"], refused["reason"]) == ("R2", "invalid_session")


async def test_ended_and_expired_sessions_still_count(
    table_factory: TableFactory, pool: asyncpg.Pool
) -> None:
    """Wins and refunds land after the session ended, so the scope outlives every session."""
    logged_out, expired = await table_factory(), await table_factory()
    out = await logged_out.client.send(
        "logout", player_id=logged_out.player_id, session_token=logged_out.token
    )
    assert out["code"] == "R0"
    await pool.execute(
        "UPDATE sessions SET expires_at = now() - interval '1 second' WHERE token_hash = $1",
        token_hash(expired.token),
    )
    for t in (logged_out, expired):
        assert (await t.client.send("balance", player_id=t.player_id))["balance"] == 10_000
        credited = await t.result(700, round_id="late")
        assert (credited["code"], credited["balance"]) == ("R0", 10_700)
        again = await t.client.send("logout", player_id=t.player_id, session_token=t.token)
        assert again["code"] == "R0"


async def test_scope_is_backfilled_from_sessions_issued_before_it(
    services: Services, tmp_path: Path
) -> None:
    """Migration 010 gives every provider the players it had issued sessions for."""
    before = tmp_path / "sql"
    (before / "migrations").mkdir(parents=True)
    for migration in db.migrations():
        if migration.version < 10:
            shutil.copy(
                db.sql_dir() / "migrations" / f"{migration.name}.sql", before / "migrations"
            )
    name = "wallet_scope_" + secrets.token_hex(4)
    dsn = await db.ensure_database(services.database_url, name)
    conn = await asyncpg.connect(dsn)
    try:
        await db.migrate(conn, before)
        q = Queries.load()
        for provider in ("prov-a", "prov-b"):
            await conn.execute(q.insert_provider, provider, "before scope")
        for player in ("pl-a", "pl-b"):
            await conn.execute(q.insert_player, player, "EUR")
        for i, (player, provider) in enumerate(
            [("pl-a", "prov-a"), ("pl-a", "prov-a"), ("pl-b", "prov-b"), ("pl-a", "prov-b")]
        ):
            await conn.execute(
                "INSERT INTO sessions (token_hash, player_id, provider, game_id, expires_at) "
                "VALUES ($1, $2, $3, 'g', now() - interval '1 day')",
                token_hash(f"t{i}"),
                player,
                provider,
            )
        await db.migrate(conn)
        rows = await conn.fetch(
            "SELECT provider, player_id FROM provider_players ORDER BY provider, player_id"
        )
        assert [tuple(r) for r in rows] == [
            ("prov-a", "pl-a"),
            ("prov-b", "pl-a"),
            ("prov-b", "pl-b"),
        ]
        scoped = await conn.fetchrow("SELECT * FROM seamless_balance('prov-a', 'pl-b')")
        assert (scoped["reason"], scoped["balance"]) == ("player_not_found", None)
        assert (await conn.fetchrow("SELECT * FROM seamless_balance('prov-b', 'pl-a')"))[
            "reason"
        ] == "ok"
    finally:
        await conn.close()
        admin = await asyncpg.connect(services.database_url)
        try:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await admin.close()
