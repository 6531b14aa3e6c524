"""The operator API of issue 3: roles on every route, API keys, audit, limits with cooling-off,
paged lists and filters, reports, and the finance CLI."""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from app.admin import site as admin_site
from app.main import PERMISSIONS
from app.operator.postings import KINDS
from app.web.auth import ROLES
from tests.fixtures.app import Operator, Table, TableFactory
from tests.support.cli import wallet_cli
from tests.support.keys import ADMIN_KEY


async def api_key(operator: Operator, role: str) -> str:
    created = await operator.call(
        "POST", "/v1/api-keys", {"role": role, "name": f"{role} key"}, expect=201
    )
    assert created["key"].startswith(f"wk_{role}_") and created["id"].startswith("ak_")
    return created["key"]  # type: ignore[no-any-return]


def as_role(http: httpx.AsyncClient, key: str) -> Operator:
    op = Operator(http)
    op.headers = {"authorization": f"Bearer {key}"}
    return op


async def flush_calls(asgi: Any) -> None:
    await asgi.state["wallet"].calls.flush()


# --- roles ---------------------------------------------------------------------------------------


# Routes that take no API key: health, metrics, documentation, and the two webhooks that are
# authenticated by their own signatures.
PUBLIC_ROUTES = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/assets/{name}"),
    ("GET", "/docs/errors"),
    ("POST", "/v1/seamless/{provider}"),
    ("POST", "/v1/psp/{psp}/webhook"),
}


def app_routes(asgi: Any) -> set[tuple[str, str]]:
    """Every (method, path template) the app answers, HEAD aside; not the back office's pages
    (tests/admin/), which take a session instead of a key."""
    found = set()
    for route in asgi.app.routes:
        if route in admin_site.routes:
            continue
        for method in route.methods or ():
            if method != "HEAD":
                found.add((method, route.path))
    return found


async def test_every_route_enforces_its_roles(
    operator: Operator, http: httpx.AsyncClient, table: Table, asgi: Any
) -> None:
    """The whole matrix: every route of the app, called by every role, by the bootstrap admin
    key, and with every kind of missing or bad credential."""
    # PERMISSIONS is the matrix: every route but the public ones is in it, with its roles.
    assert app_routes(asgi) == set(PERMISSIONS) | PUBLIC_ROUTES
    assert all(roles and roles <= set(ROLES) for roles in PERMISSIONS.values())
    keys = {role: await api_key(operator, role) for role in ROLES}
    revoked = await operator.call(
        "POST", "/v1/api-keys", {"role": "admin", "name": "revoked admin"}, expect=201
    )
    await operator.call("DELETE", f"/v1/api-keys/{revoked['id']}", expect=200)
    refused = {
        "no header": None,
        "unknown key": "Bearer wk_admin_" + secrets.token_urlsafe(32),
        "revoked admin key": f"Bearer {revoked['key']}",
        "another scheme": "Basic " + base64.b64encode(f"admin:{ADMIN_KEY}".encode()).decode(),
        "no scheme": ADMIN_KEY,
        "empty bearer": "Bearer ",
        "key with a suffix": f"Bearer {keys['admin']}x",
    }
    spare = (await operator.provider())["code"]
    values = {
        "player_id": table.player_id,
        "code": spare,
        "key_id": "ak_000000000000",
        "payment_id": "dep_00000000000000000000",
        "event_id": "evt_0",
        "free_round_id": "1",
        "provider": table.provider,
        "round_id": "r-none",
    }
    for (method, path), allowed in PERMISSIONS.items():
        url = path.format(**values)

        async def call(authorization: str | None, url: str = url, method: str = method) -> Any:
            headers = {"idempotency-key": secrets.token_hex(4)}
            if authorization is not None:
                headers["authorization"] = authorization
            body = {} if method in ("POST", "PUT") else None
            return await http.request(method, url, json=body, headers=headers)

        for role in ROLES:
            response = await call(f"Bearer {keys[role]}")
            if role in allowed:
                assert response.status_code not in (401, 403), (method, path, role, response.text)
            else:
                assert response.status_code == 403, (method, path, role, response.text)
                error = response.json()["error"]
                assert error["code"] == "forbidden_for_tenant" and role in error["message"]
        bootstrap = await call(f"Bearer {ADMIN_KEY}")
        assert bootstrap.status_code not in (401, 403), (method, path, bootstrap.text)
        for name, authorization in refused.items():
            response = await call(authorization)
            assert response.status_code == 401, (method, path, name, response.text)
            assert response.json()["error"]["code"] == "authentication_failed"


