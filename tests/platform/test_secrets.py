"""Secrets (issue 6, item 3): provider keys sealed at rest under the master key, and no secret of
any kind in any log line."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from app import db, logs
from app import secrets as sealing
from app.client import ProviderClient, new_id
from app.config import ConfigError, Settings
from app.db import Queries
from app.dev import local
from app.payments import outbox
from app.seamless import keys
from app.seamless.keys import KeyRing, KeyUnavailable, MasterKeyMismatch
from app.secrets import SealedKeyError
from tests.fixtures.app import Operator, Table
from tests.fixtures.payments import SANDBOX_API_KEY, SANDBOX_SECRET, SandboxRoutes
from tests.fixtures.servers import Services
from tests.support.cli import wallet_cli
from tests.support.keys import ADMIN_KEY, MASTER_KEY
from tests.support.logs import RawRecords, every_log_line

MASTER = base64.b64decode(MASTER_KEY)


async def stored_secret(pool: asyncpg.Pool, provider: str, key_id: str) -> bytes:
    value = await pool.fetchval(
        "SELECT secret FROM provider_keys WHERE provider = $1 AND key_id = $2", provider, key_id
    )
    return bytes(value)


async def balance_answer(http: httpx.AsyncClient, code: str, key: bytes, player: str) -> Any:
    client = ProviderClient("http://wallet.test", code, key, http=http)
    return await client.send("balance", player_id=player)


# --- keys at rest --------------------------------------------------------------------------------


async def test_provider_keys_are_stored_sealed_and_rotate(
    table: Table, operator: Operator, pool: asyncpg.Pool, http: httpx.AsyncClient
) -> None:
    first_id = await pool.fetchval(
        "SELECT key_id FROM provider_keys WHERE provider = $1", table.provider
    )
    stored = await stored_secret(pool, table.provider, first_id)
    assert len(stored) == sealing.SEALED_BYTES and table.client.key not in stored
    assert sealing.open_key(MASTER, table.provider, first_id, stored) == table.client.key
    # Sealed for its own row: another provider, another key id or another master key fails.
    for provider, key_id, master in [
        ("other-provider", first_id, MASTER),
        (table.provider, "k_000000000000", MASTER),
        (table.provider, first_id, os.urandom(32)),
    ]:
        with pytest.raises(SealedKeyError):
            sealing.open_key(master, provider, key_id, stored)

    rotated = await operator.call("POST", f"/v1/providers/{table.provider}/keys", expect=201)
    new = rotated["keys"][0]
    new_key = base64.b64decode(new["key"])
    sealed_new = await stored_secret(pool, table.provider, new["key_id"])
    assert len(sealed_new) == sealing.SEALED_BYTES and new_key not in sealed_new
    assert sealing.open_key(MASTER, table.provider, new["key_id"], sealed_new) == new_key
    # The new key serves, and the old one too while it is the previous key.
    for key in (new_key, table.client.key):
        answer = await balance_answer(http, table.provider, key, table.player_id)
        assert (answer["code"], answer["balance"]) == ("R0", 10_000)


async def test_a_sealed_key_copied_to_another_provider_does_not_open(
    operator: Operator, pool: asyncpg.Pool, http: httpx.AsyncClient
) -> None:
    a, b = await operator.provider(), await operator.provider()
    player = await operator.player(500)
    a_key = base64.b64decode(a["keys"][0]["key"])
    a_sealed = await stored_secret(pool, a["code"], a["keys"][0]["key_id"])
    # Someone with write access to the table copies provider a's sealed key over b's.
    await pool.execute(
        "UPDATE provider_keys SET secret = $1 WHERE provider = $2", a_sealed, b["code"]
    )
    answer = await balance_answer(http, b["code"], a_key, player)
    # Not R2: the provider did nothing wrong; the wallet cannot open its own stored key.
    assert (answer["code"], answer["reason"]) == ("R1", "internal_error")
    assert "balance" not in answer


async def test_raw_keys_are_not_used_until_sealed(
    operator: Operator, pool: asyncpg.Pool, http: httpx.AsyncClient
) -> None:
    q = Queries.load()
    code, key_id, raw = (
        "legacy-" + secrets.token_hex(4),
        "k_" + secrets.token_hex(6),
        os.urandom(32),
    )
    player = await operator.player(700)
    async with pool.acquire() as conn:
        # A key as migrations 001 to 004 stored it.
        await conn.execute(*q.insert_provider(code=code, name="Legacy provider"))
        await conn.execute(*q.insert_current_key(provider=code, key_id=key_id, secret=raw))
    # The player must be in the provider's scope for its balance to be answered (contract 1).
    await operator.session(player, code)
    async with pool.acquire() as conn:
        refused = await balance_answer(http, code, raw, player)
        assert (refused["code"], refused["reason"]) == ("R1", "internal_error")
        assert await keys.seal_raw_keys(conn, q, MASTER) >= 1
    stored = await stored_secret(pool, code, key_id)
    assert raw not in stored and sealing.open_key(MASTER, code, key_id, stored) == raw
    await asyncio.sleep(0.25)  # a provider with no usable key is read again after 0.2 s
    answer = await balance_answer(http, code, raw, player)
    assert (answer["code"], answer["balance"]) == ("R0", 700)


async def test_a_wrong_master_key_opens_nothing(table: Table, pool: asyncpg.Pool) -> None:
    q = Queries.load()
    wrong = KeyRing(pool, q, ttl=60, master_key=os.urandom(32))
    with pytest.raises(KeyUnavailable):
        await wrong.keys(table.provider)
    async with pool.acquire() as conn:
        with pytest.raises(MasterKeyMismatch):
            await keys.check_master_key(conn, q, os.urandom(32))
        assert await keys.check_master_key(conn, q, MASTER) >= 1
    right = KeyRing(pool, q, ttl=60, master_key=MASTER)
    assert [k.secret for k in await right.keys(table.provider)] == [table.client.key]


class CountingPool:
    """A pool that counts connections taken, to show the key cache reads Postgres once."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.acquired = 0

    def acquire(self) -> Any:
        self.acquired += 1
        return self.pool.acquire()


