"""The sandbox PSP on its own: signing, the API, the hosted page, every scenario, settlements.

Everything runs in-process: the sandbox behind one ``httpx.ASGITransport``, and a tiny merchant
app that records webhooks behind another, handed to the sandbox as ``SandboxConfig.http``.
Delays are configured in tens of milliseconds so the file stays fast.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.cli import build_parser
from app.dev.sandbox_psp import SandboxConfig, SandboxState, create_sandbox_app
from app.dev.sandbox_psp.server import config_from_env
from app.dev.sandbox_psp.settlements import fee_for
from app.payments import signing
from app.payments.signing import SignatureError, sign, verify

API_KEY = "sk_test_" + secrets.token_hex(8)
SECRET = b"whsec_" + secrets.token_hex(16).encode()
BASE_URL = "http://psp.test"
HOOK_URL = "http://merchant.test/hooks"
# Small but distinct, so a test can tell which delay it is looking at.
FAST: dict[str, Any] = {
    "timeout_seconds": 0.3,
    "webhook_delay": 0.15,
    "webhook_retries": 3,
    "retry_backoff": 0.01,
    "burst": 2,
    "payout_delay": 0.02,
}


# -- signing ---------------------------------------------------------------------------------


def test_sign_matches_a_known_vector() -> None:
    # Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test
    header = sign(b"whsec_test", b'{"a":1}', 1700000000)
    assert header == (
        "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
    )


def test_verify_accepts_a_fresh_signature_within_tolerance_either_way() -> None:
    body = b'{"id":"evt_1"}'
    header = sign(SECRET, body, 1_000_000)
    verify(SECRET, body, header, now=1_000_000)
    verify(SECRET, body, header, now=1_000_300)  # exactly the tolerance: still fresh
    verify(SECRET, body, header, now=999_700)  # sender's clock ahead of ours
    verify(SECRET, body, header, now=1_000_010, tolerance=10)


@pytest.mark.parametrize("header", [None, "", "   "])
def test_verify_without_a_header_is_missing(header: str | None) -> None:
    with pytest.raises(SignatureError) as caught:
        verify(SECRET, b"{}", header, now=time.time())
    assert caught.value.reason == "missing"
    assert str(caught.value) == "missing"


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        "v1=" + "0" * 64,  # no timestamp
        "t=1700000000",  # no v1
        "t=1700000000,v0=abc",  # only schemes we do not know
        "t=abc,v1=" + "0" * 64,
        "t=-5,v1=" + "0" * 64,
        "t=1.5,v1=" + "0" * 64,
        "t=١٢٣,v1=" + "0" * 64,  # Arabic-Indic digits: isdigit() but not a timestamp
        "t=" + "9" * 5000 + ",v1=" + "0" * 64,  # too long to be a time
        "t=1,t=2,v1=" + "0" * 64,  # two timestamps: which one was signed?
        "t=1700000000,v1",
        "t=1700000000,=abc,v1=" + "0" * 64,
        "t=1700000000,v1=" + "0" * 64 + ",",
    ],
)
def test_verify_refuses_a_malformed_header(header: str) -> None:
    with pytest.raises(SignatureError) as caught:
        verify(SECRET, b"{}", header, now=1700000000)
    assert caught.value.reason == "malformed"


@pytest.mark.parametrize("now", [1_000_301, 999_699, 5_000_000, 0])
def test_verify_refuses_an_authentic_but_stale_delivery(now: float) -> None:
    header = sign(SECRET, b"{}", 1_000_000)
    with pytest.raises(SignatureError) as caught:
        verify(SECRET, b"{}", header, now=now)
    assert caught.value.reason == "stale"


def test_verify_refuses_mismatches() -> None:
    body = b'{"amount":100}'
    t = int(time.time())
    header = sign(SECRET, body, t)
    cases = {
        "wrong secret": (b"other-secret", body, header),
        "tampered body": (SECRET, b'{"amount":10000}', header),
        "moved timestamp": (SECRET, body, header.replace(f"t={t}", f"t={t + 1}")),
        "truncated mac": (SECRET, body, header[:-1]),
        "upper-case mac": (SECRET, body, header.upper().replace("T=", "t=").replace("V1", "v1")),
        "non-ascii mac": (SECRET, body, f"t={t},v1=é"),
    }
    for name, (secret, signed_body, candidate) in cases.items():
        with pytest.raises(SignatureError) as caught:
            verify(secret, signed_body, candidate, now=t)
        assert caught.value.reason == "mismatch", name


def test_verify_checks_the_mac_before_the_age() -> None:
    """A forged header with an old timestamp is a mismatch, not merely stale."""
    with pytest.raises(SignatureError) as caught:
        verify(SECRET, b"{}", "t=1,v1=" + "0" * 64, now=time.time())
    assert caught.value.reason == "mismatch"


def test_verify_accepts_any_v1_entry_for_secret_rotation() -> None:
    body = b'{"id":"evt_2"}'
    t = int(time.time())
    old = sign(b"old-secret", body, t).split(",")[1]
    new = sign(SECRET, body, t).split(",")[1]
    verify(SECRET, body, f"t={t},{old},{new}", now=t)
    verify(SECRET, body, f"t={t}, {new} , {old}", now=t)  # order and spaces do not matter
    verify(b"old-secret", body, f"t={t},{old},{new}", now=t)
    with pytest.raises(SignatureError) as caught:
        verify(b"third-secret", body, f"t={t},{old},{new}", now=t)
    assert caught.value.reason == "mismatch"


def test_verify_ignores_unknown_schemes() -> None:
    body = b"{}"
    t = int(time.time())
    mac = sign(SECRET, body, t).split(",")[1]
    verify(SECRET, body, f"t={t},v0=deadbeef,{mac},v2=whatever,x=y", now=t)


# -- the test bench --------------------------------------------------------------------------


@dataclass
class Received:
    """One webhook the merchant app received."""

    body: bytes
    signature: str | None
    at: float

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = orjson.loads(self.body)
        return event

    def verify(self) -> None:
        verify(SECRET, self.body, self.signature, now=time.time())


class Receiver:
    """The merchant's webhook endpoint: records each delivery; answers 500 while
    ``failures_left`` lasts, 204 after."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.failures_left = 0
        self.app = Starlette(routes=[Route("/hooks", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        self.received.append(Received(body, request.headers.get("x-signature"), time.time()))
        if self.failures_left > 0:
            self.failures_left -= 1
            return Response(status_code=500)
        return Response(status_code=204)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [r.event for r in self.received]

    async def wait_for(self, count: int, timeout: float = 2.0) -> list[Received]:
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                await asyncio.sleep(0.002)
        return self.received


@dataclass
class Sandbox:
    app: Starlette
    state: SandboxState
    client: httpx.AsyncClient
    receiver: Receiver
    config: SandboxConfig
    keys: list[str] = field(default_factory=list)

    @staticmethod
    def body(**fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "reference": "dep-" + secrets.token_hex(4),
            "kind": "deposit",
            "amount": 1000,
            "currency": "EUR",
            "method": "card",
            "webhook_url": HOOK_URL,
        }
        body.update(fields)
        return body

    async def post(
        self, body: dict[str, Any], *, key: str | None = None, expect: int | None = 201
    ) -> httpx.Response:
        key = key or "idem-" + secrets.token_hex(6)
        self.keys.append(key)
        response = await self.client.post(
            "/v1/payments", json=body, headers={"idempotency-key": key}
        )
        if expect is not None:
            assert response.status_code == expect, response.text
        return response

    async def create(self, **fields: Any) -> dict[str, Any]:
        answer: dict[str, Any] = (await self.post(self.body(**fields))).json()
        return answer

    async def get(self, psp_payment_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/v1/payments/{psp_payment_id}")
        assert response.status_code == 200, response.text
        payment: dict[str, Any] = response.json()
        return payment

    async def complete(self, psp_payment_id: str, outcome: str, expect: int = 200) -> Any:
        response = await self.client.post(
            f"/v1/sandbox/payments/{psp_payment_id}/complete", json={"outcome": outcome}
        )
        assert response.status_code == expect, response.text
        return response.json()

    async def report(self, day: str) -> dict[str, Any]:
        response = await self.client.get("/v1/settlements", params={"date": day})
        assert response.status_code == 200, response.text
        report: dict[str, Any] = response.json()
        return report


SandboxFactory = Callable[..., Awaitable[Sandbox]]


@pytest.fixture
async def sandbox_factory() -> AsyncIterator[SandboxFactory]:
    async with AsyncExitStack() as stack:

        async def make(**overrides: Any) -> Sandbox:
            receiver = Receiver()
            hooks = httpx.AsyncClient(transport=httpx.ASGITransport(app=receiver.app))
            await stack.enter_async_context(hooks)
            config = SandboxConfig(
                API_KEY, SECRET, BASE_URL, **{"http": hooks, **FAST, **overrides}
            )
            app = create_sandbox_app(config)
            state: SandboxState = app.state.sandbox
            # Stops timers and deliveries before the receiver's client closes (LIFO).
            stack.push_async_callback(state.aclose)
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url=BASE_URL,
                headers={"authorization": f"Bearer {API_KEY}"},
            )
            await stack.enter_async_context(client)
            return Sandbox(app, state, client, receiver, config)

        yield make


@pytest.fixture
async def sandbox(sandbox_factory: SandboxFactory) -> Sandbox:
    return await sandbox_factory()


def utc_day(moment: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(moment))


# -- authentication and validation -----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/payments"),
        ("GET", "/v1/payments/psp_x"),
        ("GET", "/v1/settlements?date=2026-01-01"),
        ("POST", "/v1/sandbox/payments/psp_x/complete"),
        ("POST", "/v1/sandbox/settlement-overrides"),
        ("POST", "/v1/sandbox/settlement-extra"),
        ("GET", "/v1/sandbox/webhook-deliveries"),
    ],
)
@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-key", f"Basic {API_KEY}", f"Bearer {API_KEY}x"]
)
async def test_api_refuses_a_missing_or_wrong_key(
    sandbox: Sandbox, method: str, path: str, authorization: str | None
) -> None:
    headers = {"idempotency-key": "k"}
    if authorization is not None:
        headers["authorization"] = authorization
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app), base_url=BASE_URL
    ) as anonymous:
        response = await anonymous.request(method, path, json=Sandbox.body(), headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"
    assert sandbox.state.payments == {}


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"reference": None}, "reference"),
        ({"reference": "has space"}, "reference"),
        ({"reference": "x" * 129}, "reference"),
        ({"kind": "refund"}, "kind"),
        ({"amount": 0}, "amount"),
        ({"amount": -5}, "amount"),
        ({"amount": 10.5}, "amount"),
        ({"amount": "1000"}, "amount"),
        ({"amount": True}, "amount"),
        ({"amount": 10**12 + 1}, "amount"),
        ({"currency": "eur"}, "currency"),
        ({"currency": None}, "currency"),
        ({"method": None}, "method"),
        ({"method": ""}, "method"),
        ({"rail": 7}, "rail"),
        ({"country": "India"}, "country"),
        ({"scenario": "explode"}, "scenario"),
        ({"scenario": ["succeed"]}, "scenario"),
        ({"webhook_url": None}, "webhook_url"),
        ({"webhook_url": "ftp://merchant.test/hooks"}, "webhook_url"),
        ({"webhook_url": "http://"}, "webhook_url"),
        ({"return_url": "javascript:alert(1)"}, "return_url"),
    ],
)
async def test_create_refuses_invalid_fields(
    sandbox: Sandbox, fields: dict[str, Any], field_name: str
) -> None:
    response = await sandbox.post(Sandbox.body(**fields), expect=400)
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["field"] == field_name
    assert error["message"]
    assert sandbox.state.payments == {}