async def test_support_is_read_only(
    operator: Operator, http: httpx.AsyncClient, table: Table
) -> None:
    support = as_role(http, await api_key(operator, "support"))
    player = await support.call("GET", f"/v1/players/{table.player_id}", expect=200)
    assert player["balance"] == 10_000
    await support.call(
        "PUT", f"/v1/players/{table.player_id}/status", {"status": "blocked"}, expect=403
    )
    await support.call(
        "POST",
        f"/v1/players/{table.player_id}/adjustments",
        {"amount": 5, "reason": "x"},
        headers={"idempotency-key": "k"},
        expect=403,
    )
    assert await operator.balance(table.player_id) == 10_000


async def test_revoked_key_stops_working(operator: Operator, http: httpx.AsyncClient) -> None:
    created = await operator.call(
        "POST", "/v1/api-keys", {"role": "finance", "name": "temp"}, expect=201
    )
    finance = as_role(http, created["key"])
    await finance.call("GET", "/v1/ledger/check", expect=200)
    listed = await operator.call("GET", "/v1/api-keys?limit=200", expect=200)
    mine = [k for k in listed["data"] if k["id"] == created["id"]]
    assert mine and "key" not in mine[0] and "key_hash" not in mine[0]
    revoked = await operator.call("DELETE", f"/v1/api-keys/{created['id']}", expect=200)
    assert revoked["revoked_at"] is not None
    await finance.call("GET", "/v1/ledger/check", expect=401)
    await operator.call("DELETE", f"/v1/api-keys/{created['id']}", expect=404)


async def test_api_key_validation(operator: Operator) -> None:
    bad_role = await operator.call(
        "POST", "/v1/api-keys", {"role": "root", "name": "x"}, expect=400
    )
    assert bad_role["error"]["field"] == "role"
    no_name = await operator.call("POST", "/v1/api-keys", {"role": "support"}, expect=400)
    assert no_name["error"]["field"] == "name"


async def test_keys_are_stored_hashed(operator: Operator, pool: asyncpg.Pool) -> None:
    key = await api_key(operator, "support")
    rows = await pool.fetch("SELECT key_hash FROM api_keys")
    assert all(key.encode() not in bytes(r["key_hash"]) for r in rows)
    assert len(bytes(rows[0]["key_hash"])) == 32


# --- audit ---------------------------------------------------------------------------------------


async def test_administrative_actions_are_audited(
    operator: Operator, table: Table, pool: asyncpg.Pool
) -> None:
    target = f"player:{table.player_id}"
    await operator.call(
        "PUT", f"/v1/players/{table.player_id}/status", {"status": "blocked"}, expect=200
    )
    await operator.call(
        "PUT", f"/v1/players/{table.player_id}/limits", {"wager": {"daily": 500}}, expect=200
    )
    await operator.fund(table.player_id, 250)
    entries = (await operator.call("GET", f"/v1/audit?target={target}", expect=200))["data"]
    by_action = {e["action"]: e for e in entries}
    assert set(by_action) >= {"player.create", "player.status", "player.limits", "player.adjust"}
    status = by_action["player.status"]
    assert (status["before"], status["after"]) == ({"status": "active"}, {"status": "blocked"})
    assert status["actor"] == "admin:bootstrap" and status["request_id"].startswith("req_")
    limits = by_action["player.limits"]
    assert limits["after"]["limits"]["wager"] == {"daily": 500}
    adjust = [e for e in entries if e["action"] == "player.adjust"][0]
    assert adjust["after"]["balance"] == 10_250 and adjust["before"]["balance"] == 10_000

    rotated = await operator.call("POST", f"/v1/providers/{table.provider}/keys", expect=201)
    rotation = (
        await operator.call("GET", f"/v1/audit?target=provider:{table.provider}", expect=200)
    )["data"]
    assert [e["action"] for e in rotation] == ["provider.rotate_key", "provider.create"]
    # The audit names keys by id; the secrets themselves never enter it.
    audit_text = orjson.dumps(rotation).decode()
    assert rotated["keys"][0]["key_id"] in audit_text
    assert rotated["keys"][0]["key"] not in audit_text
    with pytest.raises(asyncpg.RestrictViolationError):
        await pool.execute("DELETE FROM audit_log WHERE false")


