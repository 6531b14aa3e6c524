"""The copy-paste envelope code of docs/clients/ works: against the published test vectors, and
against a running wallet over real HTTP, as an integrator would use it.

Node.js and Java are on the test machines, so their samples run here; the Go and PHP samples
carry the same vectors (tests/seamless/test_docs_examples.py) and are checked by hand.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
from pathlib import Path

import httpx
import orjson
import pytest
from starlette.types import ASGIApp

from app.client import new_id
from tests.fixtures.app import Table
from tests.support.served import served

CLIENTS = Path(__file__).resolve().parents[2] / "docs" / "clients"
NODE = shutil.which("node")
JAVA = shutil.which("java")


async def run(*command: str, stdin: bytes = b"") -> str:
    """Run a sample in this event loop's time (the served wallet must answer meanwhile); its
    stdout, after checking it exited 0."""
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout=60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


def node(*args: str) -> tuple[str, ...]:
    assert NODE is not None, "node is on the machine (brief: /usr/bin/node)"
    return (NODE, str(CLIENTS / "envelope.js"), *args)


def java(*args: str) -> tuple[str, ...]:
    assert JAVA is not None, "java 17 is on the machine"
    return (JAVA, str(CLIENTS / "Envelope.java"), *args)


def bet(table: Table, amount: int) -> dict[str, object]:
    return table.client.event(
        "bet",
        player_id=table.player_id,
        session_token=table.token,
        transaction_id=new_id("b"),
        round_id="r-1",
        game_id="slot-7",
        amount=amount,
        currency="EUR",
    )


@pytest.mark.parametrize("command", [node(), java()], ids=["node", "java"])
async def test_the_sample_checks_itself_against_the_published_vectors(
    command: tuple[str, ...],
) -> None:
    assert "test vectors OK" in await run(*command)


async def test_the_node_sample_talks_to_a_running_wallet(asgi: ASGIApp, table: Table) -> None:
    key = base64.b64encode(table.client.key).decode()
    event = bet(table, 250)
    async with served(asgi) as origin:
        answer = orjson.loads(
            await run(*node("send", origin, table.provider, key), stdin=orjson.dumps(event))
        )
        assert (answer["code"], answer["request_id"]) == ("R0", event["request_id"])
        assert answer["balance"] == 9_750 and answer["transaction_id"].isdigit()
        # A plain R2 answer comes back as it is: here a key the wallet does not know.
        stranger = base64.b64encode(bytes(32)).decode()
        refused = orjson.loads(
            await run(*node("send", origin, table.provider, stranger), stdin=orjson.dumps(event))
        )
        assert (refused["code"], refused["reason"]) == ("R2", "bad_signature")
        assert "balance" not in refused
    assert await table.balance() == 9_750


async def test_the_java_sample_seals_what_the_wallet_opens_and_opens_its_answer(
    http: httpx.AsyncClient, table: Table
) -> None:
    key = base64.b64encode(table.client.key).decode()
    event = bet(table, 300)
    body = await run(*java("seal", table.provider, key), stdin=orjson.dumps(event))
    response = await http.post(f"/v1/seamless/{table.provider}", content=body.strip())
    assert "payload" in response.json(), response.text  # sealed: the request opened
    answer = orjson.loads(await run(*java("open", table.provider, key), stdin=response.content))
    assert (answer["code"], answer["request_id"], answer["balance"]) == (
        "R0",
        event["request_id"],
        9_700,
    )
    assert await table.balance() == 9_700