async def test_create_needs_an_idempotency_key_and_a_json_object(sandbox: Sandbox) -> None:
    response = await sandbox.client.post("/v1/payments", json=Sandbox.body())
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "Idempotency-Key"
    for content in (b"not json", b"[1, 2]"):
        response = await sandbox.client.post(
            "/v1/payments", content=content, headers={"idempotency-key": "k1"}
        )
        assert response.status_code == 400
        assert response.json()["error"] == {
            "code": "invalid_request",
            "message": response.json()["error"]["message"],
            "field": "body",
        }


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"method": "bank_transfer"}, "method"),
        ({"method": "card", "rail": "upi"}, "rail"),
        ({"method": "upi", "rail": "swift"}, "rail"),
    ],
)
async def test_create_refuses_a_method_not_offered_with_422(
    sandbox: Sandbox, fields: dict[str, Any], field_name: str
) -> None:
    response = await sandbox.post(Sandbox.body(**fields), expect=422)
    error = response.json()["error"]
    assert error["code"] == "method_unavailable"
    assert error["field"] == field_name


async def test_unknown_payments_and_routes_are_404(sandbox: Sandbox) -> None:
    for method, path, body in [
        ("GET", "/v1/payments/psp_nope", None),
        ("POST", "/v1/sandbox/payments/psp_nope/complete", {"outcome": "approve"}),
        ("POST", "/v1/sandbox/settlement-overrides", {"psp_payment_id": "psp_nope", "drop": True}),
        ("GET", "/v1/nothing-here", None),
    ]:
        response = await sandbox.client.request(method, path, json=body)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    page = await sandbox.client.get("/pay/psp_nope")
    assert page.status_code == 404
    assert "No such payment" in page.text


