"""Back-office actions: confirmed, CSRF-checked, of the roles the API operation allows, done once
however often the form is sent, and audited with the signed-in actor."""

from __future__ import annotations

import asyncpg
from starlette.types import ASGIApp

from tests.fixtures.app import Operator, TableFactory
from tests.fixtures.payments import SandboxRoutes
from tests.support.backoffice import api_key, desk, held_withdrawal
from tests.support.keys import ADMIN_KEY
from tests.support.rounds import age_round


async def audit_of(pool: asyncpg.Pool, target: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT actor, action, before, after FROM audit_log WHERE target = $1 ORDER BY id", target
    )


async def test_a_post_without_the_csrf_token_or_from_elsewhere_is_403(
    asgi: ASGIApp, operator: Operator, sandbox_routes: SandboxRoutes, pool: asyncpg.Pool
) -> None:
    player = await operator.player(10_000)
    wdr = await held_withdrawal(operator, asgi, player, 5_000)
    path = f"/admin/withdrawals/{wdr}/approve"
    async with desk(asgi) as d:
        await d.sign_in(ADMIN_KEY)
        form = d.hidden(await d.get(path))
        assert set(form) == {"csrf", "key"}
        for fields, origin in (
            ({"key": form["key"]}, "https://wallet.test"),  # no token
            ({**form, "csrf": "0" * 64}, "https://wallet.test"),  # another token
            (form, "https://evil.test"),  # another site's page
            (form, None),  # neither Origin nor Referer
        ):
            refused = await d.post(path, fields, origin=origin)
            assert refused.status_code == 403, (fields, origin)
            assert "CSRF" in refused.text
        assert (await operator.call("GET", f"/v1/withdrawals/{wdr}"))["status"] == "held"
        assert await audit_of(pool, f"withdrawal:{wdr}") == []
    async with desk(asgi) as other:  # another session's token does not fit this one
        await other.sign_in(ADMIN_KEY)
        refused = await other.post(path, form)
        assert refused.status_code == 403


async def test_support_sees_no_approve_and_its_post_is_403(
    asgi: ASGIApp, operator: Operator, sandbox_routes: SandboxRoutes, pool: asyncpg.Pool
) -> None:
    player = await operator.player(10_000)
    wdr = await held_withdrawal(operator, asgi, player, 5_000)
    support = await api_key(operator, "support")
    async with desk(asgi) as d:
        await d.sign_in(support["key"])
        page = await d.get(f"/admin/withdrawals/{wdr}")
        assert "Approve" not in page and "Reject" not in page and "No action" in page
        nav = await d.get("/admin/players")
        assert ">Audit<" in nav and ">Withdrawals<" in nav
        await d.get(f"/admin/withdrawals/{wdr}/approve", expect=403)
        # Even with a form and token of its own session, the POST is refused by role.
        csrf = d.hidden(nav)["csrf"]
        refused = await d.post(f"/admin/withdrawals/{wdr}/approve", {"csrf": csrf, "key": "k1"})
        assert refused.status_code == 403 and "support role may not" in refused.text
        await d.get("/admin/events/evt_00000000000000000000000000000000/replay", expect=403)
    assert (await operator.call("GET", f"/v1/withdrawals/{wdr}"))["status"] == "held"
    assert await audit_of(pool, f"withdrawal:{wdr}") == []


