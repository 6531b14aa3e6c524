"""The OpenAPI operations and component schemas, read off the app's routes.

Like Starlette's ``SchemaGenerator``, this walks the routes; unlike it, it needs no docstring
YAML: every :class:`~app.web.routing.OperationRoute` carries its :class:`Operation`, whose body,
query and answer types are pydantic models, so the schemas are the very declarations that
validate requests and encode answers.

What every operation shares is declared in app/web too, and only read here: the error answers
(:mod:`app.web.errors`: the ``Error`` message, each class's ``description``), the
``Idempotency-Key`` and ``X-Request-Id`` headers, and the bearer scheme (:func:`components`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from app.fields import IDENTIFIER_PATTERN, IDENTIFIER_RULE
from app.web.auth import READ, ROLES
from app.web.errors import DatabaseUnavailable, Error, error_classes
from app.web.idempotency import KEY, KEY_MAX
from app.web.routing import KeyParameter, Media, Operation

Schema = dict[str, Any]
JSON = "application/json"
REQUEST_ID_HEADER = {"X-Request-Id": {"$ref": "#/components/headers/XRequestId"}}
IDEMPOTENCY_PARAMETER = {"optional": "ActionIdempotencyKey", "required": "IdempotencyKey"}
# Added to an operation's own 503 note: any route may answer so.
DATABASE_DOWN = "or " + DatabaseUnavailable.description
# The shared Idempotency-Key parameters (a route may name its own: Operation.key_parameter).
IDEMPOTENCY_DESCRIPTIONS = {
    "optional": "optional, printable: the same key and request (method, path, body) again get the "
    "first answer again, whatever it was, without acting again; another request with the key is "
    "409; requests racing with one key act once",
    "required": "printable (400 on `Idempotency-Key` when missing): the same key and body again "
    "get the first answer again; another body with the key is 409",
}


def ref(kind: Literal["schemas", "parameters", "responses"], name: str) -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def schemas(models: Iterable[tuple[type[BaseModel], JsonSchemaMode]]) -> dict[str, Schema]:
    """Component schemas of ``models`` and of every model they use, by class name."""
    _, top = models_json_schema(
        list(dict.fromkeys(models)), ref_template="#/components/schemas/{model}"
    )
    return {name: _untitled(schema) for name, schema in top.get("$defs", {}).items()}


def models_of(operations: Iterable[Operation]) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    found: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for op in operations:
        for body in (op.body, op.raw_body):
            if body is not None and not isinstance(body, Media):
                found.append((body, "validation"))
        found += [(m, "serialization") for _, m, _ in op.answers if not isinstance(m, Media)]
    return found


def _untitled(schema: Any) -> Any:
    """pydantic titles every property after its name; the document's readers have the name. And
    a field that may be absent but never null (``Field(None)`` on a non-optional type) keeps no
    ``default: null`` its own schema would refuse."""
    if isinstance(schema, dict):
        return {
            k: _untitled(v)
            for k, v in schema.items()
            if not (k == "title" and isinstance(v, str) and "properties" not in schema)
            and not (k == "default" and v is None and not _allows_null(schema))
        }
    if isinstance(schema, list):
        return [_untitled(v) for v in schema]
    return schema


def _allows_null(schema: Schema) -> bool:
    kind = schema.get("type")
    return (
        kind == "null"
        or (isinstance(kind, list) and "null" in kind)
        or any(_allows_null(option) for option in schema.get("anyOf", ()))
    )


def _not_null(schema: Schema) -> Schema:
    """A query parameter is absent or a string, never null: ``X | None = None`` shows as X."""
    options = [s for s in schema.get("anyOf", ()) if s != {"type": "null"}]
    if len(options) == 1 and schema.get("default", ...) is None:
        rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
        return {**options[0], **rest}
    return schema


def parameters(op: Operation) -> list[Schema]:
    """Path parameters, then the query model's fields, then the headers the operation reads,
    then the Idempotency-Key header."""
    found: list[Schema] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "enum": list(op.path_values[name])}
            if name in op.path_values
            else {"type": "string", "pattern": IDENTIFIER_PATTERN},
            "description": description
            if name in op.path_values or op.public
            else f"{description} (400 when not {IDENTIFIER_RULE})",
        }
        for name, description in op.path_params.items()
    ]
    if op.query is not None:
        query = _untitled(op.query.model_json_schema())
        required = set(query.get("required", ()))
        for name, schema in query["properties"].items():
            description = schema.pop("description", "")
            schema = _not_null(schema)
            found.append(
                {
                    "name": name,
                    "in": "query",
                    "required": name in required,
                    "schema": schema,
                    "description": description,
                }
            )
    found += [
        _header(
            h.name, h.description, required=h.required, **({"minLength": 1} if h.required else {})
        )
        for h in op.headers
    ]
    if op.idempotency is not None:
        key = op.key_parameter or IDEMPOTENCY_PARAMETER[op.idempotency]
        found.append(ref("parameters", key.name if isinstance(key, KeyParameter) else key))
    return found


def shared_error_responses() -> tuple[dict[int, str], dict[str, Schema]]:
    """The shared answer of each error status: its name, and the component, read off the error
    classes (their descriptions joined, a Retry-After header when they carry one)."""
    by_status: dict[int, list[type[Any]]] = {}
    for cls in error_classes():
        by_status.setdefault(cls.http_status, []).append(cls)
    names: dict[int, str] = {}
    components: dict[str, Schema] = {}
    for status, classes in sorted(by_status.items()):
        (name,) = {c.response for c in classes if "response" in vars(c)}  # one per status
        # The class that names the answer speaks first, then the others of its status.
        said = sorted(
            (c for c in classes if "description" in vars(c)), key=lambda c: c.response != name
        )
        description = "; or ".join(c.description for c in said)
        headers: Schema = dict(REQUEST_ID_HEADER)
        notes = [
            c.retry_after_note
            for c in classes
            if c.retry_after_note and "retry_after_note" in vars(c)
        ]
        if notes:
            headers["Retry-After"] = {
                "description": "; ".join(notes),
                "schema": {"type": "integer", "minimum": 1},
            }
        challenges = [
            c.challenge_note for c in classes if c.challenge_note and "challenge_note" in vars(c)
        ]
        if challenges:
            headers["WWW-Authenticate"] = {
                "description": "; ".join(challenges),
                "schema": {"type": "string"},
            }
        names[status] = name
        components[name] = {
            "description": description,
            "headers": headers,
            "content": {JSON: {"schema": ref("schemas", "Error")}},
        }
    return names, components


def _header(name: str, description: str, *, required: bool, **schema: Any) -> Schema:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "schema": {"type": "string", **schema},
        "description": description,
    }


def _key_header(description: str, *, required: bool) -> Schema:
    return _header(
        "Idempotency-Key",
        description,
        required=required,
        minLength=1,
        maxLength=KEY_MAX,
        pattern=f"^{KEY.pattern}$",
    )


def components(operations: Iterable[Operation] = ()) -> Schema:
    """What the operations of the document share: the Error schema, the error answers, the
    ``Idempotency-Key`` headers (the shared ones and those routes declare), the ``X-Request-Id``
    header, and the bearer scheme."""
    parameters = {
        IDEMPOTENCY_PARAMETER[kind]: _key_header(description, required=kind != "optional")
        for kind, description in IDEMPOTENCY_DESCRIPTIONS.items()
    }
    for op in operations:
        if isinstance(op.key_parameter, KeyParameter):
            parameters[op.key_parameter.name] = _key_header(
                op.key_parameter.description, required=op.idempotency != "optional"
            )
    parameters["RequestId"] = _header(
        "X-Request-Id",
        "your correlation id, echoed; the wallet makes one when absent or not of this form "
        "(never a 400)",
        required=False,
        pattern=IDENTIFIER_PATTERN,
    )
    return {
        "schemas": schemas([(Error, "serialization")]),
        "parameters": parameters,
        "responses": shared_error_responses()[1],
        "headers": {
            "XRequestId": {
                "description": "the request's correlation id (yours when you sent a sane one)",
                "schema": {"type": "string", "pattern": IDENTIFIER_PATTERN},
            }
        },
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key (wk_<role>_...) or the bootstrap admin key.",
            }
        },
    }


def operation(
    op: Operation,
    error_responses: dict[int, str] | None = None,
    *,
    database_down: str = DATABASE_DOWN,
) -> Schema:
    """The OpenAPI operation object of ``op``; ``error_responses`` names the shared response of
    each error status (by default, as :func:`shared_error_responses` names them)."""
    if error_responses is None:
        error_responses = shared_error_responses()[0]
    responses: dict[str, Schema] = {
        str(status): {
            "description": description,
            "headers": REQUEST_ID_HEADER,
            "content": dict.fromkeys(model.types, {"schema": model.schema})
            if isinstance(model, Media)
            else {JSON: {"schema": ref("schemas", model.__name__)}},
        }
        for status, model, description in op.answers
    }
    if op.public:  # no key, no rate limit, no database: only what it declares
        _errors(op, set(op.errors), responses, error_responses, "")
        schema: Schema = {
            "operationId": op.operation_id,
            "tags": [op.tag],
            "summary": op.summary,
            **({"description": op.description} if op.description else {}),
            "security": [],
            "parameters": parameters(op),
            "responses": responses,
        }
        _request_body(op, schema)
        return {**schema, **op.extensions}
    # Every route authenticates (against the database: 503 when it cannot be reached) and counts
    # against its key's rate limit; only routes closed to some role can answer 403.
    statuses = {*op.errors, 401, 429, 503} | ({403} if op.roles != READ else set())
    _errors(op, statuses, responses, error_responses, database_down)
    roles = [role for role in ROLES if role in op.roles]
    description = f"{op.description}\n\nRoles: {', '.join(roles)}.".strip()
    schema = {
        "operationId": op.operation_id,
        "tags": [op.tag],
        "summary": op.summary,
        "description": description,
        "parameters": parameters(op),
        "responses": dict(sorted(responses.items())),
        "x-roles": roles,
    }
    _request_body(op, schema)
    return {**schema, **op.extensions}


def _request_body(op: Operation, schema: Schema) -> None:
    body = op.body or op.raw_body
    if isinstance(body, Media):
        schema["requestBody"] = {
            "required": True,
            "content": {media: {"schema": body.schema} for media in body.types},
        }
    elif body is not None:
        schema["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": ref("schemas", body.__name__)}},
        }


def _errors(
    op: Operation,
    statuses: set[int],
    responses: dict[str, Schema],
    error_responses: dict[int, str],
    database_down: str,
) -> None:
    """The error answers of ``statuses`` (each the shared one, or the operation's own note),
    and the default one; a public route that declares no errors lists only its answers."""
    if not statuses:
        return
    notes = dict(op.error_notes)
    assert notes.keys() <= statuses, (op.operation_id, notes.keys() - statuses)
    for status in statuses:
        if status in notes:
            note = notes[status] + (f"; {database_down}" if status == 503 and database_down else "")
            responses[str(status)] = {
                "description": note,
                "headers": REQUEST_ID_HEADER,
                "content": {JSON: {"schema": ref("schemas", "Error")}},
            }
        else:
            responses[str(status)] = ref("responses", error_responses[status])
    responses["default"] = ref("responses", "Unexpected")