# -- idempotency -----------------------------------------------------------------------------


async def test_create_is_idempotent_per_key(sandbox: Sandbox) -> None:
    body = Sandbox.body(kind="payout", amount=2500)
    first = await sandbox.post(body, key="idem-1")
    assert "idempotent-replayed" not in first.headers
    # Same key and body, keys in another order: the same answer, marked as a replay.
    again = await sandbox.post(dict(reversed(list(body.items()))), key="idem-1")
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert len(sandbox.state.payments) == 1
    # Same key, another body: refused.
    conflict = await sandbox.post({**body, "amount": 2501}, key="idem-1", expect=409)
    assert conflict.json()["error"]["code"] == "idempotency_conflict"
    # Another key, same body: another payment (a reference is not unique at a PSP).
    other = await sandbox.post(body, key="idem-2")
    assert other.json()["psp_payment_id"] != first.json()["psp_payment_id"]
    assert len(sandbox.state.payments) == 2


async def test_concurrent_creates_with_one_key_make_one_payment(sandbox: Sandbox) -> None:
    body = Sandbox.body()
    answers = await asyncio.gather(*(sandbox.post(body, key="same-key") for _ in range(20)))
    assert len({a.json()["psp_payment_id"] for a in answers}) == 1
    assert len(sandbox.state.payments) == 1


# -- deposits on the hosted page ---------------------------------------------------------------