async def test_an_approval_sent_twice_approves_once_and_is_audited_once(
    asgi: ASGIApp, operator: Operator, sandbox_routes: SandboxRoutes, pool: asyncpg.Pool
) -> None:
    player = await operator.player(10_000)
    wdr = await held_withdrawal(operator, asgi, player, 5_000)
    finance = await api_key(operator, "finance")
    path = f"/admin/withdrawals/{wdr}/approve"
    async with desk(asgi) as d:
        await d.sign_in(finance["key"])
        page = await d.get(f"/admin/withdrawals/{wdr}")
        assert "Approve" in page and "Reject" in page
        confirm = await d.get(path)
        assert "Approve this withdrawal?" in confirm and "50.00 EUR (5,000 minor units)" in confirm
        form = d.hidden(confirm)
        first = await d.post(path, form)
        assert first.status_code == 303
        assert first.headers["location"] == f"/admin/withdrawals/{wdr}?done=approve"
        again = await d.post(path, form)  # a double click, a reload of the POST
        assert again.status_code == 303
        landed = await d.get(first.headers["location"])
        assert "Withdrawal approved" in landed
        # A fresh confirmation is another action: refused, as the API refuses it.
        later = await d.confirm(path)
        assert later.status_code == 400 and "cannot be approved" in later.text
    await sandbox_routes.settle()
    assert (await operator.call("GET", f"/v1/withdrawals/{wdr}"))["status"] == "paid"
    assert await operator.balance(player) == 5_000
    entries = await audit_of(pool, f"withdrawal:{wdr}")
    assert [(e["actor"], e["action"]) for e in entries] == [
        (f"apikey:{finance['id']}", "withdrawal.approve")
    ]


async def test_a_rejection_gives_the_hold_back(
    asgi: ASGIApp, operator: Operator, sandbox_routes: SandboxRoutes, pool: asyncpg.Pool
) -> None:
    player = await operator.player(10_000)
    wdr = await held_withdrawal(operator, asgi, player, 4_000)
    assert await operator.balance(player) == 6_000
    async with desk(asgi) as d:
        await d.sign_in(ADMIN_KEY)
        done = await d.confirm(f"/admin/withdrawals/{wdr}/reject")
        assert done.status_code == 303
    assert await operator.balance(player) == 10_000
    assert [e["action"] for e in await audit_of(pool, f"withdrawal:{wdr}")] == ["withdrawal.reject"]


async def test_resolve_takes_the_apis_body_and_refuses_as_the_api_does(
    asgi: ASGIApp, operator: Operator, sandbox_routes: SandboxRoutes, pool: asyncpg.Pool
) -> None:
    player = await operator.player(10_000)
    wdr = await held_withdrawal(operator, asgi, player, 3_000)
    async with desk(asgi) as d:
        await d.sign_in(ADMIN_KEY)
        page = await d.get(f"/admin/withdrawals/{wdr}")
        assert "Resolve" not in page  # held: approve or reject it
        held = await d.confirm(f"/admin/withdrawals/{wdr}/resolve", outcome="paid", reason="x")
        assert held.status_code == 400 and "cannot be resolved" in held.text
        bad = await d.confirm(f"/admin/withdrawals/{wdr}/resolve", outcome="maybe", reason="x")
        assert bad.status_code == 400 and "outcome must be" in bad.text
    assert await audit_of(pool, f"withdrawal:{wdr}") == []


async def test_an_event_replay_is_confirmed_audited_and_done_once(
    asgi: ASGIApp, operator: Operator, sandbox_routes: SandboxRoutes, pool: asyncpg.Pool
) -> None:
    player = await operator.player(10_000)
    wdr = await held_withdrawal(operator, asgi, player, 2_000)
    event = (await operator.call("GET", f"/v1/events?payment_id={wdr}"))["data"][0]
    path = f"/admin/events/{event['id']}/replay"
    async with desk(asgi) as d:
        await d.sign_in(ADMIN_KEY)
        listing = await d.get("/admin/events", payment_id=wdr)
        assert path in listing
        form = d.hidden(await d.get(path))
        for _ in range(2):
            done = await d.post(path, form)
            assert done.status_code == 303
        await d.get("/admin/events/evt_0000/replay", expect=404)
    replayed = (await operator.call("GET", f"/v1/events?payment_id={wdr}"))["data"][0]
    assert replayed["replays"] == 1
    assert [e["action"] for e in await audit_of(pool, f"event:{event['id']}")] == ["event.replay"]


async def test_settling_a_round_that_is_not_stale_is_refused(
    asgi: ASGIApp, table_factory: TableFactory, pool: asyncpg.Pool
) -> None:
    table = await table_factory(5_000)
    await table.bet(100, round_id="r-open")
    path = f"/admin/rounds/{table.provider}/{table.player_id}/r-open/settle"
    async with desk(asgi) as d:
        await d.sign_in(ADMIN_KEY)
        page = await d.get(f"/admin/rounds/{table.provider}/{table.player_id}/r-open")
        assert "Settle" not in page  # not stale yet
        refused = await d.confirm(path, action="refund", reason="provider down")
        assert refused.status_code == 400 and "stale" in refused.text
    assert await table.balance() == 4_900