async def test_keys_are_opened_once_per_load_not_per_request(
    table: Table, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, asgi: Any
) -> None:
    opened: list[str] = []
    real_open = keys.open_key

    def counting_open(master: bytes, provider: str, key_id: str, stored: bytes) -> bytes:
        opened.append(key_id)
        return real_open(master, provider, key_id, stored)

    monkeypatch.setattr(keys, "open_key", counting_open)
    counting = CountingPool(pool)
    ring = KeyRing(counting, Queries.load(), ttl=60)  # type: ignore[arg-type]
    for _ in range(50):
        assert len(await ring.keys(table.provider)) == 1
    assert (counting.acquired, len(opened)) == (1, 1)

    # The app's own key ring: bets after the first add no key read and no unwrap.
    assert (await table.bet(10))["code"] == "R0"
    opened.clear()
    for _ in range(10):
        assert (await table.bet(10))["code"] == "R0"
    assert opened == []


async def test_requests_finding_the_keys_expired_together_share_one_read(
    table: Table, pool: asyncpg.Pool
) -> None:
    counting = CountingPool(pool)
    ring = KeyRing(counting, Queries.load(), ttl=0)  # type: ignore[arg-type]
    answers = await asyncio.gather(*(ring.keys(table.provider) for _ in range(30)))
    assert all(len(a) == 1 for a in answers)
    assert counting.acquired == 1
    # Expired again (ttl 0): the next burst reads once more, and only once.
    await asyncio.gather(*(ring.keys(table.provider) for _ in range(30)))
    assert counting.acquired == 2


# --- the master key setting and local mode -------------------------------------------------------


