"""Operator actions over HTTP take an Idempotency-Key (contract 2 [1.1]): the same key and
request give the first answer again, another request with the key is 409, racing requests give
one effect and never a 500; and a payout whose outcome is unknown is listed and resolved.

Issue 12, defect 5: a repeated approve answered 400 "a processing withdrawal cannot be
approved" instead of its first answer."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg

from tests.fixtures.app import Operator
from tests.fixtures.payments import SandboxRoutes
from tests.payments.psps import ScriptedPsp, SlowPsp, timeout
from tests.payments.test_api import body, key


@contextmanager
def reviewed(asgi: Any, threshold: int = 5_000) -> Iterator[None]:
    payments = asgi.state["wallet"].payments
    payments.review_threshold = threshold
    try:
        yield
    finally:
        payments.review_threshold = None


async def held_withdrawal(operator: Operator, asgi: Any, player: str) -> dict[str, Any]:
    with reviewed(asgi):
        held: dict[str, Any] = await operator.call(
            "POST", "/v1/withdrawals", body(player, 10_000), headers=key(), expect=201
        )
    assert held["status"] == "held"
    return held


async def test_a_repeated_approve_gets_its_first_answer(
    operator: Operator, sandbox_routes: SandboxRoutes, asgi: Any, pool: asyncpg.Pool
) -> None:
    player = await operator.player(50_000)
    held = await held_withdrawal(operator, asgi, player)
    path = f"/v1/withdrawals/{held['id']}/approve"
    headers = key()
    first = await operator.call("POST", path, headers=headers, expect=200)
    assert first["status"] == "processing"
    assert await operator.call("POST", path, headers=headers, expect=200) == first
    other = await held_withdrawal(operator, asgi, player)
    conflict = await operator.call(
        "POST", f"/v1/withdrawals/{other['id']}/approve", headers=headers, expect=409
    )
    assert conflict["error"]["code"] == "idempotency_conflict"
    # A refusal is a first answer too.
    reject = f"/v1/withdrawals/{held['id']}/reject"
    refusal_key = key()
    refused = await operator.call("POST", reject, headers=refusal_key, expect=400)
    assert await operator.call("POST", reject, headers=refusal_key, expect=400) == refused
    # Without a key an action is simply done again, and refused by the state machine.
    await operator.call("POST", path, expect=400)


async def test_racing_actions_with_one_key_have_one_effect(
    operator: Operator, sandbox_routes: SandboxRoutes, asgi: Any, pool: asyncpg.Pool
) -> None:
    for _ in range(3):
        player = await operator.player(50_000)
        held = await held_withdrawal(operator, asgi, player)
        headers = key()
        answers = await asyncio.gather(
            *(
                operator.http.post(
                    f"/v1/withdrawals/{held['id']}/approve",
                    headers={**operator.headers, **headers},
                )
                for _ in range(4)
            )
        )
        assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
        assert all(a.json() == answers[0].json() for a in answers)
        approvals = await pool.fetchval(
            "SELECT count(*) FROM payment_transitions WHERE payment_id = $1 "
            "AND to_status = 'approved'",
            held["id"],
        )
        assert approvals == 1


async def test_an_unknown_payout_is_listed_and_resolved_over_http(
    operator: Operator, sandbox_routes: SandboxRoutes, asgi: Any
) -> None:
    payments = asgi.state["wallet"].payments
    saved = payments.psps
    payments.psps = [ScriptedPsp("psp-a", [timeout(), timeout()]), ScriptedPsp("psp-b")]
    try:
        player = await operator.player(50_000)
        headers = key()
        unknown = await operator.call(
            "POST", "/v1/withdrawals", body(player, 10_000), headers=headers, expect=503
        )
        assert unknown["error"]["code"] == "route_degraded"
        again = await operator.call(
            "POST", "/v1/withdrawals", body(player, 10_000), headers=headers, expect=503
        )
        assert again["error"]["message"] == unknown["error"]["message"]
    finally:
        payments.psps = saved
    listed = await operator.call("GET", "/v1/withdrawals?attention=true&limit=50", expect=200)
    mine = [w for w in listed["data"] if w["player_id"] == player]
    assert len(mine) == 1 and mine[0]["attention"] == "payout_outcome_unknown"
    payment_id = mine[0]["id"]
    await operator.call("GET", "/v1/withdrawals", expect=400)
    path = f"/v1/withdrawals/{payment_id}/resolve"
    decision = {"outcome": "failed", "reason": "psp-a has no such payout"}
    missing = await operator.call("POST", path, decision, expect=400)
    assert missing["error"]["field"] == "Idempotency-Key"
    bad = await operator.call(
        "POST", path, {**decision, "outcome": "lost"}, headers=key(), expect=400
    )
    assert bad["error"]["field"] == "outcome"
    resolve_key = {"idempotency-key": "res-" + secrets.token_hex(6)}
    done = await operator.call("POST", path, decision, headers=resolve_key, expect=200)
    assert (done["status"], done["needs_attention"]) == ("failed", False)
    assert await operator.call("POST", path, decision, headers=resolve_key, expect=200) == done
    assert await operator.balance(player) == 50_000
    conflict = await operator.call(
        "POST", path, {**decision, "outcome": "paid"}, headers=resolve_key, expect=409
    )
    assert conflict["error"]["code"] == "idempotency_conflict"
    final = await operator.call("POST", path, decision, headers=key(), expect=400)
    assert "cannot be resolved" in final["error"]["message"]
    audit = await operator.call("GET", f"/v1/audit?target=withdrawal:{payment_id}", expect=200)
    assert [e["action"] for e in audit["data"]] == ["withdrawal.resolve"]


async def test_answers_that_show_a_secret_are_given_again_and_stored_sealed(
    operator: Operator, pool: asyncpg.Pool
) -> None:
    """Contract 2 [1.1]: every POST that changes something takes an Idempotency-Key, those that
    show a secret once too. Their first answer comes back whole for the same key and request,
    and the database holds it sealed: the secret is not in it."""
    code = "prov-" + secrets.token_hex(4)
    player = await operator.player()
    calls = (
        ("/v1/providers", {"code": code, "name": "Sealed"}, 201, "keys"),
        (f"/v1/providers/{code}/keys", None, 201, "keys"),
        ("/v1/api-keys", {"role": "support", "name": "sealed"}, 201, "key"),
        (
            f"/v1/players/{player}/sessions",
            {"provider": code, "game_id": "g"},
            201,
            "session_token",
        ),
    )
    for path, payload, status, secret_field in calls:
        headers = key()
        first = await operator.call("POST", path, payload, headers=headers, expect=status)
        assert await operator.call("POST", path, payload, headers=headers, expect=status) == first
        stored = await pool.fetchval(
            "SELECT response::text FROM operator_requests WHERE idempotency_key = $1",
            headers["idempotency-key"],
        )
        secret = first[secret_field]
        shown = secret[0]["key"] if isinstance(secret, list) else secret
        assert shown not in stored and '"sealed"' in stored, path
        other = await operator.call(
            "POST", f"/v1/providers/{code}-x/keys", headers=headers, expect=409
        )
        assert other["error"]["code"] == "idempotency_conflict"
    # Without a key nothing changes: a second registration is refused as before.
    await operator.call("POST", "/v1/providers", {"code": code, "name": "Sealed"}, expect=409)


async def test_a_resolve_refused_while_a_start_runs_is_not_the_keys_answer(
    operator: Operator, asgi: Any
) -> None:
    """Found trying the API from outside: a resolve sent while the payout was at the PSP got
    409, and that 409 stayed the answer of its Idempotency-Key after the payout had moved on."""
    payments = asgi.state["wallet"].payments
    saved = payments.psps
    slow = SlowPsp("psp-a")
    payments.psps = [slow]
    try:
        player = await operator.player(50_000)
        create = asyncio.create_task(
            operator.call("POST", "/v1/withdrawals", body(player, 10_000), headers=key())
        )
        while not slow.calls:
            await asyncio.sleep(0.01)
        payment_id = slow.calls[0]["payment"]
        path = f"/v1/withdrawals/{payment_id}/resolve"
        decision = {"outcome": "failed", "reason": "psp-a has no such payout"}
        headers = key()
        busy = await operator.call("POST", path, decision, headers=headers, expect=409)
        assert "right now" in busy["error"]["message"]
        slow.release.set()
        assert (await create)["status"] == "processing"
        done = await operator.call("POST", path, decision, headers=headers, expect=200)
        assert done["status"] == "failed" and await operator.balance(player) == 50_000
    finally:
        payments.psps = saved