async def test_card_deposit_approved_on_the_hosted_page(sandbox: Sandbox) -> None:
    created = await sandbox.create(
        reference="dep-page-1", amount=1234, return_url="https://casino.test/back?tab=cashier"
    )
    pid = created["psp_payment_id"]
    assert created == {
        "psp_payment_id": pid,
        "status": "requires_action",
        "redirect_url": f"{BASE_URL}/pay/{pid}",
    }
    assert (await sandbox.get(pid))["status"] == "requires_action"

    page = await sandbox.client.get(created["redirect_url"], headers={"authorization": ""})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<dd id="amount">12.34 EUR</dd>' in page.text
    assert '<dd id="reference">dep-page-1</dd>' in page.text
    assert f'<form method="post" action="{pid}/approve">' in page.text
    assert f'<form method="post" action="{pid}/decline">' in page.text
    assert "<script" not in page.text
    assert sandbox.receiver.received == []  # nothing happens until the person decides

    approved = await sandbox.client.post(f"/pay/{pid}/approve", headers={"authorization": ""})
    assert approved.status_code == 303
    location = urlsplit(approved.headers["location"])
    assert location.netloc == "casino.test" and location.path == "/back"
    assert parse_qs(location.query) == {
        "tab": ["cashier"],
        "psp_payment_id": [pid],
        "status": ["succeeded"],
    }
    [received] = await sandbox.receiver.wait_for(1)
    received.verify()
    event = received.event
    assert event["id"].startswith("evt_")
    assert event["type"] == "payment.succeeded"
    assert abs(event["created"] - time.time()) < 5
    assert event["data"] == {
        "psp_payment_id": pid,
        "reference": "dep-page-1",
        "kind": "deposit",
        "amount": 1234,
        "currency": "EUR",
        "status": "succeeded",
    }
    payment = await sandbox.get(pid)
    assert payment["status"] == "succeeded" and "failure_code" not in payment

    # A second click changes nothing and sends nothing; the page now shows the result.
    again = await sandbox.client.post(f"/pay/{pid}/decline")
    assert again.status_code == 303
    assert "status=succeeded" in again.headers["location"]
    await sandbox.state.idle()
    assert len(sandbox.receiver.received) == 1
    shown = await sandbox.client.get(f"/pay/{pid}")
    assert 'data-status="succeeded"' in shown.text and "<form" not in shown.text


async def test_deposit_declined_on_the_hosted_page_without_a_return_url(sandbox: Sandbox) -> None:
    created = await sandbox.create()
    pid = created["psp_payment_id"]
    declined = await sandbox.client.post(f"/pay/{pid}/decline")
    assert declined.status_code == 200
    assert 'data-status="failed"' in declined.text
    assert "Payment declined." in declined.text
    [received] = await sandbox.receiver.wait_for(1)
    received.verify()
    assert received.event["type"] == "payment.failed"
    assert received.event["data"]["failure_code"] == "declined"
    payment = await sandbox.get(pid)
    assert (payment["status"], payment["failure_code"]) == ("failed", "declined")


async def test_hosted_page_serves_deposits_only(sandbox: Sandbox) -> None:
    payout = await sandbox.create(kind="payout")
    for response in (
        await sandbox.client.get(f"/pay/{payout['psp_payment_id']}"),
        await sandbox.client.post(f"/pay/{payout['psp_payment_id']}/approve"),
    ):
        assert response.status_code == 404
    deposit = await sandbox.create()
    response = await sandbox.client.post(f"/pay/{deposit['psp_payment_id']}/maybe")
    assert response.status_code == 404
    assert (await sandbox.get(deposit["psp_payment_id"]))["status"] == "requires_action"


async def test_upi_deposit_has_a_deep_link(sandbox: Sandbox) -> None:
    created = await sandbox.create(
        method="upi", currency="INR", amount=50_005, country="IN", reference="upi-1"
    )
    pid = created["psp_payment_id"]
    assert created["status"] == "requires_action"
    assert created["redirect_url"] == f"{BASE_URL}/pay/{pid}"
    link = urlsplit(created["deep_link"])
    assert (link.scheme, link.netloc) == ("upi", "pay")
    assert parse_qs(link.query) == {
        "pa": ["sandbox@psp"],
        "pn": ["Sandbox PSP"],
        "tr": [pid],
        "tn": ["upi-1"],
        "am": ["500.05"],
        "cu": ["INR"],
    }
    assert (await sandbox.get(pid))["rail"] == "upi"
    upi_payout = await sandbox.create(method="upi", currency="INR", kind="payout")
    assert upi_payout["status"] == "pending" and "deep_link" not in upi_payout


# -- payouts and the complete helper -----------------------------------------------------------


async def test_payout_is_pending_then_succeeds_after_the_delay(sandbox: Sandbox) -> None:
    created = await sandbox.create(kind="payout", amount=7000, reference="po-1")
    pid = created["psp_payment_id"]
    assert created == {"psp_payment_id": pid, "status": "pending"}
    assert (await sandbox.get(pid))["status"] == "pending"
    [received] = await sandbox.receiver.wait_for(1)
    received.verify()
    assert received.event["type"] == "payment.succeeded"
    assert received.event["data"]["kind"] == "payout"
    assert (await sandbox.get(pid))["status"] == "succeeded"


async def test_complete_helper_decides_for_the_person(sandbox: Sandbox) -> None:
    approve = (await sandbox.create())["psp_payment_id"]
    decline = (await sandbox.create())["psp_payment_id"]
    assert (await sandbox.complete(approve, "approve"))["status"] == "succeeded"
    declined = await sandbox.complete(decline, "decline")
    assert (declined["status"], declined["failure_code"]) == ("failed", "declined")
    received = await sandbox.receiver.wait_for(2)
    assert sorted(r.event["type"] for r in received) == ["payment.failed", "payment.succeeded"]
    # Decided is decided; and only the two outcomes exist.
    conflict = await sandbox.complete(approve, "decline", expect=409)
    assert conflict["error"]["code"] == "invalid_state"
    bad = await sandbox.complete((await sandbox.create())["psp_payment_id"], "maybe", expect=400)
    assert bad["error"]["field"] == "outcome"


async def test_complete_helper_can_decline_a_pending_payout(
    sandbox_factory: SandboxFactory,
) -> None:
    sandbox = await sandbox_factory(payout_delay=10)
    pid = (await sandbox.create(kind="payout"))["psp_payment_id"]
    assert (await sandbox.complete(pid, "decline"))["failure_code"] == "declined"
    [received] = await sandbox.receiver.wait_for(1)
    assert received.event["type"] == "payment.failed"