async def test_audit_records_the_api_key_actor(
    operator: Operator, http: httpx.AsyncClient, table: Table
) -> None:
    created = await operator.call(
        "POST", "/v1/api-keys", {"role": "operator", "name": "desk"}, expect=201
    )
    desk = as_role(http, created["key"])
    await desk.call(
        "PUT", f"/v1/players/{table.player_id}/status", {"status": "self_excluded"}, expect=200
    )
    entries = (
        await operator.call(
            "GET", f"/v1/audit?target=player:{table.player_id}&action=player.status", expect=200
        )
    )["data"]
    assert entries[0]["actor"] == f"apikey:{created['id']}"
    made = (await operator.call("GET", f"/v1/audit?target=apikey:{created['id']}", expect=200))[
        "data"
    ]
    assert made[0]["action"] == "apikey.create" and made[0]["after"]["role"] == "operator"


# --- limits with cooling-off ---------------------------------------------------------------------


async def test_limit_raise_waits_and_lowering_is_immediate(
    table: Table, pool: asyncpg.Pool
) -> None:
    path = f"/v1/players/{table.player_id}/limits"
    await table.operator.call("PUT", path, {"wager": {"daily": 300}}, expect=200)
    raised = await table.operator.call("PUT", path, {"wager": {"daily": 5_000}}, expect=200)
    assert raised["limits"]["wager"] == {"daily": 300}
    assert raised["pending_limits"][0]["amount"] == 5_000
    assert (await table.bet(400))["reason"] == "limit_exceeded"  # the raise has not begun
    # Time passes: the cooling-off ends and the raise applies by itself.
    await pool.execute(
        "UPDATE player_limits SET next_from = now() - interval '1 second' WHERE player_id = $1",
        table.player_id,
    )
    assert (await table.bet(400))["code"] == "R0"
    player = await table.operator.call("GET", f"/v1/players/{table.player_id}", expect=200)
    assert player["limits"]["wager"] == {"daily": 5_000} and player["pending_limits"] == []
    # Lowering is at once and cancels a pending raise.
    await table.operator.call("PUT", path, {"wager": {"daily": 9_000}}, expect=200)
    lowered = await table.operator.call("PUT", path, {"wager": {"daily": 450}}, expect=200)
    assert lowered["limits"]["wager"] == {"daily": 450} and lowered["pending_limits"] == []
    assert (await table.bet(100))["reason"] == "limit_exceeded"


async def test_limit_removal_waits_then_lifts(table: Table, pool: asyncpg.Pool) -> None:
    path = f"/v1/players/{table.player_id}/limits"
    await table.operator.call("PUT", path, {"loss": {"monthly": 100}}, expect=200)
    await table.operator.call("PUT", path, {"loss": {"monthly": None}}, expect=200)
    assert (await table.bet(200))["reason"] == "limit_exceeded"
    await pool.execute(
        "UPDATE player_limits SET next_from = now() - interval '1 second' WHERE player_id = $1",
        table.player_id,
    )
    assert (await table.bet(200))["code"] == "R0"
    player = await table.operator.call("GET", f"/v1/players/{table.player_id}", expect=200)
    assert player["limits"]["loss"] == {}
    # A new limit after the lifted one applies at once.
    await table.operator.call("PUT", path, {"loss": {"monthly": 150}}, expect=200)
    assert (await table.bet(200))["reason"] == "limit_exceeded"


# --- lists --------------------------------------------------------------------------------


