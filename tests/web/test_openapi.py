"""The OpenAPI document (issue: /openapi.json, /docs) is valid, complete, and true.

True means: real answers of every operator route (payments and their events included) and of the
PSP webhook, on its success path and on each error it documents, validate against the document's
schemas, and every status the document lists for such a route is one the route was seen to
answer. The seamless webhook's decrypted answers, the events the sandbox PSP really sends, the
events the wallet really delivers to the operator's platform, and the document's examples are
checked against their schemas too.
"""

from __future__ import annotations

import importlib.metadata
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from starlette.requests import Request
from starlette.routing import Route

from app.admin import site as admin_site
from app.client import open_answer, seal_event
from app.config import Settings
from app.db import Queries
from app.main import PERMISSIONS, create_app
from app.openapi import (
    EVENTS,
    EXAMPLE_KEY,
    EXAMPLE_PROVIDER,
    EXAMPLE_TIME,
    EXAMPLE_WEBHOOK_SECRET,
    OPERATOR_EVENT_EXAMPLE,
    OPERATOR_WEBHOOK,
    document,
)
from app.payments import outbox, signing
from app.payments.models import DEPOSIT_STATUSES, ID_PREFIX, WITHDRAWAL_STATUSES
from app.payments.psp import Psp, SandboxPsp
from app.payments.psp_messages import PSP_STATUSES
from app.payments.service import WEBHOOK_OUTCOMES, Payments, _target
from app.seamless import envelope, events
from app.seamless.events import schema_name as event_schema_name
from app.web import idempotency
from app.web.auth import READ
from app.web.errors import InvalidRequest
from tests.fixtures.app import Operator, Table, now
from tests.fixtures.payments import SANDBOX_API_KEY, SANDBOX_SECRET, SandboxRoutes
from tests.payments.psps import ScriptedPsp, timeout
from tests.support.rounds import age_round

DOC = document()
ROOT = "urn:wallet:openapi"
# The whole document is the root resource, so "#/components/..." references resolve inside it.
REGISTRY: Registry[Any] = Registry().with_resource(
    ROOT, Resource.from_contents(DOC, default_specification=DRAFT202012)
)
WEBHOOK = "/v1/seamless/{provider}"
PSP_WEBHOOK = "/v1/psp/{psp}/webhook"
UNAUTHENTICATED = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/assets/{name}"),
    ("GET", "/docs/errors"),
    ("POST", WEBHOOK),
    ("POST", PSP_WEBHOOK),
}
# Driven through all their answers by test_operator_answers_match_the_document.
DRIVEN = {*PERMISSIONS, ("POST", PSP_WEBHOOK)}
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")

# Own format checks, so that formats are checked whatever optional libraries are installed.
FORMATS = FormatChecker(formats=())


@FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    return RFC3339.fullmatch(value) is not None and datetime.fromisoformat(value) is not None


@FORMATS.checks("date", raises=ValueError)
def _is_date(value: object) -> bool:
    return not isinstance(value, str) or date.fromisoformat(value) is not None


@FORMATS.checks("int64")
def _is_int64(value: object) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


# --- validating against the document -----------------------------------------------------------


def pointer(*parts: str) -> str:
    """A reference into the document, like ``urn:wallet:openapi#/components/schemas/Player``."""
    escaped = (part.replace("~", "~0").replace("/", "~1") for part in parts)
    return f"{ROOT}#/" + "/".join(escaped)


def schema_of(name: str) -> str:
    return pointer("components", "schemas", name)


def assert_valid(instance: Any, ref: str) -> None:
    validator = Draft202012Validator({"$ref": ref}, registry=REGISTRY, format_checker=FORMATS)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    assert not errors, f"{ref}:\n" + "\n".join(
        f"  at {list(e.absolute_path)}: {e.message}" for e in errors
    )


def check_response(response: httpx.Response, method: str, template: str) -> None:
    """``response`` is one the document lists for ``method template``, and its body fits."""
    responses = DOC["paths"][template][method.lower()]["responses"]
    status = str(response.status_code)
    assert status in responses, f"{method} {template} answered {status}: {response.text}"
    documented = responses[status]
    if "$ref" in documented:
        name = documented["$ref"].rsplit("/", 1)[1]
        where: tuple[str, ...] = ("components", "responses", name)
        documented = DOC["components"]["responses"][name]
    else:
        where = ("paths", template, method.lower(), "responses", status)
    media = response.headers["content-type"].split(";")[0].strip()
    assert media in documented["content"], (method, template, status, media)
    assert response.headers.get("x-request-id"), "every answer carries X-Request-Id"
    if media == "application/json":
        assert_valid(response.json(), pointer(*where, "content", media, "schema"))