# -- scenarios -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["deposit", "payout"])
async def test_scenario_decline(sandbox: Sandbox, kind: str) -> None:
    created = await sandbox.create(kind=kind, scenario="decline")
    pid = created["psp_payment_id"]
    assert created == {"psp_payment_id": pid, "status": "failed", "failure_code": "declined"}
    [received] = await sandbox.receiver.wait_for(1)
    received.verify()
    assert received.event["type"] == "payment.failed"
    assert received.event["data"]["status"] == "failed"
    assert received.event["data"]["failure_code"] == "declined"
    payment = await sandbox.get(pid)
    assert (payment["status"], payment["failure_code"]) == ("failed", "declined")


async def test_scenario_decline_then_succeed(sandbox: Sandbox) -> None:
    body = Sandbox.body(kind="payout", reference="po-dts", scenario="decline-then-succeed")
    first = (await sandbox.post(body, key="attempt-1")).json()
    assert (first["status"], first["failure_code"]) == ("failed", "declined")
    # The same key replays the decline; only a new attempt (new key) gets through.
    assert (await sandbox.post(body, key="attempt-1")).json() == first
    second = (await sandbox.post(body, key="attempt-2")).json()
    assert second["status"] == "pending"
    assert second["psp_payment_id"] != first["psp_payment_id"]
    received = await sandbox.receiver.wait_for(2)
    assert [(r.event["type"], r.event["data"]["psp_payment_id"]) for r in received] == [
        ("payment.failed", first["psp_payment_id"]),
        ("payment.succeeded", second["psp_payment_id"]),
    ]
    assert (await sandbox.get(second["psp_payment_id"]))["status"] == "succeeded"


async def test_scenario_timeout(sandbox: Sandbox) -> None:
    body = Sandbox.body(kind="payout", reference="po-slow", scenario="timeout")
    # The caller's timeout (0.05 s) is shorter than the sandbox's hold (timeout_seconds, 0.3 s).
    # httpx's own timeouts do not apply through ASGITransport, so the test times out the call.
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await sandbox.post(body, key="slow-1")
    assert time.monotonic() - started < 0.25
    # The PSP went ahead regardless; a retry with the same key learns the answer at once.
    [payment] = sandbox.state.payments.values()
    started = time.monotonic()
    retry = await sandbox.post(body, key="slow-1")
    assert time.monotonic() - started < 0.2
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json() == {"psp_payment_id": payment.psp_payment_id, "status": "pending"}
    [received] = await sandbox.receiver.wait_for(1)
    assert received.event["type"] == "payment.succeeded"
    assert received.event["data"]["psp_payment_id"] == payment.psp_payment_id
    # A patient caller gets the answer after timeout_seconds.
    started = time.monotonic()
    patient = await sandbox.post(Sandbox.body(reference="dep-slow", scenario="timeout"))
    assert time.monotonic() - started >= sandbox.config.timeout_seconds
    assert patient.json()["status"] == "requires_action"


async def test_scenario_5xx_burst(sandbox: Sandbox) -> None:
    body = Sandbox.body(reference="dep-burst", scenario="5xx-burst")
    for _ in range(sandbox.config.burst):
        response = await sandbox.post(body, key="burst-1", expect=503)
        assert response.json()["error"]["code"] == "service_unavailable"
        assert sandbox.state.payments == {}
    created = await sandbox.post(body, key="burst-1")
    assert created.json()["status"] == "requires_action"
    assert "idempotent-replayed" not in created.headers
    assert len(sandbox.state.payments) == 1
    # Another reference gets its own burst.
    await sandbox.post(Sandbox.body(scenario="5xx-burst"), expect=503)


async def test_scenario_429(sandbox: Sandbox) -> None:
    body = Sandbox.body(kind="payout", reference="po-429", scenario="429")
    limited = await sandbox.post(body, key="rl-1", expect=429)
    assert limited.headers["retry-after"] == "1"
    assert limited.json()["error"]["code"] == "rate_limited"
    assert sandbox.state.payments == {}
    created = await sandbox.post(body, key="rl-1")
    assert created.json()["status"] == "pending"
    await sandbox.receiver.wait_for(1)


async def test_scenario_duplicate_webhooks(sandbox: Sandbox) -> None:
    pid = (await sandbox.create(kind="payout", scenario="duplicate-webhooks"))["psp_payment_id"]
    received = await sandbox.receiver.wait_for(3)
    await sandbox.state.idle()
    assert len(sandbox.receiver.received) == 3
    for r in received:
        r.verify()
    assert len({r.event["id"] for r in received}) == 1
    assert {r.body for r in received} == {received[0].body}  # the very same event
    assert received[0].event["data"]["psp_payment_id"] == pid
    assert [d.event_id for d in sandbox.state.deliveries] == [received[0].event["id"]] * 3


async def test_scenario_delayed_webhook(sandbox: Sandbox) -> None:
    created = await sandbox.create(kind="payout", scenario="delayed-webhook")
    pid = created["psp_payment_id"]
    async with asyncio.timeout(1):
        while (await sandbox.get(pid))["status"] != "succeeded":
            await asyncio.sleep(0.005)
    # The PSP says succeeded, but the webhook is still on its way: a wallet must poll or wait.
    assert sandbox.receiver.received == []
    [received] = await sandbox.receiver.wait_for(1)
    settled_at = sandbox.state.payments[pid].settled_at
    assert settled_at is not None
    # Less a little: the event loop's timer may fire a clock tick early.
    assert received.at - settled_at >= sandbox.config.webhook_delay - 0.01
    received.verify()  # signed when sent, so never stale however late
    assert received.event["type"] == "payment.succeeded"


