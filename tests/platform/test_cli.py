"""The command line (issue 15, part 6): typed fields for `wallet send`, `--version`, plain help
texts, clear messages for bad dates, the provider key kept off argv, the operator's read
commands against the session's database with real data, and progress lines of long commands.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import secrets
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from starlette.types import ASGIApp

from app import cli_output, cli_provider, db
from app.cli import build_parser
from app.cli_args import leaves
from app.client import open_answer, seal_event
from app.config import Settings
from app.payments import outbox
from app.seamless import envelope
from tests.fixtures.app import Operator, Table
from tests.support.cli import wallet_cli
from tests.support.events import deposit_with_event
from tests.support.keys import MASTER_KEY
from tests.support.rounds import age_round
from tests.support.served import served


def wallet(settings: Settings, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    assert settings.database_url is not None and settings.redis_url is not None
    return wallet_cli(settings.database_url, settings.redis_url, *args, **kwargs)


async def wallet_json(settings: Settings, *args: str, **kwargs: Any) -> Any:
    """``wallet <args> --json``, in a thread (the app under test keeps serving meanwhile)."""
    done = await asyncio.to_thread(wallet, settings, *args, "--json", **kwargs)
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout)


async def wallet_fails(settings: Settings, *args: str, **kwargs: Any) -> str:
    """The stderr of a ``wallet`` run that must fail with status 1 (or 2 for argparse)."""
    done = await asyncio.to_thread(wallet, settings, *args, **kwargs)
    assert done.returncode in (1, 2), (done.returncode, done.stdout)
    assert done.stdout == ""
    return done.stderr


def key_text(table: Table) -> str:
    return base64.b64encode(table.client.key).decode()


async def flush_calls(asgi: Any) -> None:
    await asgi.state["wallet"].calls.flush()


# --- wallet send: each field typed as its event declares it ------------------------------------


def test_fields_take_the_type_of_the_event_model() -> None:
    fields = cli_provider.event_fields(
        "bet", ["transaction_id=1001", "round_id=42", "amount=250", "currency=EUR"]
    )
    assert fields == {"transaction_id": "1001", "round_id": "42", "amount": 250, "currency": "EUR"}
    assert cli_provider.event_fields("result", ["round_closed=false", "amount=-0"]) == {
        "round_closed": False,
        "amount": 0,
    }
    # name:=JSON sends exactly that JSON, for any field (the model's or not).
    assert cli_provider.event_fields("bet", ['amount:="250"', "extra:=[1,null]"]) == {
        "amount": "250",
        "extra": [1, None],
    }


@pytest.mark.parametrize(
    ("event", "field", "says"),
    [
        ("bet", "amount=2.5", "amount: must be an integer, got '2.5'"),
        ("bet", "amount=", "amount: must be an integer, got ''"),
        ("result", "round_closed=yes", "round_closed: must be true or false, got 'yes'"),
        ("bet", "colour=red", "bet has no field 'colour'"),
        ("bet", "amount:=25,", "amount: not JSON"),
        ("bet", "amount", "fields are name=value or name:=json"),
        ("bet", "=1", "fields are name=value or name:=json"),
        ("wager", "amount=1", "unknown event 'wager': one of login, balance"),
    ],
)
def test_a_field_that_does_not_fit_names_itself(event: str, field: str, says: str) -> None:
    with pytest.raises(SystemExit) as refused:
        cli_provider.event_fields(event, [field])
    assert says in str(refused.value)


async def test_send_posts_a_digit_only_transaction_id_as_a_string(
    asgi: ASGIApp, settings: Settings, table: Table, tmp_path: Path
) -> None:
    """A transaction_id of digits only was sent as a JSON number and refused R3; now R0, with
    the key from the environment, then from a file, and never needed on argv."""
    txn = str(secrets.randbelow(10**9) + 10**9)
    common = ["--provider", table.provider]
    bet = ["bet", f"player_id={table.player_id}", f"session_token={table.token}"]
    bet += [f"transaction_id={txn}", "round_id=7", "game_id=slot-1", "amount=250"]
    bet += ["currency=EUR"]
    async with served(asgi) as url:
        env = {"WALLET_PROVIDER_KEY": key_text(table)}
        answer = await wallet_json(settings, "send", "--url", url, *common, *bet, env=env)
        assert (answer["code"], answer["balance"]) == ("R0", 9_750), answer
        assert answer["transaction_id"].isdigit()  # the wallet's own id

        key_file = tmp_path / "provider.key"
        key_file.write_text(key_text(table) + "\n")
        key_file.chmod(0o600)
        result = ["result", f"player_id={table.player_id}", "transaction_id=2002"]
        result += ["round_id=7", "game_id=slot-1", "amount=1000", "currency=EUR"]
        result += ["round_closed=true"]
        done = await asyncio.to_thread(
            wallet, settings, "send", "--url", url, *common, "--key-file", str(key_file), *result
        )
        assert done.returncode == 0 and done.stderr == "", done.stderr
        assert orjson.loads(done.stdout)["balance"] == 10_750

        # From stdin, and --key still works but warns that argv is public.
        balance = ["balance", f"player_id={table.player_id}"]
        piped = await wallet_json(
            settings, "send", "--url", url, *common, "--key-file", "-", *balance,
            stdin=key_text(table),
        )  # fmt: skip
        assert piped["balance"] == 10_750
        done = await asyncio.to_thread(
            wallet, settings, "send", "--url", url, *common, "--key", key_text(table), *balance
        )
        assert done.returncode == 0 and "visible to other users" in done.stderr

    # A key file others can read is used, with a warning.
    key_file.chmod(0o644)
    warned = await wallet_fails(
        settings, "send", "--url", "http://127.0.0.1:9", *common, "--key-file", str(key_file),
        *balance,
    )  # fmt: skip
    assert "readable by others; chmod 600" in warned
    # No key at all, or one that is not a key: a message, not a traceback.
    missing = await wallet_fails(settings, "send", *common, *balance)
    assert "give the provider key in WALLET_PROVIDER_KEY or with --key-file" in missing
    bad = await wallet_fails(
        settings, "send", *common, *balance, env={"WALLET_PROVIDER_KEY": "not-a-key"}
    )
    assert "WALLET_PROVIDER_KEY does not hold a provider key" in bad
    nonsense = await wallet_fails(
        settings, "send", *common, "bet", "amount=lots", env={"WALLET_PROVIDER_KEY": "x"}
    )
    assert "amount: must be an integer, got 'lots'" in nonsense


# --- wallet open ---------------------------------------------------------------------------------


async def test_open_decrypts_a_sealed_body(settings: Settings, table: Table) -> None:
    event = {"event": "balance", "request_id": "req-1", "player_id": table.player_id}
    body = seal_event(table.client.key, table.provider, event).decode()
    env = {"WALLET_PROVIDER_KEY": key_text(table)}
    opened = await wallet_json(settings, "open", "--provider", table.provider, env=env, stdin=body)
    assert opened == event
    payload = orjson.loads(body)["payload"]
    bare = await wallet_json(settings, "open", "--provider", table.provider, payload, env=env)
    assert bare == event
    # The wallet's answer, as curl prints it.
    event["timestamp"] = int(time.time())
    answered = await table.client.http.post(
        table.client.path,
        content=seal_event(table.client.key, table.provider, event),
        headers={"content-type": "application/json"},
    )
    assert "payload" in answered.json()
    answer = await wallet_json(
        settings, "open", "--provider", table.provider, "-", env=env, stdin=answered.text
    )
    assert (answer["code"], answer["balance"], answer["request_id"]) == ("R0", 10_000, "req-1")
    assert answer == open_answer(table.client.key, table.provider, answered.content)

    # Sealed for another provider, or under another key: it does not open.
    other = {"WALLET_PROVIDER_KEY": base64.b64encode(secrets.token_bytes(32)).decode()}
    for provider, keys in ((table.provider, other), ("someone-else", env)):
        refused = await wallet_fails(settings, "open", "--provider", provider, body, env=keys)
        assert "does not open with this key" in refused
    both = await wallet_fails(settings, "open", "--provider", table.provider, "--key-file", "-")
    assert "cannot both come from standard input" in both
    broken = await wallet_fails(settings, "open", "--provider", table.provider, "@@", env=env)
    assert "not valid base64" in broken
    assert issubclass(envelope.EnvelopeError, ValueError)


# --- --version, help texts, dates --------------------------------------------------------------


async def test_version_names_the_package_and_the_schema(settings: Settings) -> None:
    done = await asyncio.to_thread(wallet, settings, "--version")
    assert done.returncode == 0
    latest = db.migrations()[-1].version
    assert done.stdout.strip() == f"wallet {metadata.version('wallet')} (schema {latest:03d})"


def _every_parser() -> list[argparse.ArgumentParser]:
    parser = build_parser()
    found = [parser]
    pending = [parser]
    while pending:
        for action in pending.pop()._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in dict.fromkeys(action.choices.values()):
                    found.append(child)
                    pending.append(child)
    return found


def test_no_help_text_shows_a_backtick() -> None:
    """RST markup (``x``) was printed as is by --help."""
    parsers = _every_parser()
    assert len(parsers) >= 25  # every command and group, not just the top
    for parser in parsers:
        assert "`" not in parser.format_help(), parser.prog
    subcommands = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    for choice in subcommands[0]._choices_actions:
        assert "`" not in (choice.help or ""), choice.dest


def test_every_command_with_a_result_prints_json_or_tables() -> None:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    commands = {p.prog.removeprefix("wallet "): p for p in leaves(sub)}
    without = {name for name, p in commands.items() if "--json" not in p.format_help()}
    assert without == {"serve", "migrate", "sandbox-psp"}
    assert {"player show", "calls", "rounds", "events replay", "open", "send"} <= set(commands)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["report", "daily", "--date", "2026-13-01"], "invalid date '2026-13-01': use YYYY-MM-DD"),
        (["reconcile", "--psp", "x", "--date", "yesterday"], "invalid date 'yesterday'"),
        (
            ["report", "statement", "p1", "--from", "2026-05-18T00:00:00"],
            "invalid time '2026-05-18T00:00:00': use ISO 8601 with a time zone, "
            "e.g. 2026-05-18T00:00:00Z",
        ),
        (["report", "statement", "p1", "--to", "soon"], "invalid time 'soon': use ISO 8601"),
    ],
)
def test_a_bad_date_says_what_to_write(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(args)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "fromisoformat" not in err


def test_good_dates_parse() -> None:
    args = build_parser().parse_args(["report", "statement", "p1", "--from", "2026-05-18T00:00Z"])
    assert args.since.isoformat() == "2026-05-18T00:00:00+00:00"
    assert str(build_parser().parse_args(["report", "daily", "--date", "2026-02-28"]).date) == (
        "2026-02-28"
    )


# --- the operator's read commands ------------------------------------------------------------


async def test_player_show(settings: Settings, table: Table) -> None:
    await table.bet(300, round_id="show")
    shown = await wallet_json(settings, "player", "show", table.player_id)
    assert (shown["player_id"], shown["balance"], shown["status"]) == (
        table.player_id,
        9_700,
        "active",
    )
    assert shown["limits"] == {"deposit": {}, "wager": {}, "loss": {}}
    (session,) = shown["sessions"]
    assert session["provider"] == table.provider and session["state"] == "active"
    assert "session_token" not in session
    kinds = [t["kind"] for t in shown["recent_transactions"]]
    assert kinds[0] == "bet" and "adjustment" in kinds

    done = await asyncio.to_thread(wallet, settings, "player", "show", table.player_id, "--table")
    assert done.returncode == 0, done.stderr
    assert table.token not in done.stdout
    assert re.search(rf"^player_id\s+{table.player_id}$", done.stdout, re.M)
    assert "sessions:" in done.stdout and "recent_transactions:" in done.stdout

    missing = await wallet_fails(settings, "player", "show", "pl-nobody-" + secrets.token_hex(3))
    assert "error: resource_not_found: player" in missing


async def test_calls_and_failures(asgi: ASGIApp, settings: Settings, table: Table) -> None:
    await table.bet(100, round_id="calls")
    refused = await table.bet(100, round_id="calls", session_token="not-a-session")
    assert refused["code"] in ("R1", "R2", "R3"), refused
    await flush_calls(asgi)
    mine = ["--player", table.player_id]
    every = await wallet_json(settings, "calls", *mine)
    assert [c["code"] for c in every["data"]] == [refused["code"], "R0"]
    failures = await wallet_json(settings, "calls", "--failures", *mine)
    assert [c["reason"] for c in failures["data"]] == [refused["reason"]]
    by_provider = await wallet_json(
        settings, "calls", "--provider", table.provider, "--event", "bet", "--limit", "1"
    )
    assert len(by_provider["data"]) == 1 and by_provider["next_cursor"]
    assert by_provider["data"][0]["player_id"] == table.player_id
    rest = await wallet_json(
        settings, "calls", "--provider", table.provider, "--cursor", by_provider["next_cursor"]
    )
    assert [c["code"] for c in rest["data"]] == ["R0"] and rest["next_cursor"] is None

    done = await asyncio.to_thread(wallet, settings, "calls", *mine, "--table")
    header, *rows = done.stdout.splitlines()
    assert header.split()[:3] == ["id", "provider", "event"] and len(rows) == 2
    assert rows[0].split()[1:3] == [table.provider, "bet"]

    too_many = await wallet_fails(settings, "calls", "--limit", "500")
    assert "limit must be an integer from 1 to 200" in too_many
    unknown = await wallet_fails(settings, "calls", "--event", "wager")
    assert "event" in unknown


async def test_rounds_stale_and_of_a_player(
    pool: asyncpg.Pool, settings: Settings, table: Table
) -> None:
    await table.bet(100, round_id="forgotten")
    await table.bet(100, round_id="fresh")
    await age_round(pool, table.provider, table.player_id, "forgotten")
    stale = await wallet_json(settings, "rounds", "--stale", "--provider", table.provider)
    assert [(r["round_id"], r["stale"]) for r in stale["data"]] == [("forgotten", True)]
    mine = await wallet_json(settings, "rounds", "--player", table.player_id)
    assert {r["round_id"]: r["state"] for r in mine["data"]} == {
        "forgotten": "open",
        "fresh": "open",
    }
    closed = await wallet_json(settings, "rounds", "--player", table.player_id, "--state", "closed")
    assert closed["data"] == []
    lost = await wallet_fails(settings, "rounds")
    assert "needs --stale or --player" in lost


async def test_events_replay_is_audited_as_the_cli(
    pool: asyncpg.Pool, settings: Settings, operator: Operator
) -> None:
    created, event_id = await deposit_with_event(pool, operator)
    # A dead letter, as 14 failed deliveries leave it (tests/operator/test_events.py does those).
    await pool.execute(
        "UPDATE operator_events SET attempts = $2, dead_at = now() WHERE id = $1",
        event_id,
        outbox.MAX_ATTEMPTS,
    )
    replayed = await wallet_json(settings, "events", "replay", event_id)
    assert (replayed["id"], replayed["status"], replayed["replays"]) == (event_id, "pending", 1)
    audited = await operator.call("GET", f"/v1/audit?target=event:{event_id}", expect=200)
    entry = audited["data"][0]
    assert entry["action"] == "event.replay" and entry["actor"].startswith("cli:")
    assert (entry["before"], entry["after"]) == ({"status": "dead"}, {"status": "pending"})
    missing = await wallet_fails(settings, "events", "replay", "evt_nope")
    assert "error: resource_not_found: event 'evt_nope' not found" in missing


def test_tables_are_read_off_the_json() -> None:
    text = cli_output.render(
        {
            "ok": True,
            "name": "a\x1b[2Jb",
            "note": None,
        }
    )
    assert text.splitlines() == ["ok    yes", "name  a?[2Jb", "note  -"]
    page = {"data": [{"id": "1", "n": 2}, {"id": "10", "extra": {"k": 1}}], "next_cursor": "c"}
    assert cli_output.render(page).splitlines() == [
        "id  n  extra",
        "1   2  -",
        '10  -  {"k":1}',
        "",
        "next_cursor  c",
    ]
    assert cli_output.render({"data": [], "next_cursor": None}) == "(none)"
    nested = cli_output.render({"a": 1, "rows": [{"x": 1}], "sub": {"b": 2}})
    assert nested.splitlines() == ["a  1", "", "rows:", "  x", "  1", "", "sub:", "  b  2"]
    assert cli_output.render({"pending": [], "limits": {}}).splitlines() == [
        "pending  (none)",
        "limits   (none)",
    ]
    assert cli_output.cell("x" * 100) == "x" * (cli_output.MAX_CELL - 1) + "…"


# --- progress -----------------------------------------------------------------------------------


async def test_ledger_check_tells_its_progress_only_when_asked(settings: Settings) -> None:
    done = await asyncio.to_thread(wallet, settings, "ledger", "check", "--progress", "--json")
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout) == {"ok": True}
    lines = done.stderr.splitlines()
    assert len(lines) == 5 and lines[0].startswith("ledger check: 1/5 unbalanced_transactions: ok")
    quiet = await asyncio.to_thread(wallet, settings, "ledger", "check", "--json")
    assert quiet.returncode == 0 and quiet.stderr == ""


async def test_reconcile_tells_its_progress(
    settings: Settings, table: Table, tmp_path: Path
) -> None:
    report = tmp_path / "report.csv"
    report.write_text("transaction_id,round_id,player_id,event,amount,currency\n")
    args = ["reconcile", "--provider", table.provider, "--file", str(report), "--json"]
    done = await asyncio.to_thread(wallet, settings, *args, "--progress")
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["ok"] is True
    assert re.search(r"^reconcile: read 1 lines of .*report.csv", done.stderr, re.M)
    assert re.search(r"^reconcile: matched 0 lines, 0 findings \(\d+\.\d s\)$", done.stderr, re.M)
    quiet = await asyncio.to_thread(wallet, settings, *args)
    assert quiet.returncode == 0 and quiet.stderr == ""


async def test_seeding_through_the_database_tells_its_progress(
    settings: Settings, tmp_path: Path
) -> None:
    assert settings.database_url is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    env.update(WALLET_DATABASE_URL=settings.database_url, WALLET_REDIS_URL=str(settings.redis_url))
    env["WALLET_MASTER_KEY"] = MASTER_KEY
    out = tmp_path / "seed.json"
    command = [sys.executable, "-m", "loadtests.seed", "--players", "3", "--out", str(out)]
    done = await asyncio.to_thread(
        subprocess.run,
        [*command, "--progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for step in ("players", "fundings", "sessions"):
        assert re.search(rf"^seed: {step} 3/3 done \(", done.stderr, re.M), done.stderr
    assert len(orjson.loads(out.read_bytes())["players"]) == 3


def test_docs_list_every_command() -> None:
    """docs/cli.md is the list of commands: a new one without its line fails here."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    listed = set(re.findall(r"^(?:\S+=\S+ )?\.venv/bin/(wallet(?: [a-z][a-z-]*)*)", text, re.M))
    missing = [p.prog for p in leaves(sub) if p.prog not in listed]
    assert missing == []


def test_the_readme_names_only_real_commands() -> None:
    """README.md lists the common commands (docs/cli.md all of them): none that does not exist."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    real = {p.prog for p in leaves(sub)}
    named = re.findall(r"^(?:\S+=\S+ )?\.venv/bin/(wallet(?: [a-z][a-z-]*)*)", text, re.M)
    assert named and [n for n in named if n not in real] == []
