"""Provider reconciliation: a game provider's CSV transaction report for one UTC day against the
ledger, over the API and as ``wallet reconcile --provider``."""

from __future__ import annotations

import secrets
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from app.config import Settings
from app.operator.reconciliation import DISCREPANCIES, HEADER, MAX_FAULTS, MAX_LISTED
from tests.fixtures.app import Operator, Table, TableFactory, start_app
from tests.support.cli import wallet_cli
from tests.support.keys import ADMIN_KEY

CSV = {"content-type": "text/csv"}
TODAY = datetime.now(UTC).date().isoformat()


def csv(*lines: str) -> bytes:
    return "\n".join([",".join(HEADER), *lines, ""]).encode()


async def send(
    operator: Operator, provider: str, body: bytes, *, date: str | None = TODAY, expect: int = 200
) -> Any:
    query = f"?date={date}" if date else ""
    response = await operator.http.post(
        f"/v1/providers/{provider}/reconciliation{query}",
        content=body,
        headers={**operator.headers, **CSV},
    )
    assert response.status_code == expect, response.text
    return response.json()


async def played(table: Table, pool: asyncpg.Pool) -> dict[str, str]:
    """A day of play: what each transaction id is (the report below is written against it)."""
    ids = {
        name: f"{name}-{secrets.token_hex(4)}"
        for name in (
            "bet1",
            "res1",
            "bet2",
            "can2",
            "tomb",
            "bet3",
            "res3",
            "chg3",
            "promo",
            "bet4",
            "bet5",
            "res5",
            "bet6",
            "bet7",
            "bet8",
            "bet9",
            "bet10",
        )
    }
    assert (await table.bet(500, round_id="r1", txn=ids["bet1"]))["code"] == "R0"
    assert (await table.result(800, round_id="r1", txn=ids["res1"]))["code"] == "R0"
    assert (await table.bet(300, round_id="r2", txn=ids["bet2"]))["code"] == "R0"
    assert (await table.cancel(ids["bet2"], round_id="r2", txn=ids["can2"]))["code"] == "R0"
    # A cancel of a bet never posted: a tombstone, delta 0, stored without amount.
    assert (await table.cancel("ghost", round_id="r9", txn=ids["tomb"]))["code"] == "R0"
    assert (await table.bet(200, round_id="r3", txn=ids["bet3"]))["code"] == "R0"
    assert (await table.result(100, round_id="r3", txn=ids["res3"], round_closed=False))[
        "code"
    ] == "R0"
    changed = await table.result_change(ids["res3"], 150, round_id="r3", txn=ids["chg3"])
    assert changed["code"] == "R0", changed
    promo = await table.client.send(
        "promo_win",
        player_id=table.player_id,
        transaction_id=ids["promo"],
        promo_id="drop-1",
        amount=1000,
        currency="EUR",
    )
    assert promo["code"] == "R0", promo
    for n, amount in (("bet4", 40), ("bet6", 60), ("bet7", 70), ("bet8", 80), ("bet9", 90)):
        assert (await table.bet(amount, round_id="r4", txn=ids[n]))["code"] == "R0"
    assert (await table.bet(50, round_id="r5", txn=ids["bet5"]))["code"] == "R0"
    assert (await table.result(0, round_id="r5", txn=ids["res5"]))["code"] == "R0"
    assert (await table.bet(11, round_id="r6", txn=ids["bet10"]))["code"] == "R0"
    # The operator settles round r6, stale: the wallet's own refund, no provider line names it.
    await pool.execute(
        "UPDATE rounds SET created_at = now() - interval '2 days' "
        "WHERE provider = $1 AND player_id = $2 AND round_id = 'r6'",
        table.provider,
        table.player_id,
    )
    await table.operator.call(
        "POST",
        f"/v1/rounds/{table.provider}/{table.player_id}/r6/settle",
        {"action": "refund", "reason": "provider gone quiet"},
        headers={"idempotency-key": secrets.token_hex(8)},
        expect=200,
    )
    ids["settle"] = "#settle:" + ids["bet10"]
    return ids