async def test_scenario_out_of_order_webhooks(sandbox: Sandbox) -> None:
    pid = (await sandbox.create(scenario="out-of-order-webhooks"))["psp_payment_id"]
    await sandbox.complete(pid, "approve")
    received = await sandbox.receiver.wait_for(2)
    for r in received:
        r.verify()
    succeeded, processing = (r.event for r in received)
    assert (succeeded["type"], processing["type"]) == ("payment.succeeded", "payment.processing")
    assert succeeded["id"] != processing["id"]
    assert processing["created"] < succeeded["created"]
    assert processing["data"]["status"] == "pending"
    assert succeeded["data"]["status"] == "succeeded"
    assert (await sandbox.get(pid))["status"] == "succeeded"


async def test_scenario_held_for_kyc_payout(sandbox: Sandbox) -> None:
    created = await sandbox.create(kind="payout", scenario="held-for-kyc", amount=90_000)
    pid = created["psp_payment_id"]
    assert created["status"] == "pending"
    [held] = await sandbox.receiver.wait_for(1)
    held.verify()
    assert held.event["type"] == "payment.held"
    assert held.event["data"]["status"] == "held"
    assert (await sandbox.get(pid))["status"] == "held"
    await asyncio.sleep(sandbox.config.payout_delay * 3)
    assert (await sandbox.get(pid))["status"] == "held"  # waits for the review, however long
    assert (await sandbox.complete(pid, "approve"))["status"] == "succeeded"
    received = await sandbox.receiver.wait_for(2)
    assert received[1].event["type"] == "payment.succeeded"


async def test_scenario_held_for_kyc_deposit_rejected(sandbox: Sandbox) -> None:
    pid = (await sandbox.create(scenario="held-for-kyc"))["psp_payment_id"]
    page = await sandbox.client.post(f"/pay/{pid}/approve")
    assert 'data-status="held"' in page.text
    [held] = await sandbox.receiver.wait_for(1)
    assert held.event["type"] == "payment.held"
    rejected = await sandbox.complete(pid, "decline")
    assert (rejected["status"], rejected["failure_code"]) == ("failed", "kyc_rejected")
    received = await sandbox.receiver.wait_for(2)
    assert received[1].event["type"] == "payment.failed"
    assert received[1].event["data"]["failure_code"] == "kyc_rejected"


async def test_scenario_bad_signature(sandbox: Sandbox) -> None:
    await sandbox.create(kind="payout", scenario="bad-signature")
    [received] = await sandbox.receiver.wait_for(1)
    assert received.signature is not None and received.signature.startswith("t=")
    with pytest.raises(SignatureError) as caught:
        received.verify()
    assert caught.value.reason == "mismatch"
    # The merchant answered 2xx (it is the merchant's job to refuse), so it was sent once.
    await sandbox.state.idle()
    assert len(sandbox.receiver.received) == 1


# -- webhook delivery ------------------------------------------------------------------------


async def test_failed_deliveries_are_retried_with_the_same_event(sandbox: Sandbox) -> None:
    sandbox.receiver.failures_left = 2
    await sandbox.create(kind="payout")
    received = await sandbox.receiver.wait_for(3)
    await sandbox.state.idle()
    assert len({r.event["id"] for r in received}) == 1
    for r in received:
        r.verify()
    attempts = [(d.attempt, d.status_code, d.error) for d in sandbox.state.deliveries]
    assert attempts == [(1, 500, None), (2, 500, None), (3, 204, None)]
    assert all(d.url == HOOK_URL for d in sandbox.state.deliveries)


async def test_deliveries_stop_after_the_configured_retries(sandbox: Sandbox) -> None:
    sandbox.receiver.failures_left = 100
    await sandbox.create(kind="payout")
    await sandbox.state.idle()
    assert [d.attempt for d in sandbox.state.deliveries] == [1, 2, 3, 4]  # 1 + webhook_retries
    assert not any(d.ok for d in sandbox.state.deliveries)
    listed = await sandbox.client.get("/v1/sandbox/webhook-deliveries")
    assert [d["status_code"] for d in listed.json()["deliveries"]] == [500] * 4


async def test_unreachable_receiver_is_recorded(sandbox_factory: SandboxFactory) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as unreachable:
        sandbox = await sandbox_factory(http=unreachable, webhook_retries=1)
        await sandbox.create(kind="payout")
        await sandbox.state.idle()
    deliveries = sandbox.state.deliveries
    assert [(d.attempt, d.status_code) for d in deliveries] == [(1, None), (2, None)]
    assert all(d.error == "ConnectError: connection refused" for d in deliveries)


