"""An operator API call's JSON body is read before the call takes a pooled connection: a caller
sending it slowly holds none of the connections the seamless webhook needs (the pattern the back
office's security review found, in the API's own wrapper)."""

from __future__ import annotations

import secrets

import orjson
import pytest
from starlette.types import ASGIApp

from tests.fixtures.app import Operator
from tests.support.pool import Held, byte_by_byte, count_held


@pytest.fixture
def held(asgi: ASGIApp, monkeypatch: pytest.MonkeyPatch) -> Held:
    return count_held(asgi, monkeypatch)


async def test_a_json_body_is_read_with_no_pooled_connection_held(
    operator: Operator, held: Held
) -> None:
    held.watch_this_task()
    player = await operator.player()
    body = orjson.dumps({"amount": 500, "reason": "slow caller"})
    answer = await operator.http.post(
        f"/v1/players/{player}/adjustments",
        content=byte_by_byte(body, held),
        headers={
            **operator.headers,
            "content-type": "application/json",
            "idempotency-key": "slow-" + secrets.token_hex(6),
        },
    )
    assert answer.status_code == 201, answer.text
    assert held.while_sending and set(held.while_sending) == {0}