class Recorder:
    """Calls the API, checks each answer against the document, and remembers what it saw."""

    def __init__(self, http: httpx.AsyncClient, admin: dict[str, str]) -> None:
        self.http = http
        self.admin = admin
        self.seen: dict[tuple[str, str], set[int]] = {}

    async def __call__(
        self,
        method: str,
        template: str,
        expect: int,
        *,
        path: dict[str, str] | None = None,
        query: str = "",
        json: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        url = template.format(**(path or {})) + (f"?{query}" if query else "")
        response = await self.http.request(
            method,
            url,
            json=json,
            content=content,
            headers=self.admin if headers is None else headers,
        )
        assert response.status_code == expect, (method, url, response.text)
        self.check(response, method, template)
        return response.json() if "json" in response.headers["content-type"] else response.text

    def check(self, response: httpx.Response, method: str, template: str) -> None:
        check_response(response, method, template)
        self.seen.setdefault((method, template), set()).add(response.status_code)

    def keyed(self) -> dict[str, str]:
        """The admin's headers with a fresh Idempotency-Key."""
        return {**self.admin, "idempotency-key": "docs-" + secrets.token_hex(6)}


# --- the document itself ------------------------------------------------------------------------


def test_document_is_valid_openapi_3_1() -> None:
    validate_openapi(DOC)
    assert DOC["openapi"] == "3.1.0"
    assert DOC["info"]["title"] == "Wallet API"
    assert DOC["info"]["version"] == importlib.metadata.version("wallet")
    assert DOC["servers"] == [{"url": "/"}]
    bearer = DOC["components"]["securitySchemes"]["bearerAuth"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    assert DOC["security"] == [{"bearerAuth": []}]
    assert document() is DOC  # built once per process, not per request


def _fits(instance: Any, schema: dict[str, Any]) -> bool:
    validator = Draft202012Validator(schema, registry=REGISTRY, format_checker=FORMATS)
    return validator.is_valid(instance)


def _parameter(parameter: dict[str, Any]) -> dict[str, Any]:
    """A parameter of an operation, its reference resolved."""
    if "$ref" not in parameter:
        return parameter
    found: dict[str, Any] = DOC["components"]["parameters"][parameter["$ref"].rsplit("/", 1)[1]]
    return found


def test_document_says_what_the_code_checks() -> None:
    """Rules that were in the descriptions' prose only, where a client generated from the
    document (or Schemathesis) could not see them; each is now in the schema too."""
    # Idempotency-Key: the document's pattern is the one the wallet checks, for every character
    # a header value can hold (they are read as Latin-1), and both bound the length alike.
    (key_schema,) = {
        orjson.dumps(p["schema"]): p["schema"]
        for name, p in DOC["components"]["parameters"].items()
        if p["name"] == "Idempotency-Key"
    }.values()
    # (No line feed: no header value can hold one, and Python's `$` matches before a final one,
    # where ECMA-262's, the document's dialect, does not.)
    latin1 = (f"k{chr(c)}" for c in range(256) if chr(c) != "\n")
    for candidate in [*latin1, "k" * 255, "k" * 256, ""]:
        scope = {"type": "http", "headers": [(b"idempotency-key", candidate.encode("latin-1"))]}
        try:
            idempotency.required_key(Request(scope))
            accepted = True
        except InvalidRequest:
            accepted = False
        assert _fits(candidate, key_schema) is accepted, repr(candidate)
    # Listing withdrawals needing attention refuses a request without ?attention=true.
    listing = DOC["paths"]["/v1/withdrawals"]["get"]["parameters"]
    (attention,) = (p for p in map(_parameter, listing) if p["name"] == "attention")
    assert attention["required"] is True
    # A resolve's reason is 1 to 500 characters, like an adjustment's.
    resolve = {"$ref": schema_of("WithdrawalResolve")}
    for reason, valid in (("", False), ("r" * 500, True), ("r" * 501, False)):
        assert _fits({"outcome": "paid", "reason": reason}, resolve) is valid, len(reason)


def test_documented_operations_are_the_real_routes(settings: Settings) -> None:
    """A route cannot be added without documenting it, nor documented without existing."""
    app = create_app(settings)
    # Only the back office's pages are no documented route: they are mounted apart (app.admin).
    assert [route for route in app.routes if not isinstance(route, Route)] == admin_site.routes
    real = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    documented = {(m.upper(), path) for path, item in DOC["paths"].items() for m in item}
    assert documented == real
    assert list(DOC["webhooks"]) == [OPERATOR_WEBHOOK]  # what the wallet sends, not a route
    assert documented == set(PERMISSIONS) | UNAUTHENTICATED
    for (method, path), operation in _operations():
        roles = PERMISSIONS.get((method, path))
        if roles is None:
            assert operation["security"] == [] and "x-roles" not in operation, (method, path)
        else:
            assert "security" not in operation, (method, path)  # the global bearer scheme
            assert set(operation["x-roles"]) == roles, (method, path)
            assert ("403" in operation["responses"]) == (roles != READ), (method, path)


def _operations() -> Iterator[tuple[tuple[str, str], dict[str, Any]]]:
    for path, item in DOC["paths"].items():
        for method, operation in item.items():
            yield (method.upper(), path), operation


def test_money_is_never_a_json_number() -> None:
    """Amounts are integers in minor units: no schema anywhere may allow a fraction."""

    def types(node: Any) -> Iterator[Any]:
        if isinstance(node, dict):
            if "type" in node:
                yield node["type"]
            for value in node.values():
                yield from types(value)
        elif isinstance(node, list):
            for value in node:
                yield from types(value)

    for kind in types(DOC):
        assert "number" not in (kind if isinstance(kind, list) else [kind])


def test_examples_match_their_schemas() -> None:
    """Each event example is a valid event the wallet parses, each answer a valid answer, and
    each sealed example payload opens, with the example key, to exactly its ``x-decrypted``."""
    schemas = DOC["components"]["schemas"]
    for name in EVENTS:
        schema = event_schema_name(name)
        (example,) = schemas[schema]["examples"]
        assert_valid(example, schema_of(schema))
        assert events.parse(example).event == name
    for answer in schemas["SeamlessResponse"]["examples"]:
        assert_valid(answer, schema_of("SeamlessResponse"))
    operation = DOC["paths"][WEBHOOK]["post"]
    requests = operation["requestBody"]["content"]["application/json"]["examples"]
    answers = operation["responses"]["200"]["content"]["application/json"]["examples"]
    assert set(requests) == set(EVENTS) and set(answers) == {*EVENTS, "r2_plain"}
    for name in EVENTS:
        _check_sealed_example(
            requests[name], pointer("paths", WEBHOOK, "post", "x-decrypted-request")
        )
        _check_sealed_example(
            answers[name], pointer("paths", WEBHOOK, "post", "x-decrypted-response")
        )
    assert_valid(answers["r2_plain"]["value"], schema_of("SeamlessResponse"))
    _check_psp_example()
    _check_operator_example()


def _check_psp_example() -> None:
    """The PSP event example is a valid event, and its example signature really signs it."""
    (example,) = DOC["components"]["schemas"]["PspEvent"]["examples"]
    assert_valid(example, schema_of("PspEvent"))
    operation = DOC["paths"][PSP_WEBHOOK]["post"]
    content = operation["requestBody"]["content"]["application/json"]
    assert [e["value"] for e in content["examples"].values()] == [example]
    (signature,) = (p["example"] for p in operation["parameters"] if p.get("name") == "X-Signature")
    body = orjson.dumps(example)
    signing.verify(EXAMPLE_WEBHOOK_SECRET, body, signature, now=EXAMPLE_TIME)
    assert f"t={EXAMPLE_TIME}" in operation["description"]
    assert EXAMPLE_WEBHOOK_SECRET.decode() in operation["description"]


async def test_payment_statuses_and_outcomes_match_the_code(pool: asyncpg.Pool) -> None:
    """The documented statuses are those of the state machines in the database, and the
    documented moved_to_<status> outcomes those a PSP status can lead to."""
    edges = await pool.fetch("SELECT kind, from_status, to_status FROM payment_state_edges")
    for kind, documented in (("deposit", DEPOSIT_STATUSES), ("withdrawal", WITHDRAWAL_STATUSES)):
        statuses = {s for e in edges if e["kind"] == kind for s in (e[1], e[2])}
        assert statuses == set(documented), kind
    payment = DOC["components"]["schemas"]["Payment"]
    assert set(payment["properties"]["status"]["enum"]) == {*DEPOSIT_STATUSES, *WITHDRAWAL_STATUSES}
    moves = {_target(kind, status) for kind in ("deposit", "withdrawal") for status in PSP_STATUSES}
    documented_moves = {o for o in WEBHOOK_OUTCOMES if o.startswith("moved_to_")}
    assert {f"moved_to_{status}" for status in moves if status} == documented_moves


async def test_a_malformed_request_id_is_replaced_not_refused(http: httpx.AsyncClient) -> None:
    """As the RequestId parameter says (Schemathesis's negative_data_rejection flags it, which is
    why that check is not run): the wallet answers, under an id of its own."""
    pattern = re.compile(DOC["components"]["parameters"]["RequestId"]["schema"]["pattern"])
    for sent in ("", "a b", "x" * 65, "café"):
        response = await http.get("/healthz", headers={"x-request-id": sent.encode("latin-1")})
        check_response(response, "GET", "/healthz")
        made = response.headers["x-request-id"]
        assert made != sent and made.startswith("req_") and pattern.fullmatch(made), sent


def test_payment_event_ids_match_their_kind() -> None:
    """Found by Schemathesis on real payments: withdrawal events had to carry a `wit_` id. (The
    ledger kinds it found missing are checked in tests/operator/test_api.py.)"""
    for kind, statuses in (("deposit", DEPOSIT_STATUSES), ("withdrawal", WITHDRAWAL_STATUSES)):
        data = {
            "id": f"{ID_PREFIX[kind]}_{secrets.token_hex(10)}",
            "kind": kind,
            "status": statuses[-1],
            "player_id": "p-1",
            "amount": 500,
            "currency": "EUR",
            "method": "card",
            "reference": None,
            "failure_code": None,
        }
        assert_valid(data, schema_of("OperatorEventData"))
        other = next(prefix for k, prefix in ID_PREFIX.items() if k != kind)
        assert not _fits(
            {**data, "id": f"{other}_{0:020}"}, {"$ref": schema_of("OperatorEventData")}
        )


def _check_operator_example() -> None:
    """The operator event example is a valid event, and its example signature really signs it."""
    (example,) = DOC["components"]["schemas"]["OperatorEventPayload"]["examples"]
    assert example == OPERATOR_EVENT_EXAMPLE
    assert_valid(example, schema_of("OperatorEventPayload"))
    operation = DOC["webhooks"][OPERATOR_WEBHOOK]["post"]
    content = operation["requestBody"]["content"]["application/json"]
    assert [e["value"] for e in content["examples"].values()] == [example]
    (signature,) = (p["example"] for p in operation["parameters"] if p["name"] == "X-Signature")
    signing.verify(EXAMPLE_WEBHOOK_SECRET, orjson.dumps(example), signature, now=EXAMPLE_TIME)
    assert f"t={EXAMPLE_TIME}" in operation["description"]
    assert EXAMPLE_WEBHOOK_SECRET.decode() in operation["description"]


def _check_sealed_example(example: dict[str, Any], decrypted_schema: str) -> None:
    assert_valid(example["value"], schema_of("SeamlessEnvelope"))
    raw = envelope.decode(example["value"]["payload"])
    plaintext = envelope.open_with(EXAMPLE_KEY, EXAMPLE_PROVIDER, raw)
    assert plaintext is not None, "the example payload must open with the example key"
    assert orjson.loads(plaintext) == example["x-decrypted"]
    assert_valid(example["x-decrypted"], decrypted_schema)


# --- serving it ---------------------------------------------------------------------------------


async def test_openapi_json_is_served(http: httpx.AsyncClient) -> None:
    response = await http.get("/openapi.json")  # no API key needed
    check_response(response, "GET", "/openapi.json")
    assert response.json() == orjson.loads(orjson.dumps(DOC))


async def test_openapi_json_under_a_path_prefix(asgi: Any) -> None:
    """Behind a proxy that mounts the app under a prefix, the document says the API is there."""
    transport = httpx.ASGITransport(app=asgi, root_path="/wallet")
    async with httpx.AsyncClient(transport=transport, base_url="http://wallet.test") as client:
        response = await client.get("/wallet/openapi.json")
    assert response.status_code == 200
    assert response.json() == {**orjson.loads(orjson.dumps(DOC)), "servers": [{"url": "/wallet"}]}


async def test_docs_page_renders_the_document(http: httpx.AsyncClient) -> None:
    """The page loads Swagger UI and the document from beside it (tests/web/test_docs_ui.py
    renders it in a real browser)."""
    response = await http.get("/docs")
    check_response(response, "GET", "/docs")
    page = response.text
    assert 'data-openapi="openapi.json"' in page
    # Nothing from elsewhere, nor by absolute path (the page works under a path prefix), and a
    # policy that would block anything from elsewhere anyway.
    links = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert links and all(
        link.startswith("docs/assets/") or link == "openapi.json" for link in links
    )
    for link in set(links):
        answer = await http.get("/" + link)
        template = "/openapi.json" if link == "openapi.json" else "/docs/assets/{name}"
        check_response(answer, "GET", template)
        assert answer.status_code == 200 and answer.content, link
    assert "<script>" not in page and "<style>" not in page and " style=" not in page
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    for directive in ("script-src 'self';", "style-src 'self';", "connect-src 'self';"):
        assert directive in policy


async def test_docs_assets_are_only_the_vendored_files(http: httpx.AsyncClient) -> None:
    script = await http.get("/docs/assets/docs.js")
    check_response(script, "GET", "/docs/assets/{name}")
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert script.headers["x-content-type-options"] == "nosniff"
    # Files of docs_ui/ that the page does not use, and anything else, are not served.
    for name in ("README.md", "LICENSE", "..%2Fdocs.py", "nothing.js"):
        missing = await http.get(f"/docs/assets/{name}")
        check_response(missing, "GET", "/docs/assets/{name}")
        assert missing.status_code == 404, name


async def test_public_routes_match_the_document(http: httpx.AsyncClient) -> None:
    record = Recorder(http, {})
    assert (await record("GET", "/healthz", 200))["status"] == "ok"
    assert (await record("GET", "/readyz", 200))["status"] == "ok"
    assert "wallet_" in await record("GET", "/metrics", 200)


async def test_readiness_refusal_matches_the_document(
    http: httpx.AsyncClient, asgi: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/readyz's 503, declared on the route like its 200, is what the document says."""

    async def down() -> None:
        raise OSError("redis is away")

    monkeypatch.setattr(asgi.state["wallet"].redis, "ping", down)
    ready = await Recorder(http, {})("GET", "/readyz", 503)
    assert ready == {
        "status": "unavailable",
        "checks": {"database": "ok", "redis": "unavailable: OSError"},
    }


# --- the operator API: every route, its success and its errors ----------------------------------


async def test_operator_answers_match_the_document(
    operator: Operator,
    http: httpx.AsyncClient,
    table: Table,
    asgi: Any,
    sandbox_routes: SandboxRoutes,
    pool: asyncpg.Pool,
) -> None:
    """Drives every operator route (payments included, routed to the sandbox PSP) and the PSP
    webhook through its success path and every error it documents, and checks each answer
    against the document; then every documented status must have been seen."""
    record = Recorder(http, operator.headers)
    support = await _api_keys(record)
    await _seamless_traffic(table)
    await asgi.state["wallet"].calls.flush()
    spare = await _providers(record)
    await _sealed_answers(record, table, spare)
    await _players(record, table, spare)
    await _adjustments(record, table)
    await _free_rounds(record, table)
    await _history(record, table)
    await _reports(record, table)
    await _rounds(record, table, pool)
    await _provider_reconciliation(record, table)
    await _payments(record, operator, sandbox_routes, pool, asgi.state["wallet"].payments)
    await _auth_errors(record, table, spare, support)
    for (method, path), operation in _operations():
        if (method, path) in DRIVEN:
            documented = {int(status) for status in operation["responses"] if status != "default"}
            # 429 needs an app with a small rate limit: tests/web/test_rate_limits.py drives it and
            # checks its answers against this same document. So does tests/operator/test_faults.py
            # with the 503 every route gives while the database is away; routes that answer 503
            # for a payment route as well are driven to it here.
            seen = record.seen.get((method, path), set())
            assert seen == documented - {429} - ({503} - seen), (method, path)


async def _api_keys(record: Recorder) -> str:
    """Exercises the API key routes; a support key for the 403 checks."""
    created = await record("POST", "/v1/api-keys", 201, json={"role": "support", "name": "docs"})
    await record("POST", "/v1/api-keys", 400, json={"role": "root", "name": "x"})
    doomed = await record("POST", "/v1/api-keys", 201, json={"role": "finance", "name": "tmp"})
    listed = await record("GET", "/v1/api-keys", 200, query="limit=3")
    assert listed["data"]
    await record("GET", "/v1/api-keys", 400, query="cursor=nonsense")
    revoke = "/v1/api-keys/{key_id}"
    revoked = await record("DELETE", revoke, 200, path={"key_id": doomed["id"]})
    assert revoked["revoked_at"] is not None
    await record("DELETE", revoke, 404, path={"key_id": doomed["id"]})
    await record("DELETE", revoke, 400, path={"key_id": "bad id"})
    return created["key"]  # type: ignore[no-any-return]


async def _seamless_traffic(table: Table) -> None:
    """Postings and calls for the history routes to list: a bet, a win, and an R3 failure."""
    assert (await table.bet(300, round_id="doc"))["code"] == "R0"
    assert (await table.result(120, round_id="doc"))["code"] == "R0"
    assert (await table.bet(10, round_id="doc2", currency="USD"))["code"] == "R3"


async def _sealed_answers(record: Recorder, table: Table, provider: str) -> None:
    """The POSTs that show a secret take an Idempotency-Key: the same request with it gets the
    first answer again, secret included; another request with it is 409."""
    sessions = "/v1/players/{player_id}/sessions"
    for template, path, body in (
        ("/v1/providers/{code}/keys", {"code": provider}, None),
        (sessions, {"player_id": table.player_id}, {"provider": provider, "game_id": "g"}),
        ("/v1/api-keys", None, {"role": "support", "name": "sealed"}),
    ):
        key = record.keyed()
        first = await record("POST", template, 201, path=path, json=body, headers=key)
        assert await record("POST", template, 201, path=path, json=body, headers=key) == first
        await record("POST", template, 409, path=path, json={"other": 1}, headers=key)


async def _providers(record: Recorder) -> str:
    code = "prov-" + secrets.token_hex(4)
    created = await record("POST", "/v1/providers", 201, json={"code": code, "name": "Docs"})
    assert created["keys"][0]["key_id"]
    await record("POST", "/v1/providers", 409, json={"code": code, "name": "Again"})
    await record("POST", "/v1/providers", 400, json={"name": "no code"})
    assert (await record("GET", "/v1/providers", 200, query="limit=2"))["data"]
    await record("GET", "/v1/providers", 400, query="limit=0")
    keys = "/v1/providers/{code}/keys"
    rotated = await record("POST", keys, 201, path={"code": code})
    assert [k["state"] for k in rotated["active"]] == ["current", "previous"]
    await record("POST", keys, 404, path={"code": "no-such-provider"})
    await record("POST", keys, 400, path={"code": "bad code"})
    return code


async def _players(record: Recorder, table: Table, provider: str) -> None:
    player_id = "pl-" + secrets.token_hex(5)
    body = {"player_id": player_id, "currency": "EUR"}
    await record("POST", "/v1/players", 201, json=body)
    await record("POST", "/v1/players", 200, json=body)
    await record("POST", "/v1/players", 409, json={**body, "currency": "USD"})
    await record("POST", "/v1/players", 400, json={**body, "currency": "euro"})
    every = await record("POST", "/v1/players", 400, json={})  # `errors` lists both, documented
    assert [e["field"] for e in every["error"]["errors"]] == ["player_id", "currency"]
    assert (await record("GET", "/v1/players", 200, query="status=active&limit=5"))["data"]
    await record("GET", "/v1/players", 400, query="status=zombie")
    one = "/v1/players/{player_id}"
    assert (await record("GET", one, 200, path={"player_id": table.player_id}))["balance"] > 0
    await record("GET", one, 404, path={"player_id": "ghost-" + secrets.token_hex(4)})
    await record("GET", one, 400, path={"player_id": "bad id"})
    await _player_writes(record, table, player_id, provider)


async def _player_writes(record: Recorder, table: Table, player_id: str, provider: str) -> None:
    ghost = {"player_id": "ghost-" + secrets.token_hex(4)}
    mine = {"player_id": player_id}
    status = "/v1/players/{player_id}/status"
    await record("PUT", status, 200, path=mine, json={"status": "blocked"})
    await record("PUT", status, 400, path=mine, json={"status": "zombie"})
    await record("PUT", status, 404, path=ghost, json={"status": "active"})
    kyc = "/v1/players/{player_id}/kyc"
    player = await record("PUT", kyc, 200, path=mine, json={"tier": 2})
    assert player["kyc_tier"] == 2
    for wrong in (4, -1, "1", True, None):
        await _field_of(record, "PUT", kyc, "tier", path=mine, json={"tier": wrong})
    await record("PUT", kyc, 404, path=ghost, json={"tier": 1})
    audited = await record(
        "GET", "/v1/audit", 200, query=f"action=player.kyc&target=player:{player_id}"
    )
    (entry,) = audited["data"]
    assert (entry["before"], entry["after"]) == ({"kyc_tier": 0}, {"kyc_tier": 2})
    listed = await record("GET", "/v1/players", 200, query="limit=200")
    assert all(p["kyc_tier"] in range(4) for p in listed["data"])
    limits = "/v1/players/{player_id}/limits"
    await record("PUT", limits, 200, path=mine, json={"wager": {"daily": 300}})
    raised = await record(
        "PUT", limits, 200, path=mine, json={"wager": {"daily": 900}, "loss": {"weekly": None}}
    )
    assert raised["pending_limits"][0]["amount"] == 900  # a pending raise, documented shape
    await record("PUT", limits, 400, path=mine, json={"bogus": {"daily": 1}})
    await record("PUT", limits, 404, path=ghost, json={"wager": {"daily": 1}})
    sessions = "/v1/players/{player_id}/sessions"
    body = {"provider": provider, "game_id": "slot-1"}
    await record("POST", sessions, 201, path={"player_id": table.player_id}, json=body)
    await record("POST", sessions, 400, path=mine, json={**body, "provider": "no-such-provider"})
    await record("POST", sessions, 404, path=ghost, json=body)


async def _adjustments(record: Recorder, table: Table) -> None:
    url = "/v1/players/{player_id}/adjustments"
    mine = {"player_id": table.player_id}
    body = {"amount": -250, "reason": "goodwill reversal"}
    key = {**record.admin, "idempotency-key": "docs-" + secrets.token_hex(4)}
    created = await record("POST", url, 201, path=mine, json=body, headers=key)
    assert created["amount"] == -250
    assert (await record("POST", url, 200, path=mine, json=body, headers=key)) == created
    await record("POST", url, 409, path=mine, json={**body, "amount": -1}, headers=key)
    fresh = {**record.admin, "idempotency-key": "docs-" + secrets.token_hex(4)}
    await record("POST", url, 400, path=mine, json={**body, "amount": 0}, headers=fresh)
    ghost = {"player_id": "ghost-" + secrets.token_hex(4)}
    await record("POST", url, 404, path=ghost, json=body, headers=fresh)


async def _free_rounds(record: Recorder, table: Table) -> None:
    grants = "/v1/players/{player_id}/free-rounds"
    one = grants + "/{free_round_id}"
    mine = {"player_id": table.player_id}
    ghost = {"player_id": "ghost-" + secrets.token_hex(4)}
    expires_at = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    body = {"provider": table.provider, "game_id": "g", "rounds": 3, "bet_value": 10}
    body |= {"expires_at": expires_at}
    key = record.keyed()
    granted = await record("POST", grants, 201, path=mine, json=body, headers=key)
    assert await record("POST", grants, 201, path=mine, json=body, headers=key) == granted
    await record("POST", grants, 409, path=mine, json={**body, "rounds": 4}, headers=key)
    await record(
        "POST", grants, 400, path=mine, json={**body, "rounds": 2.0}, headers=record.keyed()
    )
    await record("POST", grants, 404, path=ghost, json=body, headers=record.keyed())
    assert (await record("GET", grants, 200, path=mine, query="state=active"))["data"]
    await record("GET", grants, 400, path=mine, query="state=spent")
    await record("GET", grants, 404, path=ghost)
    it = {**mine, "free_round_id": granted["free_round_id"]}
    assert await record("GET", one, 200, path=it) == granted
    await record("GET", one, 400, path={**it, "free_round_id": "bad id"})
    await record("GET", one, 404, path={**it, "free_round_id": "0"})
    key = record.keyed()
    withdrawn = await record("DELETE", one, 200, path=it, headers=key)
    assert withdrawn["state"] == "withdrawn"
    await record("DELETE", one, 409, path={**it, "free_round_id": "0"}, headers=key)
    await record("DELETE", one, 400, path={**it, "free_round_id": "bad id"})
    await record("DELETE", one, 404, path={**it, "free_round_id": "0"})


async def _history(record: Recorder, table: Table) -> None:
    mine = {"player_id": table.player_id}
    ghost = {"player_id": "ghost-" + secrets.token_hex(4)}
    transactions = "/v1/players/{player_id}/transactions"
    page = await record("GET", transactions, 200, path=mine, query="limit=50")
    assert {t["kind"] for t in page["data"]} >= {"bet", "result", "adjustment"}
    await record("GET", transactions, 400, path=mine, query="from=yesterday")
    await record("GET", transactions, 404, path=ghost)
    sessions = "/v1/players/{player_id}/sessions"
    assert (await record("GET", sessions, 200, path=mine))["data"]
    await record("GET", sessions, 400, path=mine, query="cursor=forged")
    await record("GET", sessions, 404, path=ghost)
    statement = "/v1/players/{player_id}/statement"
    assert (await record("GET", statement, 200, path=mine))["totals"]
    backwards = "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z"
    await record("GET", statement, 400, path=mine, query=backwards)
    await record("GET", statement, 404, path=ghost)
    mine_only = f"provider={table.provider}"
    for url in ("/v1/webhooks/calls", "/v1/webhooks/failures"):
        assert (await record("GET", url, 200, query=mine_only))["data"]
        await record("GET", url, 400, query="code=R9")
        await record("GET", url, 400, query="reason=no_such_reason")


async def _reports(record: Recorder, table: Table) -> None:
    assert (await record("GET", "/v1/ledger/check", 200))["ok"] is True
    today = datetime.now(UTC).date().isoformat()
    report = await record("GET", "/v1/reports/daily", 200, query=f"date={today}")
    assert any(row["provider"] == table.provider for row in report["rows"])
    await record("GET", "/v1/reports/daily", 400, query="date=2026-13-01")
    target = f"target=player:{table.player_id}"
    assert (await record("GET", "/v1/audit", 200, query=target))["data"]
    await record("GET", "/v1/audit", 400, query="from=yesterday")


PROVIDER_RECONCILIATION = "/v1/providers/{code}/reconciliation"


async def _provider_reconciliation(record: Recorder, table: Table) -> None:
    """A provider's report: one finding of each side (the table's postings are not in it), a
    clean report of another day, and the refusals."""
    today = datetime.now(UTC).date().isoformat()
    csv = {**record.admin, "content-type": "text/csv"}
    mine = {"code": table.provider}
    header = b"transaction_id,round_id,player_id,event,amount,currency\n"
    line = f"docs-missing,r1,{table.player_id},bet,10,EUR\n".encode()
    call = {"path": mine, "headers": csv}
    found = await record(
        "POST", PROVIDER_RECONCILIATION, 200, query=f"date={today}", content=header + line, **call
    )
    assert {d["type"] for d in found["discrepancies"]} == {
        "missing_in_wallet",
        "missing_at_provider",
    }
    assert (await record("POST", PROVIDER_RECONCILIATION, 200, content=header, **call))["ok"]
    bad = await record(
        "POST", PROVIDER_RECONCILIATION, 400, content=header + b"x,,p,bet,1,EUR\n", **call
    )
    assert bad["error"]["field"] == "line[2].round_id"
    await _field_of(
        record, "POST", PROVIDER_RECONCILIATION, "date", query="date=May", content=header, **call
    )
    await _field_of(
        record, "POST", PROVIDER_RECONCILIATION, "code", path={"code": "bad code"}, headers=csv
    )
    await record("POST", PROVIDER_RECONCILIATION, 404, path={"code": "no-such-prov"}, headers=csv)


async def _rounds(record: Recorder, table: Table, pool: asyncpg.Pool) -> None:
    """The round listing, a timeline, and the settlement of a stale round and its refusals."""
    assert (await table.bet(50, round_id="doc-stale"))["code"] == "R0"
    await age_round(pool, table.provider, table.player_id, "doc-stale")
    mine = f"player_id={table.player_id}"
    assert (await record("GET", "/v1/rounds", 200, query=mine))["data"]
    stale = f"provider={table.provider}&state=stale"
    assert (await record("GET", "/v1/rounds", 200, query=stale))["data"]
    await record("GET", "/v1/rounds", 400, query="state=closed")
    one = "/v1/rounds/{provider}/{player_id}/{round_id}"
    doc = {"provider": table.provider, "player_id": table.player_id, "round_id": "doc"}
    assert (await record("GET", one, 200, path=doc))["timeline"]
    await record("GET", one, 404, path={**doc, "round_id": "none"})
    await record("GET", one, 400, path={**doc, "round_id": "a b"})
    settle = one + "/settle"
    body = {"action": "refund", "reason": "provider never closed it"}
    key = record.keyed()
    stale_round = {**doc, "round_id": "doc-stale"}
    settled = await record("POST", settle, 200, path=stale_round, json=body, headers=key)
    assert settled["timeline"][-1]["event"] == "settle_refund"
    await record(
        "POST", settle, 409, path=stale_round, json={**body, "action": "close"}, headers=key
    )
    await record("POST", settle, 400, path=doc, json=body, headers=record.keyed())
    await record(
        "POST", settle, 404, path={**doc, "round_id": "none"}, json=body, headers=record.keyed()
    )


async def _auth_errors(record: Recorder, table: Table, provider: str, support: str) -> None:
    """401 on every route without a key; 403 with a support key on every route it may not use."""
    values = {
        "player_id": table.player_id,
        "code": provider,
        "key_id": "ak_000000000000",
        "payment_id": "dep_" + "0" * 20,
        "event_id": NO_EVENT["event_id"],
        "free_round_id": "1",
        "provider": table.provider,
        "round_id": "doc",
    }
    reader = {"authorization": f"Bearer {support}"}
    for (method, path), roles in PERMISSIONS.items():
        body = {} if method in ("POST", "PUT") else None
        await record(method, path, 401, path=values, json=body, headers={})
        if "support" not in roles:
            await record(method, path, 403, path=values, json=body, headers=reader)


# --- payments: deposits, withdrawals, decisions, and the PSP webhook ----------------------------

DEPOSITS = "/v1/deposits"
DEPOSIT = "/v1/deposits/{payment_id}"
WITHDRAWALS = "/v1/withdrawals"
WITHDRAWAL = "/v1/withdrawals/{payment_id}"
APPROVE = "/v1/withdrawals/{payment_id}/approve"
REJECT = "/v1/withdrawals/{payment_id}/reject"
NO_DEPOSIT = {"payment_id": "dep_" + "0" * 20}
NO_WITHDRAWAL = {"payment_id": "wdr_" + "0" * 20}
BAD_ID = {"payment_id": "bad id"}


def _id(payment: dict[str, Any]) -> dict[str, str]:
    return {"payment_id": payment["id"]}


@contextmanager
def _only_routes(payments: Payments, routes: list[Psp]) -> Iterator[None]:
    """The payments use ``routes`` only, for a while."""
    saved = payments.psps
    payments.psps = routes
    try:
        yield
    finally:
        payments.psps = saved


async def _payments(
    record: Recorder,
    operator: Operator,
    sandbox: SandboxRoutes,
    pool: asyncpg.Pool,
    payments: Payments,
) -> None:
    deliveries = _watch_deliveries(sandbox)
    player = await operator.player(balance=50_000)
    deposit_id = await _deposits(record, operator, sandbox, pool, player)
    await _withdrawals(record, payments, player)
    await _attention(record, payments, player)
    await _degraded(record, pool, payments, player)
    await _kyc_refusals(record, operator, payments)
    await _psp_webhook(record, operator, sandbox, pool)
    await sandbox.settle()
    # The sandbox's own deliveries: each event it sent is a documented PspEvent, each answer fits.
    outcomes = set()
    for response in deliveries:
        assert_valid(orjson.loads(response.request.content), schema_of("PspEvent"))
        record.check(response, "POST", PSP_WEBHOOK)
        answer = response.json()
        assert "outcome" in answer, (response.request.content, response.text)
        outcomes.add(answer["outcome"])
    assert outcomes >= {"moved_to_succeeded", "duplicate", "moved_to_paid"}, outcomes
    await _operator_events(record, pool, deposit_id)
    await _reconciliation(record, sandbox, pool, payments, deposit_id)


async def _kyc_refusals(record: Recorder, operator: Operator, payments: Payments) -> None:
    """With WALLET_KYC_METHOD_TIERS, a payment below the method's minimum tier is 422
    method_unavailable on `method`; at the tier it goes through."""
    player = await operator.player(balance=5_000)
    upi = {"player_id": player, "amount": 300, "currency": "EUR", "method": "upi"}
    card = {**upi, "method": "card"}
    saved = payments.kyc_tiers
    payments.kyc_tiers = {"deposit": {"upi": 1}, "withdrawal": {"*": 1}}
    try:
        for template, body in ((DEPOSITS, upi), (WITHDRAWALS, card)):
            answer = await record("POST", template, 422, json=body, headers=record.keyed())
            assert answer["error"]["code"] == "method_unavailable", answer
            assert answer["error"]["field"] == "method", answer
        assert await operator.balance(player) == 5_000  # nothing held
        await record("POST", DEPOSITS, 201, json=card, headers=record.keyed())  # no minimum
        raised = await record(
            "PUT", "/v1/players/{player_id}/kyc", 200, path={"player_id": player}, json={"tier": 1}
        )
        assert raised["kyc_tier"] == 1
        await record("POST", DEPOSITS, 201, json=upi, headers=record.keyed())
    finally:
        payments.kyc_tiers = saved


RECONCILIATION = "/v1/reconciliation"


def _failing(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("the PSP is down", request=request)


async def _reconciliation(
    record: Recorder,
    sandbox: SandboxRoutes,
    pool: asyncpg.Pool,
    payments: Payments,
    deposit_id: str,
) -> None:
    """Today's report of route sandbox-a, with a line planted at the sandbox and an amount
    changed there; yesterday's by default; and each error."""
    today = datetime.now(UTC).date().isoformat()
    reference = "dep_docs_" + secrets.token_hex(6)
    line = {
        "psp_payment_id": "psp_docs_" + secrets.token_hex(6),
        "reference": reference,
        "kind": "deposit",
        "amount": 500,
        "currency": "EUR",
    }
    sandbox_key = {"authorization": f"Bearer {SANDBOX_API_KEY}"}
    planted = await sandbox.http.post(
        "/v1/sandbox/settlement-extra", json={"line": line}, headers=sandbox_key
    )
    assert planted.status_code == 201, planted.text
    psp_payment_id = await _psp_payment_id(pool, deposit_id)
    changed = await sandbox.http.post(
        "/v1/sandbox/settlement-overrides",
        json={"psp_payment_id": psp_payment_id, "amount": 2501},
        headers=sandbox_key,
    )
    assert changed.status_code == 200, changed.text
    mine = f"psp=sandbox-a&date={today}"
    report = await record("GET", RECONCILIATION, 200, query=mine)
    assert (report["psp"], report["date"], report["ok"]) == ("sandbox-a", today, False)
    assert report["wallet_count"] >= 1 and report["psp_count"] >= 2
    assert report["psp_totals"]["EUR"]["gross"] >= 500 + 2501
    assert {
        "type": "missing_in_wallet",
        "payment_id": reference,
        "psp_payment_id": line["psp_payment_id"],
        "wallet_amount": None,
        "psp_amount": 500,
        "wallet_currency": None,
        "psp_currency": "EUR",
    } in report["discrepancies"]
    assert {
        "type": "amount_mismatch",
        "payment_id": deposit_id,
        "psp_payment_id": psp_payment_id,
        "wallet_amount": 2500,
        "psp_amount": 2501,
        "wallet_currency": "EUR",
        "psp_currency": "EUR",
    } in report["discrepancies"]
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    assert (await record("GET", RECONCILIATION, 200, query="psp=sandbox-b"))["date"] == yesterday
    for query, field in (
        ("", "psp"),
        (f"date={today}", "psp"),
        ("psp=bad!name", "psp"),
        ("psp=sandbox-a&date=2026-13-01", "date"),
        ("psp=sandbox-a&date=yesterday", "date"),
    ):
        await _field_of(record, "GET", RECONCILIATION, field, query=query)
    await record("GET", RECONCILIATION, 404, query="psp=no-such-psp")
    async with httpx.AsyncClient(transport=httpx.MockTransport(_failing)) as down:
        route = SandboxPsp("sandbox-a", "http://sandbox.test", SANDBOX_API_KEY, b"x", down)
        with _only_routes(payments, [route]):
            answer = await record("GET", RECONCILIATION, 503, query=mine)
    assert answer["error"]["code"] == "route_degraded"


def _watch_deliveries(sandbox: SandboxRoutes) -> list[httpx.Response]:
    """Every answer the app gives to the sandbox's webhook deliveries, from now on."""
    seen: list[httpx.Response] = []

    async def keep(response: httpx.Response) -> None:
        await response.aread()
        seen.append(response)

    client = sandbox.sandbox.state.sandbox.config.http
    hooks = client.event_hooks
    client.event_hooks = {**hooks, "response": [*hooks["response"], keep]}
    return seen


async def _psp_payment_id(pool: asyncpg.Pool, payment_id: str) -> str:
    psp_payment_id = await pool.fetchval(
        "SELECT psp_payment_id FROM payments WHERE id = $1", payment_id
    )
    assert isinstance(psp_payment_id, str), payment_id
    return psp_payment_id


async def _deposits(
    record: Recorder, operator: Operator, sandbox: SandboxRoutes, pool: asyncpg.Pool, player: str
) -> str:
    """Drives the deposit routes; the id of a deposit that succeeded."""
    body = {
        "player_id": player,
        "amount": 2500,
        "currency": "EUR",
        "method": "card",
        "reference": "order-1",
        "metadata": {"scenario": "duplicate-webhooks"},
    }
    key = record.keyed()
    created = await record("POST", DEPOSITS, 201, json=body, headers=key)
    assert (created["status"], created["reference"]) == ("awaiting_method", "order-1")
    assert created["redirect_url"] and created["deep_link"] is None
    assert await record("POST", DEPOSITS, 201, json=body, headers=key) == created
    await record("POST", DEPOSITS, 409, json={**body, "amount": 2600}, headers=key)
    await _field(record, DEPOSITS, "Idempotency-Key", json=body, headers=record.admin)
    await _field(record, DEPOSITS, "currency", json={**body, "currency": "INR"})
    await _field(record, DEPOSITS, "amount", json={**body, "amount": 0})
    await record(
        "POST", DEPOSITS, 404, json={**body, "player_id": "ghost-1"}, headers=record.keyed()
    )
    await _code(record, DEPOSITS, 422, "method_unavailable", json={**body, "method": "cheque"})
    limited = await operator.player()
    await operator.call(
        "PUT", f"/v1/players/{limited}/limits", {"deposit": {"daily": 1000}}, expect=200
    )
    over = {**body, "player_id": limited, "amount": 1001}
    await _code(record, DEPOSITS, 422, "player_limit_exceeded", json=over)
    upi = {"player_id": player, "amount": 700, "currency": "EUR", "method": "upi"}
    plain = await record("POST", DEPOSITS, 201, json=upi, headers=record.keyed())
    assert plain["deep_link"].startswith("upi://") and plain["reference"] is None
    assert plain["metadata"] == {}
    declined = {**upi, "metadata": {"scenario": "decline"}}
    failed = await record("POST", DEPOSITS, 201, json=declined, headers=record.keyed())
    assert (failed["status"], failed["failure_code"]) == ("failed", "declined")
    # The person approves on the hosted page; the sandbox's webhooks (three copies) credit once.
    await sandbox.complete(await _psp_payment_id(pool, created["id"]))
    assert (await record("GET", DEPOSIT, 200, path=_id(created)))["status"] == "succeeded"
    await record("GET", DEPOSIT, 404, path=NO_DEPOSIT)
    await record("GET", DEPOSIT, 400, path=BAD_ID)
    return created["id"]  # type: ignore[no-any-return]


async def _field(
    record: Recorder,
    template: str,
    field: str,
    *,
    json: Any = None,
    headers: dict[str, str] | None = None,
    path: dict[str, str] | None = None,
) -> None:
    """A 400 naming ``field``."""
    answer = await record(
        "POST", template, 400, path=path, json=json, headers=headers or record.keyed()
    )
    assert answer["error"]["field"] == field, answer


async def _code(record: Recorder, template: str, status: int, code: str, **call: Any) -> None:
    call.setdefault("headers", record.keyed())
    answer = await record("POST", template, status, **call)
    assert answer["error"]["code"] == code, answer


async def _withdrawals(record: Recorder, payments: Payments, player: str) -> None:
    body = {"player_id": player, "amount": 1000, "currency": "EUR", "method": "card"}
    key = record.keyed()
    paid = await record("POST", WITHDRAWALS, 201, json=body, headers=key)
    assert paid["status"] == "processing" and paid["redirect_url"] is None
    assert await record("POST", WITHDRAWALS, 201, json=body, headers=key) == paid
    await record("POST", WITHDRAWALS, 409, json={**body, "amount": 1001}, headers=key)
    await _field(record, WITHDRAWALS, "Idempotency-Key", json=body, headers=record.admin)
    await _field(record, WITHDRAWALS, "amount", json={**body, "amount": 10**9})
    await _field(record, WITHDRAWALS, "currency", json={**body, "currency": "INR"})
    ghost = {**body, "player_id": "ghost-1"}
    await record("POST", WITHDRAWALS, 404, json=ghost, headers=record.keyed())
    await _code(record, WITHDRAWALS, 422, "method_unavailable", json={**body, "method": "cheque"})
    assert (await record("GET", WITHDRAWAL, 200, path=_id(paid)))["id"] == paid["id"]
    await record("GET", WITHDRAWAL, 404, path=NO_WITHDRAWAL)
    await record("GET", WITHDRAWAL, 400, path=BAD_ID)
    # Above the review threshold a withdrawal is held for an operator's decision.
    saved, payments.review_threshold = payments.review_threshold, 500
    try:
        big = {**body, "amount": 800}
        held = [
            await record("POST", WITHDRAWALS, 201, json=big, headers=record.keyed())
            for _ in range(2)
        ]
    finally:
        payments.review_threshold = saved
    assert [w["status"] for w in held] == ["held", "held"]
    approved = await record("POST", APPROVE, 200, path=_id(held[0]))
    assert approved["status"] == "processing"
    assert (await record("POST", REJECT, 200, path=_id(held[1])))["status"] == "rejected"
    await _field(record, APPROVE, "status", path=_id(held[1]))
    await _field(record, REJECT, "status", path=_id(paid))
    for template in (APPROVE, REJECT):
        await record("POST", template, 404, path=NO_WITHDRAWAL)
        await record("POST", template, 400, path=BAD_ID)


RESOLVE = "/v1/withdrawals/{payment_id}/resolve"


async def _attention(record: Recorder, payments: Payments, player: str) -> None:
    """A payout whose PSP timed out twice: listed as needing attention, resolved once; and
    operator actions with an Idempotency-Key give their first answer again."""
    body = {"player_id": player, "amount": 200, "currency": "EUR", "method": "card"}
    # In front of the sandbox routes, which stay known: their webhooks may still be arriving.
    with _only_routes(payments, [ScriptedPsp("psp-a", [timeout(), timeout()]), *payments.psps]):
        await _code(record, WITHDRAWALS, 503, "route_degraded", json=body, headers=record.keyed())
    listed = await record("GET", WITHDRAWALS, 200, query="attention=true&limit=100")
    unknown = next(w for w in listed["data"] if w["attention"] == "payout_outcome_unknown")
    missing = await record("GET", WITHDRAWALS, 400)
    assert missing["error"]["field"] == "attention"
    # Deposits needing attention: the same listing, of the other kind.
    deposits = await record("GET", DEPOSITS, 200, query="attention=true&limit=100")
    assert unknown["id"] not in {d["id"] for d in deposits["data"]}
    assert (await record("GET", DEPOSITS, 400))["error"]["field"] == "attention"
    decision = {"outcome": "paid", "reason": "psp-a confirmed it"}
    await _field(
        record, RESOLVE, "Idempotency-Key", path=_id(unknown), json=decision, headers=record.admin
    )
    await _field(record, RESOLVE, "outcome", path=_id(unknown), json={**decision, "outcome": "x"})
    key = record.keyed()
    done = await record("POST", RESOLVE, 200, path=_id(unknown), json=decision, headers=key)
    assert done["status"] == "paid" and done["needs_attention"] is False
    assert await record("POST", RESOLVE, 200, path=_id(unknown), json=decision, headers=key) == done
    await record(
        "POST", RESOLVE, 409, path=_id(unknown), json={**decision, "reason": "x"}, headers=key
    )
    await record("POST", RESOLVE, 404, path=NO_WITHDRAWAL, json=decision, headers=record.keyed())
    await record("POST", RESOLVE, 400, path=BAD_ID, json=decision, headers=record.keyed())
    for template in (APPROVE, REJECT):
        action_key = record.keyed()
        first = await record("POST", template, 400, path=_id(unknown), headers=action_key)
        assert await record("POST", template, 400, path=_id(unknown), headers=action_key) == first
        await record("POST", template, 409, path=NO_WITHDRAWAL, headers=action_key)


async def _degraded(record: Recorder, pool: asyncpg.Pool, payments: Payments, player: str) -> None:
    """503 when every route fails with retryable errors (a single route and a 5xx burst), and
    approvals that find no route any more."""
    burst = {
        "player_id": player,
        "amount": 300,
        "currency": "EUR",
        "method": "card",
        "metadata": {"scenario": "5xx-burst"},
    }
    saved = payments.review_threshold
    payments.review_threshold = 100
    try:
        held = [
            await record("POST", WITHDRAWALS, 201, json=burst, headers=record.keyed())
            for _ in range(2)
        ]
    finally:
        payments.review_threshold = saved
    with _only_routes(payments, payments.psps[:1]):
        for template in (DEPOSITS, WITHDRAWALS):
            key = record.keyed()
            await _code(record, template, 503, "route_degraded", json=burst, headers=key)
            # The first answer was the 503: the same key and body get it again.
            await _code(record, template, 503, "route_degraded", json=burst, headers=key)
        await _code(record, APPROVE, 503, "route_degraded", path=_id(held[0]))
    with _only_routes(payments, []):
        await _code(record, APPROVE, 422, "method_unavailable", path=_id(held[1]))
    # No route, no approval: the withdrawal stays held for a later decision.
    status = await pool.fetchval("SELECT status FROM payments WHERE id = $1", held[1]["id"])
    assert status == "held"


async def _psp_webhook(
    record: Recorder, operator: Operator, sandbox: SandboxRoutes, pool: asyncpg.Pool
) -> None:
    """The PSP webhook with events signed here, as the sandbox route "sandbox-a" would sign."""
    player = await operator.player()
    body = {"player_id": player, "amount": 900, "currency": "EUR", "method": "card"}
    deposit = await record("POST", DEPOSITS, 201, json=body, headers=record.keyed())
    data = {
        "psp_payment_id": await _psp_payment_id(pool, deposit["id"]),
        "reference": deposit["id"],
        "kind": "deposit",
        "amount": 900,
        "currency": "EUR",
        "status": "succeeded",
    }

    def event(type_: str, **changes: Any) -> bytes:
        raw = {"id": "evt_" + secrets.token_hex(12), "type": type_, "created": now()}
        raw["data"] = {**data, **changes}
        assert_valid(raw, schema_of("PspEvent"))  # what the test sends is a documented event
        return orjson.dumps(raw)

    async def send(
        expect: int,
        content: bytes,
        *,
        psp: str = "sandbox-a",
        secret: str = SANDBOX_SECRET,
        t: int | None = None,
        signed: bool = True,
    ) -> Any:
        sign = signing.sign(secret.encode(), content, now() if t is None else t)
        headers = {"x-signature": sign} if signed else {}
        path = {"psp": psp}
        return await record(
            "POST", PSP_WEBHOOK, expect, path=path, content=content, headers=headers
        )

    succeeded = event("payment.succeeded")
    # Not trusted: nothing changes.
    await send(401, succeeded, signed=False)
    await send(401, succeeded, secret="not-the-secret")
    await send(401, succeeded, t=now() - 1000)
    assert (await record("GET", DEPOSIT, 200, path=_id(deposit)))["status"] == "awaiting_method"
    assert (await send(200, succeeded))["outcome"] == "moved_to_succeeded"
    assert (await send(200, succeeded))["outcome"] == "duplicate"
    late = event("payment.processing", status="pending")
    assert (await send(200, late))["outcome"] == "ignored"
    wrong = event("payment.succeeded", amount=901)
    assert (await send(200, wrong))["outcome"] == "refused_amount_mismatch"
    await send(404, succeeded, psp="no-such-psp")
    await send(404, event("payment.succeeded", reference=NO_DEPOSIT["payment_id"]))
    await send(400, b"not json")
    await send(400, orjson.dumps({"id": "evt_1", "type": "payment.succeeded"}))
    await send(400, succeeded, psp="bad psp")
    assert (await record("GET", DEPOSIT, 200, path=_id(deposit)))["status"] == "succeeded"


# --- events to the operator's platform: listed, delivered, dead-lettered, replayed --------------

EVENTS_LIST = "/v1/events"
REPLAY = "/v1/events/{event_id}/replay"
NO_EVENT = {"event_id": "evt_" + "0" * 32}
OPERATOR_SECRET = b"docs-operator-secret"


class OperatorPlatform:
    """The operator's platform, as an httpx transport: keeps each delivery, and refuses those of
    the event ``failing`` with 503."""

    def __init__(self) -> None:
        self.received: list[httpx.Request] = []
        self.failing: str | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.received.append(request)
        event_id = orjson.loads(request.content)["id"]
        return httpx.Response(503 if event_id == self.failing else 204)

    def deliveries(self, payment_id: str) -> list[httpx.Request]:
        return [r for r in self.received if orjson.loads(r.content)["data"]["id"] == payment_id]


async def _deliver_all(box: outbox.Outbox) -> None:
    """Runs the delivery worker until nothing is due (every test's events, not only ours)."""
    for _ in range(100):
        if not sum((await box.deliver_due()).values()):
            return
    raise AssertionError("events kept coming due")


def _check_delivery(request: httpx.Request, listed: dict[str, Any], *, replay: bool) -> None:
    """A delivery is the documented webhook: its body the event's listed `payload` (in the
    example's key order), signed, with only documented headers of ours."""
    ((method, operation),) = DOC["webhooks"][OPERATOR_WEBHOOK].items()
    assert request.method == method.upper()
    assert request.headers["content-type"] == "application/json"
    body = orjson.loads(request.content)
    assert_valid(body, schema_of("OperatorEventPayload"))
    assert body == listed[body["id"]]["payload"]
    assert list(body) == list(OPERATOR_EVENT_EXAMPLE)
    assert list(body["data"]) == list(OPERATOR_EVENT_EXAMPLE["data"])
    signing.verify(
        OPERATOR_SECRET, request.content, request.headers["x-signature"], now=time.time()
    )
    documented = {p["name"].lower() for p in operation["parameters"]}
    assert {name for name in request.headers if name.startswith("x-")} <= documented
    assert request.headers.get("x-wallet-replay") == ("true" if replay else None)


async def _operator_events(record: Recorder, pool: asyncpg.Pool, deposit_id: str) -> None:
    """The events of a deposit that succeeded: listed and paged, delivered as the document's
    webhook says, replayed, dead-lettered after the last attempt, and replayed again."""
    mine = f"payment_id={deposit_id}"
    listed = await record("GET", EVENTS_LIST, 200, query=mine)
    events = listed["data"]
    assert [e["type"] for e in events] == ["deposit.succeeded", "deposit.awaiting_method"]
    # The test app has no WALLET_OPERATOR_WEBHOOK_URL: nothing was delivered yet.
    assert {(e["status"], e["attempts"]) for e in events} == {("pending", 0)}
    first = await record("GET", EVENTS_LIST, 200, query=f"{mine}&limit=1")
    assert first["data"] == events[:1] and first["next_cursor"]
    after = f"{mine}&limit=1&cursor={first['next_cursor']}"
    assert await record("GET", EVENTS_LIST, 200, query=after) == {
        "data": events[1:],
        "next_cursor": None,
    }
    await _field_of(record, "GET", EVENTS_LIST, "status", query="status=lost")
    await _field_of(record, "GET", EVENTS_LIST, "payment_id", query="payment_id=bad!id")
    await _field_of(record, "GET", EVENTS_LIST, "cursor", query="cursor=nonsense")

    platform = OperatorPlatform()
    by_id = {e["id"]: e for e in events}
    async with httpx.AsyncClient(transport=httpx.MockTransport(platform)) as client:
        box = outbox.Outbox(
            pool, Queries.load(), client, "http://operator.test/events", OPERATOR_SECRET
        )
        await _deliver_all(box)
        sent = platform.deliveries(deposit_id)
        assert sorted(orjson.loads(r.content)["id"] for r in sent) == sorted(by_id)
        for request in sent:
            _check_delivery(request, by_id, replay=False)
        delivered = await record("GET", EVENTS_LIST, 200, query=f"status=delivered&{mine}")
        assert [e["id"] for e in delivered["data"]] == list(by_id)
        assert (await record("GET", EVENTS_LIST, 200, query=f"status=pending&{mine}"))["data"] == []

        # Replayed, and then refused until it is a dead letter: one attempt was used already.
        event_id = events[0]["id"]
        again = await record("POST", REPLAY, 200, path={"event_id": event_id})
        assert (again["status"], again["replays"], again["delivered_at"]) == ("pending", 1, None)
        platform.failing = event_id
        for attempt in range(2, outbox.MAX_ATTEMPTS + 1):
            await _deliver_all(box)
            row = await pool.fetchrow("SELECT * FROM operator_events WHERE id = $1", event_id)
            assert row["attempts"] == attempt and row["last_error"] == "HTTP 503"
            if attempt == 2:
                retrying = await record("GET", EVENTS_LIST, 200, query=f"status=pending&{mine}")
                assert [(e["id"], e["attempts"]) for e in retrying["data"]] == [(event_id, 2)]
            await pool.execute(
                "UPDATE operator_events SET next_attempt_at = now() WHERE id = $1", event_id
            )
        dead = await record("GET", EVENTS_LIST, 200, query=f"status=dead&{mine}")
        assert [(e["id"], e["attempts"]) for e in dead["data"]] == [(event_id, outbox.MAX_ATTEMPTS)]

        # A dead letter replayed gets one attempt: dead again when it fails, delivered when not.
        for replays, failing, status in ((2, event_id, "dead"), (3, None, "delivered")):
            platform.failing = failing
            again = await record("POST", REPLAY, 200, path={"event_id": event_id})
            assert (again["status"], again["replays"], again["dead_at"]) == (
                "pending",
                replays,
                None,
            )
            await _deliver_all(box)
            page = await record("GET", EVENTS_LIST, 200, query=f"status={status}&{mine}")
            assert (event_id, replays) in [(e["id"], e["replays"]) for e in page["data"]]
        replayed = platform.deliveries(deposit_id)[len(sent) :]
        assert len(replayed) == outbox.MAX_ATTEMPTS + 1  # 14 + 1 refused, then 1 accepted
        for request in replayed:
            _check_delivery(request, by_id, replay=True)
    final = await record("GET", EVENTS_LIST, 200, query=mine)
    assert [(e["status"], e["attempts"], e["replays"]) for e in final["data"]] == [
        ("delivered", outbox.MAX_ATTEMPTS + 2, 3),
        ("delivered", 1, 0),
    ]
    await record("POST", REPLAY, 404, path=NO_EVENT)
    # With a key: the first answer again, and another request with the key is 409.
    key = record.keyed()
    first = await record("POST", REPLAY, 404, path=NO_EVENT, headers=key)
    assert await record("POST", REPLAY, 404, path=NO_EVENT, headers=key) == first
    await record("POST", REPLAY, 409, path={"event_id": "evt_other"}, headers=key)
    answer = await record("POST", REPLAY, 400, path={"event_id": "bad id"})
    assert answer["error"]["field"] == "event_id"


async def _field_of(record: Recorder, method: str, template: str, field: str, **call: Any) -> None:
    """A 400 naming ``field``, for any method."""
    answer = await record(method, template, 400, **call)
    assert answer["error"]["field"] == field, answer


# --- the seamless webhook: decrypted answers --------------------------------------------------


class Provider:
    """Sends events of the table's provider; checks each event, raw answer and decrypted answer
    against the document."""

    def __init__(self, http: httpx.AsyncClient, table: Table) -> None:
        self.http = http
        self.table = table
        self.answered: set[str] = set()

    async def send(self, name: str, **fields: Any) -> dict[str, Any]:
        client = self.table.client
        event = client.event(name, player_id=self.table.player_id, **fields)
        assert_valid(
            event, schema_of(event_schema_name(name))
        )  # what the tests send is a documented event
        body = seal_event(client.key, self.table.provider, event)
        response = await self.http.post(client.path, content=body)
        check_response(response, "POST", WEBHOOK)
        answer = open_answer(client.key, self.table.provider, response.content)
        assert_valid(answer, schema_of("SeamlessResponse"))
        assert ("payload" in response.json()) == (answer["code"] != "R2")
        self.answered.add(name)
        return answer


async def test_seamless_answers_match_the_document(http: httpx.AsyncClient, table: Table) -> None:
    """Each of the events answered R0, as the document says."""
    provider = Provider(http, table)
    send = provider.send
    token = {"session_token": table.token}
    money = {"round_id": "r-doc", "currency": "EUR"}
    assert (await send("login", **token))["code"] == "R0"
    assert (await send("balance"))["balance"] == 10_000
    bet = {**token, **money, "transaction_id": "b-doc", "game_id": "slot-1", "amount": 250}
    assert (await send("bet", **bet))["transaction_id"]
    cancel = {**money, "transaction_id": "c-doc", "ref_transaction_id": "b-doc"}
    assert (await send("cancel", **cancel))["balance"] == 10_000
    assert (await send("cancel", **cancel))["duplicate"] is True
    won = {**money, "round_id": "r-doc2", "transaction_id": "w-doc", "game_id": "slot-1"}
    assert (await send("result", **won, amount=400))["balance"] == 10_400
    fix = {**money, "round_id": "r-doc2", "transaction_id": "w-fix", "ref_transaction_id": "w-doc"}
    assert (await send("result_change", **fix, amount=300))["balance"] == 10_300
    jackpot = {**money, "round_id": "r-doc3", "transaction_id": "j-doc", "game_id": "slot-1"}
    assert (await send("result", **jackpot, amount=700, kind="jackpot"))["balance"] == 11_000
    assert (await send("end_round", round_id="r-doc3"))["code"] == "R0"
    promo = {"transaction_id": "pw-doc", "promo_id": "cup-1", "currency": "EUR"}
    assert (await send("promo_win", **promo, amount=500))["balance"] == 11_500
    assert (await send("logout", **token))["code"] == "R0"
    assert provider.answered == set(EVENTS)


async def test_seamless_refusals_match_the_document(http: httpx.AsyncClient, table: Table) -> None:
    """R1 to R4 answers, encrypted and plain, fit the document too."""
    send = Provider(http, table).send
    bet = {
        "session_token": table.token,
        "round_id": "r-no",
        "game_id": "slot-1",
        "currency": "EUR",
        "transaction_id": "b-no",
        "amount": 10**9,
    }
    poor = await send("bet", **bet)
    assert (poor["code"], poor["balance"]) == ("R4", 10_000)
    assert (await send("bet", **{**bet, "currency": "USD", "extra": 1}))["code"] == "R3"
    await send(
        "cancel", transaction_id="c-no", ref_transaction_id="b-no", round_id="r-no", currency="EUR"
    )
    assert (await send("bet", **{**bet, "amount": 1}))["reason"] == "transaction_cancelled"
    assert (await send("login", session_token="forged"))["reason"] == "invalid_session"
    plain = await http.post(table.client.path, content=b'{"payload": "%%%"}')
    check_response(plain, "POST", WEBHOOK)
    assert plain.json()["code"] == "R2" and "payload" not in plain.json()