async def test_shutdown_stops_timers_and_deliveries(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory(payout_delay=30)
    async with sandbox.app.router.lifespan_context(sandbox.app):
        pid = (await sandbox.create(kind="payout"))["psp_payment_id"]
        assert sandbox.state.background_tasks == 1
    assert sandbox.state.background_tasks == 0
    assert sandbox.state.payments[pid].status == "pending"
    assert sandbox.state.deliveries == []


# -- settlements -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "bps", "fee"),
    [
        (10_000, 150, 150),
        (100, 150, 2),  # 1.5: half up
        (1033, 150, 15),  # 15.495
        (1034, 150, 16),  # 15.51
        (1, 150, 0),  # 0.015
        (33, 150, 0),  # 0.495
        (34, 150, 1),  # 0.51
        (5000, 1, 1),  # 0.5
        (4999, 1, 0),  # 0.4999
        (12_345, 0, 0),
        (12_345, 10_000, 12_345),
        (-100, 150, -2),  # planted negative lines round away from zero too
    ],
)
def test_fee_is_rounded_half_up(amount: int, bps: int, fee: int) -> None:
    assert fee_for(amount, bps) == fee


async def test_settlement_report_lists_the_days_successes_with_fees(sandbox: Sandbox) -> None:
    deposit = (await sandbox.create(amount=1034, reference="s-dep"))["psp_payment_id"]
    await sandbox.complete(deposit, "approve")
    payout = (await sandbox.create(kind="payout", amount=10_000, reference="s-po"))[
        "psp_payment_id"
    ]
    inr = (await sandbox.create(amount=100, currency="INR", method="upi", reference="s-inr"))[
        "psp_payment_id"
    ]
    await sandbox.complete(inr, "approve")
    await sandbox.create(amount=500, scenario="decline")  # failed: not settled
    await sandbox.create(amount=700)  # waiting for the person: not settled
    await sandbox.state.idle()
    settled_at = sandbox.state.payments[deposit].settled_at
    assert settled_at is not None
    day = utc_day(settled_at)
    # Near midnight UTC the three could straddle two days; the test then checks a smaller set.
    same_day = {
        pid
        for pid in (deposit, payout, inr)
        if utc_day(sandbox.state.payments[pid].settled_at or 0) == day
    }
    report = await sandbox.report(day)
    assert report["date"] == day
    lines = {line["psp_payment_id"]: line for line in report["lines"]}
    assert set(lines) == same_day
    assert lines[deposit] == {
        "psp_payment_id": deposit,
        "reference": "s-dep",
        "kind": "deposit",
        "amount": 1034,
        "currency": "EUR",
        "fee": 16,
        "net": 1018,
        "status": "succeeded",
        "settled_at": lines[deposit]["settled_at"],
    }
    assert lines[deposit]["settled_at"].startswith(day + "T")
    assert lines[deposit]["settled_at"].endswith("Z")
    if payout in lines:
        assert (lines[payout]["fee"], lines[payout]["net"]) == (150, -10_150)
        assert report["currency_totals"]["EUR"] == {
            "count": 2,
            "deposits": 1034,
            "payouts": 10_000,
            "fees": 166,
            "net": 1018 - 10_150,
        }
    if inr in lines:
        assert report["currency_totals"]["INR"] == {
            "count": 1,
            "deposits": 100,
            "payouts": 0,
            "fees": 2,
            "net": 98,
        }
    assert [line["settled_at"] for line in report["lines"]] == sorted(
        line["settled_at"] for line in report["lines"]
    )
    empty = await sandbox.report("2001-01-01")
    assert empty == {"date": "2001-01-01", "currency_totals": {}, "lines": []}


async def test_settlement_discrepancies_can_be_planted(sandbox: Sandbox) -> None:
    ids = []
    for amount in (1000, 2000, 3000):
        pid = (await sandbox.create(amount=amount))["psp_payment_id"]
        await sandbox.complete(pid, "approve")
        ids.append(pid)
    changed, dropped, kept = ids
    override = await sandbox.client.post(
        "/v1/sandbox/settlement-overrides", json={"psp_payment_id": changed, "amount": 999}
    )
    assert override.status_code == 200
    assert override.json() == {"psp_payment_id": changed, "amount": 999}
    drop = await sandbox.client.post(
        "/v1/sandbox/settlement-overrides", json={"psp_payment_id": dropped, "drop": True}
    )
    assert drop.json() == {"psp_payment_id": dropped, "drop": True}
    extra = await sandbox.client.post(
        "/v1/sandbox/settlement-extra",
        json={
            "line": {
                "psp_payment_id": "psp_ghost",
                "reference": "never-sent",
                "kind": "deposit",
                "amount": 4321,
                "currency": "EUR",
                "settled_at": "2026-01-15T23:59:59+00:00",
            }
        },
    )
    assert extra.status_code == 201
    ghost = extra.json()["line"]
    assert ghost == {
        "psp_payment_id": "psp_ghost",
        "reference": "never-sent",
        "kind": "deposit",
        "amount": 4321,
        "currency": "EUR",
        "fee": 65,  # 64.815
        "net": 4256,
        "status": "succeeded",
        "settled_at": "2026-01-15T23:59:59Z",
    }
    # An extra line may carry any fee and status, as a buggy PSP file would.
    odd = await sandbox.client.post(
        "/v1/sandbox/settlement-extra",
        json={
            "line": {
                "psp_payment_id": "psp_odd",
                "reference": "odd",
                "kind": "payout",
                "amount": 100,
                "currency": "EUR",
                "fee": 0,
                "status": "reversed",
                "settled_at": "2026-01-16T01:00:00+02:00",  # 2026-01-15 in UTC
            }
        },
    )
    assert odd.json()["line"]["net"] == -100

    settled_at = sandbox.state.payments[kept].settled_at
    assert settled_at is not None
    today = await sandbox.report(utc_day(settled_at))
    lines = {line["psp_payment_id"]: line for line in today["lines"]}
    assert dropped not in lines
    line = lines[changed]
    assert (line["amount"], line["fee"], line["net"]) == (999, 15, 984)  # 14.985 rounds to 15
    assert lines[kept]["amount"] == 3000
    planted = await sandbox.report("2026-01-15")
    assert [line["psp_payment_id"] for line in planted["lines"]] == ["psp_odd", "psp_ghost"]
    assert planted["currency_totals"]["EUR"] == {
        "count": 2,
        "deposits": 4321,
        "payouts": 100,
        "fees": 65,
        "net": 4256 - 100,
    }
    # The real payment is untouched: only the report differs.
    assert (await sandbox.get(changed))["amount"] == 1000