def test_a_malformed_master_key_is_named_and_never_echoed() -> None:
    for bad in ["not base64 at all!", base64.b64encode(os.urandom(31)).decode()]:
        with pytest.raises(ConfigError) as raised:
            Settings.from_env({"WALLET_MASTER_KEY": bad})
        assert "WALLET_MASTER_KEY" in str(raised.value) and bad not in str(raised.value)
    assert Settings.from_env({}).master_key is None
    assert repr(Settings.from_env({"WALLET_MASTER_KEY": MASTER_KEY})).count(MASTER_KEY) == 0
    with pytest.raises(ConfigError, match="WALLET_MASTER_KEY is not set"):
        sealing.master_key_from_env({})


def test_local_mode_keeps_its_master_key_in_the_data_folder(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    made = local.master_key(settings, local=True)
    path = tmp_path / "data" / local.MASTER_KEY_FILE
    assert len(base64.b64decode(made)) == 32 and path.read_text().strip() == made
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert local.master_key(settings, local=True) == made  # kept, not made again
    assert list(path.parent.iterdir()) == [path]  # no temporary file left
    with pytest.raises(ConfigError, match="WALLET_MASTER_KEY is not set"):
        local.master_key(settings, local=False)
    given = Settings.from_env({"WALLET_MASTER_KEY": MASTER_KEY, "WALLET_DATA_DIR": str(tmp_path)})
    assert local.master_key(given, local=False) == MASTER_KEY


# --- the command line in a database of its own ---------------------------------------------------


@pytest.fixture
async def own_database(services: Services) -> Any:
    """A migrated database of its own: changing every key's master key must not touch the
    session's database."""
    name = "wallet_keys_" + secrets.token_hex(4)
    dsn = await db.ensure_database(services.database_url, name)
    conn = await db.connect(dsn)
    try:
        await db.migrate(conn)
        yield conn, dsn
    finally:
        await conn.close()
        admin = await asyncpg.connect(services.database_url)
        try:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def test_cli_seals_refuses_a_wrong_master_key_and_rewraps(
    own_database: Any, services: Services, tmp_path: Path
) -> None:
    conn, dsn = own_database
    q = Queries.load()
    raw = os.urandom(32)
    await conn.execute(*q.insert_provider(code="old", name="Provider from before migration 005"))
    await conn.execute(*q.insert_current_key(provider="old", key_id="k_old", secret=raw))
    a = base64.b64encode(os.urandom(32)).decode()
    b = base64.b64encode(os.urandom(32)).decode()

    def run(*args: str, master: str | None) -> subprocess.CompletedProcess[str]:
        return wallet_cli(dsn, services.redis_url, *args, master=master)

    # Serving a database of its own without a master key: a clear refusal, before anything.
    refused = await asyncio.to_thread(run, "serve", master=None)
    assert refused.returncode == 1 and "WALLET_MASTER_KEY is not set" in refused.stderr
    sealed = await asyncio.to_thread(run, "keys", "encrypt", master=a)
    assert sealed.returncode == 0, sealed.stderr
    assert orjson.loads(sealed.stdout) == {"sealed": 1}
    stored = bytes(await conn.fetchval("SELECT secret FROM provider_keys WHERE key_id = 'k_old'"))
    assert sealing.open_key(base64.b64decode(a), "old", "k_old", stored) == raw

    # Another master key does not serve this database: refused at start-up, key not echoed.
    wrong = await asyncio.to_thread(run, "serve", master=b)
    assert wrong.returncode == 1 and "opens none of the 1 active provider keys" in wrong.stderr
    assert b not in wrong.stderr + wrong.stdout

    # Rotation of the master key: every key sealed again under b, and only b opens them.
    old_file = tmp_path / "old-master"
    old_file.write_text(a + "\n")
    rewrap = ["keys", "rewrap", "--old-master-file", str(old_file)]
    done = await asyncio.to_thread(run, *rewrap, master=b)
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout) == {"rewrapped": 1}
    stored = bytes(await conn.fetchval("SELECT secret FROM provider_keys WHERE key_id = 'k_old'"))
    assert sealing.open_key(base64.b64decode(b), "old", "k_old", stored) == raw
    with pytest.raises(SealedKeyError):
        sealing.open_key(base64.b64decode(a), "old", "k_old", stored)
    again = await asyncio.to_thread(run, *rewrap, master=b)
    assert orjson.loads(again.stdout) == {"rewrapped": 0}  # safe to run again

    # Provider keys made from the command line are sealed under the master key too.
    rotated = await asyncio.to_thread(run, "provider", "rotate-key", "old", master=b)
    assert rotated.returncode == 0, rotated.stderr
    new = orjson.loads(rotated.stdout)["keys"][0]
    stored = bytes(
        await conn.fetchval("SELECT secret FROM provider_keys WHERE key_id = $1", new["key_id"])
    )
    opened = sealing.open_key(base64.b64decode(b), "old", new["key_id"], stored)
    assert opened == base64.b64decode(new["key"])
    for output in (sealed, wrong, done, again, rotated):
        assert a not in output.stderr and b not in output.stderr