async def test_transactions_are_paged_newest_first(table: Table) -> None:
    for i in range(5):
        await table.bet(10 + i, round_id=f"p{i}")
    seen: list[dict[str, Any]] = []
    url = f"/v1/players/{table.player_id}/transactions?limit=2"
    cursor = None
    while True:
        page = await table.operator.call(
            "GET", url + (f"&cursor={cursor}" if cursor else ""), expect=200
        )
        seen += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [t["kind"] for t in seen] == ["bet"] * 5 + ["adjustment"]
    assert [t["amount"] for t in seen[:5]] == [14, 13, 12, 11, 10]
    balances = [t["balance_after"] for t in seen]
    assert balances == sorted(balances)  # newest first: each one lower than the one before
    assert seen[0]["provider"] == table.provider and seen[-1]["provider"] is None


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=x", "limit"),
        ("cursor=nonsense", "cursor"),
        ("from=yesterday", "from"),
        ("to=2026-01-01T00:00:00", "to"),
    ],
)
async def test_list_parameters_are_validated(table: Table, query: str, field: str) -> None:
    answer = await table.operator.call(
        "GET", f"/v1/players/{table.player_id}/transactions?{query}", expect=400
    )
    assert answer["error"]["field"] == field


async def test_calls_and_failures_filters(
    table_factory: TableFactory, operator: Operator, asgi: Any
) -> None:
    a = await table_factory(balance=100)
    await a.bet(50)  # R0
    await a.bet(500)  # R4: not a failure
    await a.bet(10, currency="USD")  # R3
    await a.client.send("balance", player_id="ghost-9")  # R3 player_not_found, other player
    await flush_calls(asgi)
    calls = (await operator.call("GET", f"/v1/webhooks/calls?provider={a.provider}", expect=200))[
        "data"
    ]
    assert [c["code"] for c in calls] == ["R3", "R3", "R4", "R0"]
    assert calls[-1]["wallet_transaction_id"] and calls[-1]["latency_us"] > 0
    failures = (
        await operator.call("GET", f"/v1/webhooks/failures?provider={a.provider}", expect=200)
    )["data"]
    assert [f["reason"] for f in failures] == ["player_not_found", "currency_mismatch"]
    mine = (
        await operator.call(
            "GET",
            f"/v1/webhooks/calls?provider={a.provider}&player_id={a.player_id}&event=bet&code=R4",
            expect=200,
        )
    )["data"]
    assert len(mine) == 1 and mine[0]["reason"] == "insufficient_funds"
    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    later = await operator.call(
        "GET", f"/v1/webhooks/calls?provider={a.provider}&from={future}", expect=200
    )
    assert later["data"] == []
    bad = await operator.call("GET", "/v1/webhooks/calls?code=R9", expect=400)
    assert bad["error"]["field"] == "code"


async def test_players_and_providers_lists(operator: Operator) -> None:
    blocked = await operator.player()
    await operator.call("PUT", f"/v1/players/{blocked}/status", {"status": "blocked"}, expect=200)
    page = await operator.call("GET", "/v1/players?status=blocked&limit=200", expect=200)
    assert blocked in {p["player_id"] for p in page["data"]}
    assert all(p["status"] == "blocked" for p in page["data"])
    providers = await operator.call("GET", "/v1/providers?limit=1", expect=200)
    assert len(providers["data"]) == 1 and providers["next_cursor"]


# --- reports -------------------------------------------------------------------------------------


DAILY_FIELDS_1_0 = {"provider", "currency", "bet_count", "bet_sum", "result_count", "win_sum",
                    "cancel_count", "cancel_sum", "ggr"}  # fmt: skip


async def test_daily_report_per_provider(table: Table) -> None:
    b1 = "b-" + secrets.token_hex(4)
    await table.bet(1_000, round_id="a", txn=b1)
    await table.cancel(b1, round_id="a")  # refund 1000
    await table.bet(400, round_id="b")
    await table.result(150, round_id="b")
    await table.bet(600, round_id="c")
    await table.result(0, round_id="c")
    today = datetime.now(UTC).date().isoformat()
    report = await table.operator.call("GET", f"/v1/reports/daily?date={today}", expect=200)
    (row,) = [r for r in report["rows"] if r["provider"] == table.provider]
    # The fields of before the kinds of credit keep their meaning (tests/operator/test_kinds.py
    # has the others).
    assert {k: v for k, v in row.items() if k in DAILY_FIELDS_1_0} == {
        "provider": table.provider,
        "currency": "EUR",
        "bet_count": 3,
        "bet_sum": 2_000,
        "result_count": 2,
        "win_sum": 150,
        "cancel_count": 1,
        "cancel_sum": 1_000,
        "ggr": 850,
    }
    assert report["time_zone"] == "UTC"
    bad = await table.operator.call("GET", "/v1/reports/daily?date=2026-13-01", expect=400)
    assert bad["error"]["field"] == "date"