async def test_a_stale_round_is_settled_once_from_its_timeline(
    asgi: ASGIApp, table_factory: TableFactory, pool: asyncpg.Pool
) -> None:
    table = await table_factory(5_000)
    await table.bet(700, round_id="r-stale")
    await age_round(pool, table.provider, table.player_id, "r-stale")
    timeline = f"/admin/rounds/{table.provider}/{table.player_id}/r-stale"
    async with desk(asgi) as d:
        await d.sign_in(ADMIN_KEY)
        stale = await d.get("/admin/rounds", state="stale", provider=table.provider)
        assert "r-stale" in stale
        assert "Settle" in await d.get(timeline)
        confirm = await d.get(timeline + "/settle")
        form = d.hidden(confirm)
        empty = await d.post(timeline + "/settle", {**form, "action": "refund", "reason": ""})
        assert empty.status_code == 400  # the API's rule on `reason`
        fields = {**form, "action": "refund", "reason": "provider never closed it"}
        for _ in range(2):
            done = await d.post(timeline + "/settle", fields)
            assert done.status_code == 303 and done.headers["location"].endswith("?done=settle")
        settled = await d.get(done.headers["location"])
        assert "Round settled" in settled and "provider never closed it" in settled
    assert await table.balance() == 5_000
    target = f"round:{table.provider}/{table.player_id}/r-stale"
    assert [e["action"] for e in await audit_of(pool, target)] == ["round.settle"]


async def test_a_form_without_its_key_or_for_nothing_is_refused(
    asgi: ASGIApp, operator: Operator, sandbox_routes: SandboxRoutes
) -> None:
    player = await operator.player(10_000)
    wdr = await held_withdrawal(operator, asgi, player, 5_000)
    async with desk(asgi) as d:
        await d.sign_in(ADMIN_KEY)
        form = d.hidden(await d.get(f"/admin/withdrawals/{wdr}/approve"))
        for key in ("", "\x00bad"):
            refused = await d.post(f"/admin/withdrawals/{wdr}/approve", {**form, "key": key})
            assert refused.status_code == 400 and "key is missing" in refused.text
        ghost = await d.post("/admin/withdrawals/wdr_ghost/approve", form)
        assert ghost.status_code == 404 and "not found" in ghost.text
        await d.get("/admin/withdrawals/wdr_ghost/approve", 404)
    assert (await operator.call("GET", f"/v1/withdrawals/{wdr}"))["status"] == "held"


async def test_a_payout_its_psp_holds_is_resolved_failed_once_with_the_reason(
    asgi: ASGIApp, operator: Operator, sandbox_routes: SandboxRoutes, pool: asyncpg.Pool
) -> None:
    player = await operator.player(10_000)
    wdr = await held_withdrawal(operator, asgi, player, 6_000, scenario="held-for-kyc")
    async with desk(asgi) as d:
        await d.sign_in(ADMIN_KEY)
        assert (await d.confirm(f"/admin/withdrawals/{wdr}/approve")).status_code == 303
        await sandbox_routes.settle()
        sent = await d.get(f"/admin/withdrawals/{wdr}")
        assert "Resolve" in sent and "Approve" not in sent  # sent to its PSP, not final
        path = f"/admin/withdrawals/{wdr}/resolve"
        form = d.hidden(await d.get(path))
        fields = {**form, "outcome": "failed", "reason": "PSP support: payout cancelled"}
        for _ in range(2):
            done = await d.post(path, fields)
            assert done.status_code == 303 and done.headers["location"].endswith("?done=resolve")
    assert (await operator.call("GET", f"/v1/withdrawals/{wdr}"))["status"] == "failed"
    assert await operator.balance(player) == 10_000
    entries = await audit_of(pool, f"withdrawal:{wdr}")
    assert [e["action"] for e in entries] == ["withdrawal.approve", "withdrawal.resolve"]
    assert "PSP support: payout cancelled" in str(entries[-1]["after"])