async def test_every_finding_with_totals(
    operator: Operator, table: Table, pool: asyncpg.Pool, table_factory: TableFactory
) -> None:
    ids = await played(table, pool)
    me, other = table.player_id, "someone-else"
    report = csv(
        f"{ids['bet1']},r1,{me},bet,500,EUR",  # 2: matched
        f"{ids['res1']},r1,{me},result,800,EUR",  # 3: matched
        f"{ids['bet2']},r2,{me},bet,300,EUR",  # 4: matched
        f"{ids['can2']},r2,{me},cancel,300,EUR",  # 5: a cancel without amount: its refund
        f"{ids['tomb']},r9,{me},cancel,0,EUR",  # 6: a tombstone, compared (refunded 0)
        f"{ids['bet3']},r3,{me},bet,200,EUR",  # 7: matched
        f"{ids['res3']},r3,{me},result,100,EUR",  # 8: matched
        f"{ids['chg3']},r3,{me},result_change,150,EUR",  # 9: the corrected total, matched
        f"{ids['promo']},,{me},promo_win,1000,EUR",  # 10: outside rounds, matched
        f"{ids['bet4']},r4,{me},bet,45,EUR",  # 11: amount_mismatch
        "never-posted,r7,{me},bet,25,EUR".replace("{me}", me),  # 12: missing_in_wallet
        f"{ids['bet6']},r4,{me},result,60,EUR",  # 13: event_mismatch
        f"{ids['bet7']},r4,{other},bet,70,EUR",  # 14: player_mismatch
        f"{ids['bet8']},r8,{me},bet,80,EUR",  # 15: round_mismatch
        f"{ids['bet9']},r4,{me},bet,90,USD",  # 16: currency_mismatch
        # bet5, res5, bet10 and the settlement: missing_at_provider
    )
    answer = await send(operator, table.provider, report)
    assert answer["provider"] == table.provider and answer["date"] == TODAY
    assert answer["ok"] is False and answer["truncated"] is False
    assert answer["provider_count"] == 15 and answer["matched"] == 9
    # Every posting of the day: 16 through the webhook, the promotion, the settlement.
    assert answer["wallet_count"] == 18
    found = [(d["type"], d["transaction_id"], d["line"]) for d in answer["discrepancies"]]
    assert found[:6] == [
        ("amount_mismatch", ids["bet4"], 11),
        ("missing_in_wallet", "never-posted", 12),
        ("event_mismatch", ids["bet6"], 13),
        ("player_mismatch", ids["bet7"], 14),
        ("round_mismatch", ids["bet8"], 15),
        ("currency_mismatch", ids["bet9"], 16),
    ]
    assert {(t, x) for t, x, _ in found[6:]} == {
        ("missing_at_provider", ids[n]) for n in ("bet5", "res5", "bet10", "settle")
    }
    by_id = {d["transaction_id"]: d for d in answer["discrepancies"]}
    assert by_id[ids["bet4"]] | {"wallet_posted_at": None} == {
        "type": "amount_mismatch",
        "transaction_id": ids["bet4"],
        "origin": "provider",
        "line": 11,
        "wallet_event": "bet",
        "provider_event": "bet",
        "wallet_player_id": me,
        "provider_player_id": me,
        "wallet_round_id": "r4",
        "provider_round_id": "r4",
        "wallet_amount": 40,
        "provider_amount": 45,
        "wallet_currency": "EUR",
        "provider_currency": "EUR",
        "wallet_posted_at": None,
    }
    assert by_id[ids["bet4"]]["wallet_posted_at"].startswith(TODAY)
    missing = by_id["never-posted"]
    assert missing["wallet_event"] is None and missing["wallet_posted_at"] is None
    assert missing["provider_amount"] == 25
    assert by_id[ids["settle"]]["origin"] == "operator"
    assert by_id[ids["settle"]]["provider_event"] is None
    assert by_id[ids["settle"]]["wallet_event"] == "cancel"
    assert by_id[ids["bet5"]]["origin"] == "provider" and by_id[ids["bet5"]]["line"] is None
    assert answer["findings"] == dict.fromkeys(DISCREPANCIES, 1) | {"missing_at_provider": 4}
    eur_lines = [500, 800, 300, 300, 0, 200, 100, 150, 1000, 45, 25, 60, 70, 80]
    eur_postings = [500, 800, 300, 300, 0, 200, 100, 150, 1000, 40, 60, 70, 80, 90, 50, 0, 11, 11]
    assert answer["totals"] == {
        "EUR": {
            "provider_count": len(eur_lines),
            "provider_amount": sum(eur_lines),
            "wallet_count": len(eur_postings),
            "wallet_amount": sum(eur_postings),
        },
        "USD": {"provider_count": 1, "provider_amount": 90, "wallet_count": 0, "wallet_amount": 0},
    }
    # A tombstone reported with the bet's amount: the wallet refunded nothing.
    tomb = await send(operator, table.provider, csv(f"{ids['tomb']},r9,{me},cancel,300,EUR"))
    assert [(d["type"], d["wallet_amount"], d["provider_amount"]) for d in tomb["discrepancies"]][
        0
    ] == (
        "amount_mismatch",
        0,
        300,
    )
    # Another provider's postings are not this one's, and its ids are not found here.
    stranger = await table_factory()
    alone = await send(operator, stranger.provider, csv(f"{ids['bet1']},r1,{me},bet,500,EUR"))
    assert [d["type"] for d in alone["discrepancies"]] == ["missing_in_wallet"]
    assert alone["wallet_count"] == 0


