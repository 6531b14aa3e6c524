"""The sandbox PSP's HTTP API and hosted pages, as a Starlette app."""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from app.dev.sandbox_psp import pages, scenarios
from app.dev.sandbox_psp.config import SandboxConfig
from app.dev.sandbox_psp.model import (
    RAIL_OF_METHOD,
    RAILS,
    CreateRequest,
    Payment,
    SandboxError,
    invalid,
    not_found,
)
from app.dev.sandbox_psp.settlements import parse_extra_line
from app.dev.sandbox_psp.state import OUTCOMES, SandboxState
from app.payments.sandbox_api import DEPOSIT, KINDS, REFERENCE, REQUIRES_ACTION

MAX_BODY_BYTES = 64 * 1024
MAX_AMOUNT = 10**12
# Printable ASCII without spaces: what fits in a header unambiguously.
IDEMPOTENCY_KEY = re.compile(r"[!-~]{1,255}")
CURRENCY = re.compile(r"[A-Z]{3}")
COUNTRY = re.compile(r"[A-Z]{2}")
DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(obj), status, headers, media_type="application/json")


async def _read_json(request: Request) -> dict[str, Any]:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise invalid("body", f"body exceeds {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    try:
        data = orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError:
        raise invalid("body", "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise invalid("body", "body must be a JSON object")
    return data


def _string(data: dict[str, Any], name: str, pattern: re.Pattern[str], hint: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise invalid(name, f"{name} must be {hint}")
    return value


def _optional_string(
    data: dict[str, Any], name: str, pattern: re.Pattern[str], hint: str
) -> str | None:
    return None if data.get(name) is None else _string(data, name, pattern, hint)


def _url(data: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = data.get(name)
    if value is None and not required:
        return None
    if isinstance(value, str) and len(value) <= 2048:
        parts = urlsplit(value)
        if parts.scheme in ("http", "https") and parts.netloc:
            return value
    raise invalid(name, f"{name} must be an http(s) URL")


def parse_create(data: dict[str, Any]) -> CreateRequest:
    """A checked create request; 400 for a malformed field, 422 for a method not offered."""
    reference = _string(data, "reference", REFERENCE, "1 to 128 characters of [A-Za-z0-9_.:/-]")
    kind = data.get("kind")
    if kind not in KINDS:
        raise invalid("kind", "kind must be deposit or payout")
    amount = data.get("amount")
    if type(amount) is not int or not 1 <= amount <= MAX_AMOUNT:
        raise invalid("amount", f"amount must be an integer (minor units) from 1 to {MAX_AMOUNT}")
    currency = _string(data, "currency", CURRENCY, "an ISO 4217 code like EUR")
    method = data.get("method")
    if not isinstance(method, str) or not method:
        raise invalid("method", "method must be a non-empty string")
    rail = data.get("rail")
    if rail is not None and not isinstance(rail, str):
        raise invalid("rail", "rail must be a string")
    country = _optional_string(data, "country", COUNTRY, "an ISO 3166 alpha-2 code like IN")
    # Who pays: a real PSP knows the card or account behind a payment, so a scenario that
    # plays out over attempts (decline-then-succeed) counts them per customer when given.
    customer = _optional_string(data, "customer", REFERENCE, "1 to 128 characters")
    scenario = data.get("scenario", scenarios.SUCCEED)
    if not isinstance(scenario, str) or scenario not in scenarios.SCENARIOS:
        shown = ", ".join(sorted(scenarios.SCENARIOS))
        raise invalid("scenario", f"scenario must be one of {shown}")
    webhook_url = _url(data, "webhook_url", required=True)
    assert webhook_url is not None
    return_url = _url(data, "return_url", required=False)
    # Checked last: a 422 says the request was well formed but cannot be served.
    method_rail = RAIL_OF_METHOD.get(method)
    if method_rail is None:
        raise SandboxError(
            422,
            "method_unavailable",
            f"method {method!r} is not offered; methods: {', '.join(sorted(RAIL_OF_METHOD))}",
            field="method",
        )
    if rail is not None and rail != method_rail:
        offered = ", ".join(sorted(RAILS))
        raise SandboxError(
            422,
            "method_unavailable",
            f"method {method!r} is not offered on rail {rail!r} (rails: {offered})",
            field="rail",
        )
    return CreateRequest(
        reference=reference,
        kind=kind,
        amount=amount,
        currency=currency,
        method=method,
        rail=method_rail,
        country=country,
        customer=customer,
        scenario=scenario,
        webhook_url=webhook_url,
        return_url=return_url,
    )


class _Api:
    """The endpoints, bound to one sandbox's state."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.config = state.config

    def _authenticate(self, request: Request) -> None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        expected = self.config.api_key.encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise SandboxError(
                401,
                "unauthorized",
                "send Authorization: Bearer <api key>",
                headers={"WWW-Authenticate": "Bearer"},
            )

    async def create_payment(self, request: Request) -> Response:
        self._authenticate(request)
        key = request.headers.get("idempotency-key")
        if key is None or not IDEMPOTENCY_KEY.fullmatch(key):
            raise invalid("Idempotency-Key", "send an Idempotency-Key header (1 to 255 characters)")
        data = await _read_json(request)
        payment_request = parse_create(data)
        # The body as parsed, keys sorted: a resend that only reorders keys is the same body.
        fingerprint = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
        created = self.state.create(key, fingerprint, payment_request)
        if created.slow:
            # The payment already exists and its answer is stored under the key, as when a real
            # PSP's answer is lost on the way: the caller times out, and a retry with the same
            # key gets the answer at once.
            await asyncio.sleep(self.config.timeout_seconds)
        headers = {"Idempotent-Replayed": "true"} if created.replayed else None
        return _json(created.body, 201, headers)

    async def find_payment(self, request: Request) -> Response:
        """``GET /v1/payments?reference=...``: the payment of a merchant reference, for a
        merchant whose answer to the create call was lost."""
        self._authenticate(request)
        reference = request.query_params.get("reference", "")
        if not IDEMPOTENCY_KEY.fullmatch(reference):
            raise invalid("reference", "send ?reference= (1 to 255 characters)")
        return _json(self.state.by_reference(reference).view())

    async def get_payment(self, request: Request) -> Response:
        self._authenticate(request)
        return _json(self.state.get(request.path_params["psp_payment_id"]).view())

    async def settlements(self, request: Request) -> Response:
        self._authenticate(request)
        text = request.query_params.get("date", "")
        try:
            if not DAY.fullmatch(text):
                raise ValueError(text)
            day = date.fromisoformat(text)
        except ValueError:
            raise invalid("date", "date must be a day as YYYY-MM-DD") from None
        return _json(self.state.settlement_report(day))

    async def complete(self, request: Request) -> Response:
        self._authenticate(request)
        payment = self.state.get(request.path_params["psp_payment_id"])
        outcome = (await _read_json(request)).get("outcome")
        if outcome not in OUTCOMES:
            raise invalid("outcome", "outcome must be approve or decline")
        self.state.complete(payment, outcome)
        return _json(payment.view())

    async def settlement_override(self, request: Request) -> Response:
        self._authenticate(request)
        data = await _read_json(request)
        pid = data.get("psp_payment_id")
        if not isinstance(pid, str):
            raise invalid("psp_payment_id", "psp_payment_id must be a string")
        self.state.get(pid)
        drop = data.get("drop")
        if drop is not None and drop is not True:
            raise invalid("drop", "drop must be true when given")
        if ("amount" in data) == (drop is True):
            raise invalid("amount", "give either amount or drop: true")
        if drop:
            self.state.overrides[pid] = None
            return _json({"psp_payment_id": pid, "drop": True})
        amount = data["amount"]
        if type(amount) is not int:
            raise invalid("amount", "amount must be an integer (minor units)")
        self.state.overrides[pid] = amount
        return _json({"psp_payment_id": pid, "amount": amount})

    async def settlement_extra(self, request: Request) -> Response:
        self._authenticate(request)
        data = await _read_json(request)
        line = parse_extra_line(data.get("line"), self.config.fee_bps, time.time())
        self.state.extra_lines.append(line)
        return _json({"line": line}, 201)

    async def deliveries(self, request: Request) -> Response:
        self._authenticate(request)
        return _json({"deliveries": [d.view() for d in self.state.deliveries]})

    async def health(self, request: Request) -> Response:
        return _json({"status": "ok"})

    # -- hosted page: no API key, it is the depositor's browser that calls ---------------------

    def _deposit(self, request: Request) -> Payment | None:
        payment = self.state.payments.get(request.path_params["psp_payment_id"])
        return payment if payment is not None and payment.kind == DEPOSIT else None

    async def pay_page(self, request: Request) -> Response:
        payment = self._deposit(request)
        if payment is None:
            return HTMLResponse(pages.missing_page(), 404)
        return HTMLResponse(pages.checkout_page(payment))

    async def pay_action(self, request: Request) -> Response:
        payment = self._deposit(request)
        outcome = request.path_params["outcome"]
        if payment is None or outcome not in OUTCOMES:
            return HTMLResponse(pages.missing_page(), 404)
        # A second click (or a reload that resubmits) shows the result again and sends nothing.
        if payment.status == REQUIRES_ACTION:
            self.state.complete(payment, outcome)
        if payment.return_url is not None:
            return RedirectResponse(pages.return_location(payment.return_url, payment), 303)
        return HTMLResponse(pages.result_page(payment))


async def _sandbox_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SandboxError)
    return _json(exc.body(), exc.status, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error = not_found("route")
    else:
        error = SandboxError(exc.status_code, "http_error", str(exc.detail))
    return _json(error.body(), exc.status_code, dict(exc.headers or {}))


def create_sandbox_app(config: SandboxConfig) -> Starlette:
    """A new sandbox PSP with empty state; ``app.state.sandbox`` is its :class:`SandboxState`.

    Its lifespan's shutdown stops pending timers and deliveries. In-process tests (whose
    transport runs no lifespan) call ``await app.state.sandbox.aclose()`` themselves.
    """
    state = SandboxState(config)
    api = _Api(state)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await state.aclose()

    routes = [
        Route("/v1/payments", api.create_payment, methods=["POST"]),
        Route("/v1/payments", api.find_payment, methods=["GET"]),
        Route("/v1/payments/{psp_payment_id}", api.get_payment, methods=["GET"]),
        Route("/v1/settlements", api.settlements, methods=["GET"]),
        Route("/v1/sandbox/payments/{psp_payment_id}/complete", api.complete, methods=["POST"]),
        Route("/v1/sandbox/settlement-overrides", api.settlement_override, methods=["POST"]),
        Route("/v1/sandbox/settlement-extra", api.settlement_extra, methods=["POST"]),
        Route("/v1/sandbox/webhook-deliveries", api.deliveries, methods=["GET"]),
        Route("/healthz", api.health, methods=["GET"]),
        Route("/pay/{psp_payment_id}", api.pay_page, methods=["GET"]),
        Route("/pay/{psp_payment_id}/{outcome}", api.pay_action, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={SandboxError: _sandbox_error, HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.sandbox = state
    return app