# --- no secret in any log line -------------------------------------------------------------------


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[tuple[RawRecords, Any]]:
    """Every logger at DEBUG: caplog, the raw text of each record, and the wallet's JSON lines."""
    caplog.set_level(logging.DEBUG)
    with every_log_line() as captured:
        yield captured


def _decoded(text: str) -> bytes | None:
    """The bytes a base64 (standard or URL-safe) secret stands for, if it is one."""
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            raw = decode(text + "=" * (-len(text) % 4))
        except ValueError:
            continue
        encoded = {base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}
        if len(raw) >= 16 and text.rstrip("=") in {e.rstrip("=") for e in encoded}:
            return raw
    return None


def forms(secret: str | bytes) -> list[str]:
    """A secret as it could be printed: as is, in hex, and when it stands for bytes, those bytes
    in base64 (standard and URL-safe, padded or not) and hex."""
    texts = []
    if isinstance(secret, str):
        texts += [secret, secret.encode().hex()]
        raw = _decoded(secret)
        if raw is None:
            return texts
        secret = raw
    standard = base64.b64encode(secret).decode()
    urlsafe = base64.urlsafe_b64encode(secret).decode()
    return texts + [standard, standard.rstrip("="), urlsafe.rstrip("="), secret.hex()]


async def test_no_secret_reaches_any_log_line(
    all_logs: tuple[RawRecords, Any],
    caplog: pytest.LogCaptureFixture,
    operator: Operator,
    http: httpx.AsyncClient,
    pool: asyncpg.Pool,
    sandbox_routes: SandboxRoutes,
) -> None:
    raw, stream = all_logs
    found: list[str | bytes] = [ADMIN_KEY, MASTER_KEY, SANDBOX_API_KEY, SANDBOX_SECRET]

    # Provider keys: created, used, rotated, used again, and a forged one.
    provider = await operator.provider()
    code, first = provider["code"], provider["keys"][0]["key"]
    rotated = await operator.call("POST", f"/v1/providers/{code}/keys", expect=201)
    second = rotated["keys"][0]["key"]
    forged = base64.b64encode(os.urandom(32)).decode()
    found += [first, second, forged]

    # API keys: created, used, revoked, used again.
    api_key = await operator.call(
        "POST", "/v1/api-keys", {"role": "finance", "name": "log test"}, expect=201
    )
    found += [api_key["key"], api_key["key"].split("_", 2)[2]]
    finance = {"authorization": f"Bearer {api_key['key']}"}
    assert (await http.get("/v1/ledger/check", headers=finance)).status_code == 200
    await operator.call("DELETE", f"/v1/api-keys/{api_key['id']}", expect=200)
    assert (await http.get("/v1/ledger/check", headers=finance)).status_code == 401

    # Session tokens: issued, logged in, bet with, refused when forged, logged out.
    player = await operator.player(5_000)
    token = await operator.session(player, code)
    fake_token = secrets.token_urlsafe(32)
    found += [token, fake_token]
    bet = dict(round_id="r1", game_id="slot-1", amount=100, currency="EUR")
    for key in (first, second):
        client = ProviderClient("http://wallet.test", code, key, http=http)
        assert (await client.send("login", player_id=player, session_token=token))["code"] == "R0"
        placed = await client.send(
            "bet", player_id=player, session_token=token, transaction_id=new_id("t"), **bet
        )
        assert placed["code"] == "R0"
        refused = await client.send(
            "bet", player_id=player, session_token=fake_token, transaction_id=new_id("t"), **bet
        )
        assert refused["reason"] == "invalid_session"
    impostor = ProviderClient("http://wallet.test", code, forged, http=http)
    assert (await impostor.send("balance", player_id=player))["reason"] == "bad_signature"
    client = ProviderClient("http://wallet.test", code, second, http=http)
    assert (await client.send("logout", player_id=player, session_token=token))["code"] == "R0"

    # A wrong master key loading keys, and a refused malformed one.
    wrong_master = os.urandom(32)
    found.append(wrong_master)
    with pytest.raises(KeyUnavailable):
        await KeyRing(pool, Queries.load(), ttl=1, master_key=wrong_master).keys(code)
    with pytest.raises(ConfigError):
        Settings.from_env({"WALLET_MASTER_KEY": base64.b64encode(wrong_master[:31]).decode()})

    # PSP secrets: a deposit through the sandbox PSP, its signed webhook, and a forged webhook.
    created = await operator.call(
        "POST",
        "/v1/deposits",
        {"player_id": player, "amount": 900, "currency": "EUR", "method": "card"},
        headers={"idempotency-key": new_id("dep")},
        expect=201,
    )
    psp_payment = await pool.fetchval(
        "SELECT psp_payment_id FROM payments WHERE id = $1", created["id"]
    )
    await sandbox_routes.complete(psp_payment)
    assert (await operator.call("GET", f"/v1/deposits/{created['id']}"))["status"] == "succeeded"
    forged_webhook = await http.post(
        "/v1/psp/sandbox-a/webhook", content=b"{}", headers={"x-signature": "t=1,v1=00"}
    )
    assert forged_webhook.status_code == 401

    # The operator webhook secret: events delivered (and refused once) by a signing outbox.
    operator_secret = secrets.token_urlsafe(24)
    found.append(operator_secret)
    statuses = iter([503, 200])

    def receive(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(statuses, 200))

    async with httpx.AsyncClient(transport=httpx.MockTransport(receive)) as to_operator:
        box = outbox.Outbox(
            pool,
            Queries.load(),
            to_operator,
            "http://operator.test/events",
            operator_secret.encode(),
        )
        await box.deliver_due()

    # Every line went through the JSON formatter; none holds any form of any secret.
    output = stream.getvalue()
    lines = [orjson.loads(line) for line in output.splitlines()]
    loggers = {line["logger"] for line in lines}
    assert {"app.seamless.service", "app.main", "app.seamless.keys"} <= loggers, loggers
    everything = [output, caplog.text, *raw.texts]
    for secret in found:
        for form in forms(secret):
            leaks = [text for text in everything if form in text]
            assert not leaks, (form, leaks[0][:500])


def test_env_secrets_are_redacted_in_each_form() -> None:
    """The safety net for what slips through: secret settings, registered from the
    environment, are redacted in every printable form."""
    master = os.urandom(32)
    env = {
        "WALLET_MASTER_KEY": base64.b64encode(master).decode(),
        "WALLET_OPERATOR_WEBHOOK_SECRET": "op-secret-" + secrets.token_hex(8),
        "WALLET_PSPS": orjson.dumps(
            [{"api_key": "psp-api-" + secrets.token_hex(8), "webhook_secret": "psp-wh-xyz123"}]
        ).decode(),
    }
    logs.register_env_secrets(env)
    text = " ".join(
        [
            *forms(master),
            env["WALLET_OPERATOR_WEBHOOK_SECRET"],
            orjson.loads(env["WALLET_PSPS"])[0]["api_key"],
            "psp-wh-xyz123",
        ]
    )
    redacted = logs.redact(text)
    assert set(redacted.split()) == {logs.REDACTED}, redacted
    # Malformed settings are for app.config to report: registering what it can never fails.
    logs.register_env_secrets({"WALLET_PSPS": "not json", "WALLET_MASTER_KEY": "bad-one"})
    assert logs.redact("bad-one") == "bad-one"