async def test_a_long_list_is_cut_and_counted(operator: Operator, table: Table) -> None:
    lines = [f"gone-{n},r1,{table.player_id},bet,1,EUR" for n in range(MAX_LISTED + 5)]
    answer = await send(operator, table.provider, csv(*lines))
    assert answer["truncated"] is True and len(answer["discrepancies"]) == MAX_LISTED
    assert answer["findings"]["missing_in_wallet"] == MAX_LISTED + 5
    assert answer["discrepancies"][-1]["line"] == MAX_LISTED + 1
    assert answer["totals"]["EUR"]["provider_count"] == MAX_LISTED + 5


async def test_a_clean_day_and_postings_of_another_day(operator: Operator, table: Table) -> None:
    bet = "b-" + secrets.token_hex(4)
    assert (await table.bet(120, round_id="ra", txn=bet))["code"] == "R0"
    line = f"{bet},ra,{table.player_id},bet,120,EUR"
    clean = await send(operator, table.provider, csv(line))
    assert clean["ok"] is True and clean["discrepancies"] == [] and clean["matched"] == 1
    assert clean["findings"] == dict.fromkeys(DISCREPANCIES, 0)
    # Reported for yesterday, the line is found on today's posting: matched, not missing; and
    # today's postings are not yesterday's.
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    earlier = await send(operator, table.provider, csv(line), date=yesterday)
    assert earlier["ok"] is True and earlier["matched"] == 1 and earlier["wallet_count"] == 0
    assert earlier["totals"]["EUR"]["wallet_count"] == 0
    # Without a date: yesterday (UTC).
    assert (await send(operator, table.provider, csv(line), date=None))["date"] == yesterday
    # An empty report: every posting of the day is missing at the provider.
    empty = await send(operator, table.provider, csv())
    assert empty["provider_count"] == 0 and empty["totals"]["EUR"]["provider_count"] == 0
    assert [d["type"] for d in empty["discrepancies"]] == ["missing_at_provider"]
    # A byte order mark and CRLF line ends are read too.
    crlf = b"\xef\xbb\xbf" + csv(line).replace(b"\n", b"\r\n")
    assert (await send(operator, table.provider, crlf))["ok"] is True


BAD_REPORTS = [
    ("transaction_id,round_id,player_id,event,amount\n", "header"),
    ("", "header"),
    ("tx 1,r1,p1,bet,100,EUR", "line[2].transaction_id"),
    ("t1,r1,p1,bet,1.5,EUR", "line[2].amount"),
    ("t1,r1,p1,bet,-5,EUR", "line[2].amount"),
    ("t1,r1,p1,bet,007,EUR", "line[2].amount"),
    ("t1,r1,p1,bet,1000000000000001,EUR", "line[2].amount"),
    ("t1,r1,p1,bet,,EUR", "line[2].amount"),
    ("t1,r1,p1,bet,100,eur", "line[2].currency"),
    ("t1,r1,p1,jackpot,100,EUR", "line[2].event"),
    ("t1,,p1,bet,100,EUR", "line[2].round_id"),
    ("t1,r1,,bet,100,EUR", "line[2].player_id"),
    ("t1,r1,p1,bet,100", "line[2]"),
    ("t1,r1,p1,bet,100,EUR,x", "line[2]"),
    ("t1,r1,p1,bet,100,EUR\n\nt2,r1,p1,bet,100,EUR", "line[3]"),
    ('t1,r1,p1,bet,100,"EUR', "line[2]"),
    ("t1,r1,p\x00,bet,100,EUR", "line[2].player_id"),
    ("t1,r1,p1,bet,100,EUR\nt2,r1,p1,bet,1,E" + "U" * 200_000, "line[3]"),
    ("t1,r1,p1,bet,\u0661,EUR", "line[2].amount"),
    ("t1,r1,p1,bet,100,EUR\nt2,r1,p1,bet,5,EUR\nt1,r2,p1,result,0,EUR", "line[4].transaction_id"),
]


@pytest.mark.parametrize(("body", "field"), BAD_REPORTS)
async def test_a_bad_report_is_refused_naming_line_and_field(
    operator: Operator, table: Table, body: str, field: str
) -> None:
    if body and not body.startswith("transaction_id,"):
        body = ",".join(HEADER) + "\n" + body
    answer = await send(operator, table.provider, body.encode(), expect=400)
    error = answer["error"]
    assert error["code"] == "invalid_request" and error["field"] == field, error
    assert error["errors"][0]["field"] == field
    if field.startswith("line["):
        assert error["message"].startswith(f"line {field[5:].split(']')[0]}: ")


