"""An outside check of /openapi.json: Schemathesis generates requests for every operation from
the document alone and checks each answer against it.

It runs as its own process (the ``st`` command, as an integrator would run it) against an app
served over real HTTP, with the bootstrap admin key, so it reaches every operator route. That
app has a database of its own on the session's Postgres (the run creates, blocks and revokes
whatever it finds, and no other test's players or keys are among them) and payments through an
in-process sandbox PSP. A player, a deposit and a withdrawal are made first, and their ids given
to the routes that take one (schemathesis.toml), so those routes answer with real data rather
than 404. Afterwards the ledger of that database must still balance.

The checks: no 5xx, and every answer is one the operation documents (its status, content type,
headers and body schema). Bounded and repeatable: a fixed number of examples per operation,
deterministic generation (so no seed and no example database are needed), one worker.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.types import ASGIApp

from app import db
from app.config import Settings
from tests.fixtures.app import start_app
from tests.fixtures.payments import in_process_sandbox
from tests.support.keys import ADMIN_KEY
from tests.support.served import served

pytestmark = pytest.mark.slow

# Not among them, each run by hand (they found the drift fixed in the commits that name them):
# negative_data_rejection, since the wallet is lenient where the document says so (a malformed
# X-Request-Id is replaced, see tests/web/test_openapi.py; an empty query parameter is absent);
# and positive_data_acceptance, since schema-valid input can still be refused by what no schema
# says: an opaque cursor the API never gave out, a balance too low, a method no route serves, an
# integral float like 5.0 as an amount.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)

# Paths Schemathesis is not run on, each with why. Everything else in the document is.
EXCLUDED = {
    # The body is an AES-256-GCM envelope sealed under the provider's key: a generator can only
    # make bodies that fail to open. tests/seamless/test_protocol.py and test_openapi.py drive
    # it with real sealed events.
    "/v1/seamless/{provider}": "sealed body",
}

MAX_EXAMPLES = 20
PSP = "sandbox-a"
TIME_LIMIT = 300  # seconds; the run takes far less, this only stops a hung one


def st_command(schema_url: str, report: Path) -> list[str]:
    st = Path(sys.executable).with_name("st")
    command = [
        str(st),
        "run",
        schema_url,
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(MAX_EXAMPLES),
        # Deterministic: the same cases on every run, so no seed and no example database.
        "--generation-deterministic",
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--header",
        f"Authorization: Bearer {ADMIN_KEY}",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(report),
        "--no-color",
        "--output-sanitize",
        "true",
    ]
    for path in EXCLUDED:
        command += ["--exclude-path", path]
    return command


@pytest.fixture
async def own_app(settings: Settings) -> AsyncIterator[ASGIApp]:
    """The wallet on a fresh database of the session's Postgres server, its payments routed to
    an in-process sandbox PSP."""
    name = "wallet_test_schemathesis_" + secrets.token_hex(4)
    dsn = await db.ensure_database(settings.database_url or "", name)
    conn = await asyncpg.connect(dsn)
    try:
        await db.migrate(conn)
    finally:
        await conn.close()
    async with AsyncExitStack() as stack:
        app = await start_app(replace(settings, database_url=dsn), stack)
        sandbox = await stack.enter_async_context(in_process_sandbox(app, (PSP,)))
        payments = app.state["wallet"].payments  # type: ignore[attr-defined]
        payments.psps = sandbox.routes
        payments.webhook_base = "http://wallet.test/v1/psp"
        yield app


async def seed(api: httpx.AsyncClient) -> dict[str, str]:
    """A funded player with a deposit and a withdrawal: real ids for the routes that take one,
    which generated ids would only ever find missing (404)."""

    async def call(method: str, path: str, body: dict[str, object], expect: int) -> Any:
        headers = {"idempotency-key": "seed-" + secrets.token_hex(6)}
        response = await api.request(method, path, json=body, headers=headers)
        assert response.status_code == expect, (path, response.text)
        return response.json()

    player = "st-player"
    await call("POST", "/v1/players", {"player_id": player, "currency": "EUR"}, 201)
    credit = {"amount": 100_000, "reason": "schemathesis seed"}
    await call("POST", f"/v1/players/{player}/adjustments", credit, 201)
    payment = {"player_id": player, "amount": 500, "currency": "EUR", "method": "card"}
    deposit = await call("POST", "/v1/deposits", payment, 201)
    withdrawal = await call("POST", "/v1/withdrawals", payment, 201)
    return {"player": player, "deposit": deposit["id"], "withdrawal": withdrawal["id"]}


def config(ids: dict[str, str]) -> str:
    """schemathesis.toml: the seeded ids in the path parameters that name them."""
    blocks = [
        ("^/v1/players/[{]player_id[}]", "path.player_id", ids["player"]),
        ("^/v1/deposits/", "path.payment_id", ids["deposit"]),
        ("^/v1/withdrawals/", "path.payment_id", ids["withdrawal"]),
        ("^/v1/reconciliation$", "query.psp", PSP),
        ("^/v1/psp/", "path.psp", PSP),  # a known PSP: the signature is what gets checked
    ]
    return "".join(
        f"[[operations]]\ninclude-path-regex = '{regex}'\n"
        f'parameters = {{ "{key}" = "{value}" }}\n\n'
        for regex, key, value in blocks
    )


async def test_schemathesis_finds_nothing(own_app: ASGIApp, tmp_path: Path) -> None:
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    async with served(own_app) as origin:
        async with httpx.AsyncClient(base_url=origin, headers=admin) as api:
            (tmp_path / "schemathesis.toml").write_text(config(await seed(api)))
            proc = await asyncio.create_subprocess_exec(
                *st_command(origin + "/openapi.json", tmp_path / "report.ndjson"),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                cwd=tmp_path,  # where it finds schemathesis.toml
                env={**os.environ, "NO_COLOR": "1"},
            )
            try:
                output, _ = await asyncio.wait_for(proc.communicate(), TIME_LIMIT)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            assert proc.returncode == 0, output.decode(errors="replace")
            check = await api.get("/v1/ledger/check")
    assert check.json() == {"ok": True}