@pytest.mark.parametrize(
    ("path", "body", "field_name"),
    [
        ("/v1/sandbox/settlement-overrides", {"psp_payment_id": 5, "drop": True}, "psp_payment_id"),
        ("/v1/sandbox/settlement-overrides", {"psp_payment_id": "{pid}"}, "amount"),
        (
            "/v1/sandbox/settlement-overrides",
            {"psp_payment_id": "{pid}", "amount": 5, "drop": True},
            "amount",
        ),
        ("/v1/sandbox/settlement-overrides", {"psp_payment_id": "{pid}", "drop": False}, "drop"),
        ("/v1/sandbox/settlement-overrides", {"psp_payment_id": "{pid}", "amount": "5"}, "amount"),
        ("/v1/sandbox/settlement-extra", {}, "line"),
        ("/v1/sandbox/settlement-extra", {"line": {"psp_payment_id": "x"}}, "line.reference"),
        (
            "/v1/sandbox/settlement-extra",
            {
                "line": {
                    "psp_payment_id": "x",
                    "reference": "r",
                    "currency": "EUR",
                    "kind": "deposit",
                    "amount": 5,
                    "settled_at": "2026-01-15T10:00:00",
                }
            },
            "line.settled_at",
        ),
    ],
)
async def test_settlement_tools_refuse_invalid_requests(
    sandbox: Sandbox, path: str, body: dict[str, Any], field_name: str
) -> None:
    pid = (await sandbox.create())["psp_payment_id"]
    if body.get("psp_payment_id") == "{pid}":
        body = {**body, "psp_payment_id": pid}
    response = await sandbox.client.post(path, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == field_name


@pytest.mark.parametrize("day", ["", "2026-1-5", "2026-02-30", "yesterday"])
async def test_settlement_report_needs_a_valid_date(sandbox: Sandbox, day: str) -> None:
    response = await sandbox.client.get("/v1/settlements", params={"date": day})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "date"


# -- configuration and the command -------------------------------------------------------------


def test_config_refuses_nonsense() -> None:
    bad_fields: list[dict[str, Any]] = [
        {"api_key": ""},
        {"webhook_secret": b""},
        {"public_base_url": "psp.test"},
        {"fee_bps": 10_001},
        {"webhook_retries": -1},
        {"payout_delay": -0.1},
    ]
    for bad in bad_fields:
        fields: dict[str, Any] = {
            "api_key": "k",
            "webhook_secret": "s",
            "public_base_url": BASE_URL,
        }
        with pytest.raises(ValueError):
            SandboxConfig(**{**fields, **bad})
    assert SandboxConfig("k", "text-secret", BASE_URL + "/").secret == b"text-secret"
    assert SandboxConfig("k", "s", BASE_URL + "/").base_url == BASE_URL


def test_cli_has_a_sandbox_psp_command() -> None:
    args = build_parser().parse_args(["sandbox-psp"])
    assert (args.host, args.port) == ("127.0.0.1", 8090)
    assert callable(args.run)
    args = build_parser().parse_args(["sandbox-psp", "--host", "0.0.0.0", "--port", "9999"])
    assert (args.host, args.port) == ("0.0.0.0", 9999)


def test_cli_config_comes_from_the_environment() -> None:
    config, generated = config_from_env(
        {
            "WALLET_SANDBOX_API_KEY": "sk_1",
            "WALLET_SANDBOX_WEBHOOK_SECRET": "whsec_1",
            "WALLET_SANDBOX_PUBLIC_URL": "https://psp.example",
            "WALLET_SANDBOX_FEE_BPS": "250",
        },
        "127.0.0.1",
        8090,
    )
    assert generated == {}
    assert (config.api_key, config.secret, config.base_url) == (
        "sk_1",
        b"whsec_1",
        "https://psp.example",
    )
    assert config.fee_bps == 250
    config, generated = config_from_env({}, "127.0.0.1", 8091)
    assert set(generated) == {"WALLET_SANDBOX_API_KEY", "WALLET_SANDBOX_WEBHOOK_SECRET"}
    assert config.api_key == generated["WALLET_SANDBOX_API_KEY"]
    assert config.webhook_secret == generated["WALLET_SANDBOX_WEBHOOK_SECRET"]
    assert config.base_url == "http://127.0.0.1:8091"
    with pytest.raises(ValueError):
        config_from_env({"WALLET_SANDBOX_FEE_BPS": "1.5%"}, "127.0.0.1", 8090)


def test_signing_module_is_what_the_wallet_imports() -> None:
    assert signing.verify is verify and signing.sign is sign