async def test_refusals_of_the_request(operator: Operator, table: Table) -> None:
    # Every fault of a line, and of many lines (the first MAX_FAULTS), in the errors list.
    many = csv("t 1,,p 1,win,x,eur")
    faults = (await send(operator, table.provider, many, expect=400))["error"]["errors"]
    assert [f["field"] for f in faults] == [
        f"line[2].{c}"
        for c in ("transaction_id", "event", "round_id", "player_id", "amount", "currency")
    ]
    lots = csv(*(f"t{n},r1,p1,bet,x,EUR" for n in range(100)))
    assert (
        len((await send(operator, table.provider, lots, expect=400))["error"]["errors"])
        == MAX_FAULTS
    )
    bad_utf8 = csv("t1,r1,p1,bet,1,EUR") + b"\xff"
    assert (await send(operator, table.provider, bad_utf8, expect=400))["error"]["field"] == "body"
    # Not CSV.
    response = await operator.http.post(
        f"/v1/providers/{table.provider}/reconciliation",
        content=csv(),
        headers={**operator.headers, "content-type": "application/json"},
    )
    assert response.status_code == 400 and response.json()["error"]["field"] == "body"
    # The date, the provider.
    bad_date = await send(operator, table.provider, csv(), date="May", expect=400)
    assert bad_date["error"]["field"] == "date"
    await send(operator, "no-such-provider", csv(), expect=404)
    await send(operator, "no such", csv(), expect=400)
    # Read roles may reconcile; it changes nothing, so no Idempotency-Key is asked for.
    key = await operator.call(
        "POST", "/v1/api-keys", {"role": "support", "name": "rec"}, expect=201
    )
    support = Operator(operator.http)
    support.headers = {"authorization": f"Bearer {key['key']}"}
    assert (await send(support, table.provider, csv()))["provider"] == table.provider


async def test_the_upload_is_capped(settings: Settings, table: Table) -> None:
    async with AsyncExitStack() as stack:
        app = await start_app(replace(settings, reconciliation_max_bytes=1024), stack)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://w") as client:
            path = f"/v1/providers/{table.provider}/reconciliation?date={TODAY}"
            headers = {"authorization": f"Bearer {ADMIN_KEY}", **CSV}
            small = await client.post(path, content=csv(), headers=headers)
            assert small.status_code == 200, small.text
            big = csv(*(f"t{n},r1,p1,bet,100,EUR" for n in range(100)))
            refused = await client.post(path, content=big, headers=headers)
            assert refused.status_code == 400
            error = refused.json()["error"]
            assert error["field"] == "body" and "1024 bytes" in error["message"]


async def test_the_command(settings: Settings, table: Table, tmp_path: Path) -> None:
    bet = "c-" + secrets.token_hex(4)
    assert (await table.bet(70, round_id="rc", txn=bet))["code"] == "R0"
    assert settings.database_url and settings.redis_url
    report = tmp_path / "report.csv"
    report.write_bytes(csv(f"{bet},rc,{table.player_id},bet,70,EUR"))
    args = ("reconcile", "--provider", table.provider, "--file", str(report), "--date", TODAY)
    done = wallet_cli(settings.database_url, settings.redis_url, *args)
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["matched"] == 1
    report.write_bytes(csv(f"{bet},rc,{table.player_id},bet,71,EUR"))
    done = wallet_cli(settings.database_url, settings.redis_url, *args)
    assert done.returncode == 3, done.stderr
    assert [d["type"] for d in orjson.loads(done.stdout)["discrepancies"]] == ["amount_mismatch"]
    report.write_bytes(b"nonsense\n")
    done = wallet_cli(settings.database_url, settings.redis_url, *args)
    assert done.returncode == 1 and "invalid_request: line 1: the header" in done.stderr
    for wrong in (
        ("reconcile", "--provider", table.provider),
        ("reconcile", "--psp", "x", "--provider", table.provider, "--file", str(report)),
        ("reconcile", "--psp", "x", "--file", str(report)),
        ("reconcile",),
    ):
        done = wallet_cli(settings.database_url, settings.redis_url, *wrong)
        assert done.returncode != 0 and done.stderr, wrong
    unknown = ("reconcile", "--provider", "nobody-x", "--file", str(report))
    done = wallet_cli(settings.database_url, settings.redis_url, *unknown)
    assert done.returncode == 1 and "resource_not_found" in done.stderr