async def test_statement_adds_up(table: Table) -> None:
    start = datetime.now(UTC)
    await asyncio.sleep(0.01)
    await table.bet(300, round_id="s")
    await table.result(1_000, round_id="s")
    await asyncio.sleep(0.01)
    statement = await table.operator.call(
        "GET",
        f"/v1/players/{table.player_id}/statement?from={start.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}",
        expect=200,
    )
    assert statement["opening_balance"] == 10_000 and statement["closing_balance"] == 10_700
    moved = sum(t["total"] for t in statement["totals"].values())
    assert statement["opening_balance"] + moved == statement["closing_balance"]
    assert statement["totals"]["bet"] == {"count": 1, "total": -300}


# --- the finance CLI ----------------------------------------------------------------------


def wallet_json(settings: Any, *args: str) -> Any:
    done = wallet_cli(settings.database_url, settings.redis_url, *args)
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout)


async def test_cli_apikey_and_reports(
    settings: Any, table: Table, http: httpx.AsyncClient, operator: Operator
) -> None:
    await table.bet(100, round_id="cli")
    created = await asyncio.to_thread(
        wallet_json, settings, "apikey", "create", "--role", "support"
    )
    support = as_role(http, created["key"])
    await support.call("GET", f"/v1/players/{table.player_id}", expect=200)
    audit = (await operator.call("GET", f"/v1/audit?target=apikey:{created['id']}", expect=200))[
        "data"
    ]
    assert audit[0]["actor"].startswith("cli:")
    report = await asyncio.to_thread(wallet_json, settings, "report", "daily")
    assert any(r["provider"] == table.provider and r["bet_sum"] == 100 for r in report["rows"])
    statement = await asyncio.to_thread(
        wallet_json, settings, "report", "statement", table.player_id
    )
    assert statement["closing_balance"] == 9_900


# --- typed messages: every bad field named, lengths counted as sent --------------------------


async def test_a_400_names_every_bad_field(operator: Operator) -> None:
    """issue 13: ``POST /v1/players {}`` named only the first missing field."""
    answer = await operator.call("POST", "/v1/players", {}, expect=400)
    error = answer["error"]
    assert error["field"] == "player_id"
    assert [e["field"] for e in error["errors"]] == ["player_id", "currency"]
    assert all(e["message"].startswith(e["field"] + " ") for e in error["errors"])


async def test_nested_bad_fields_are_named_by_their_path(table: Table) -> None:
    """A limits change with a bad amount and an unknown period: both named, dotted."""
    answer = await table.operator.call(
        "PUT",
        f"/v1/players/{table.player_id}/limits",
        {"wager": {"daily": -1}, "loss": {"hourly": 5}, "deposit": None},
        expect=400,
    )
    fields = [e["field"] for e in answer["error"]["errors"]]
    assert sorted(fields) == ["deposit", "loss.hourly", "wager.daily"]
    (unknown,) = (e for e in answer["error"]["errors"] if e["field"] == "loss.hourly")
    assert "daily, weekly, monthly" in unknown["message"]


@pytest.mark.parametrize(
    "name",
    [
        " " * 101 + "n" * 200,  # 301 characters sent; 200 once stripped: was accepted
        "n" * 201,
        " " * 3,
        "",
    ],
)
async def test_a_provider_name_is_at_most_200_characters_as_sent(
    operator: Operator, name: str
) -> None:
    """issue 13: the length was checked after stripping spaces, so the document's maxLength
    (200) was not what the code did."""
    body = {"code": "p-" + secrets.token_hex(4), "name": name}
    answer = await operator.call("POST", "/v1/providers", body, expect=400)
    assert answer["error"]["field"] == "name"


async def test_posting_kinds_are_those_the_ledger_allows(pool: asyncpg.Pool) -> None:
    """The kinds a Transaction may show are the ones ledger_transactions' CHECK allows (the
    database is the last guard, so its list is the one to match)."""
    check = await pool.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conname = 'ledger_transactions_kind_check'"
    )
    assert set(re.findall(r"'([a-z_]+)'", check)) == set(KINDS)
