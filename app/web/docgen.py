"""The OpenAPI operations and component schemas, read off the app's routes.

Like Starlette's ``SchemaGenerator``, this walks the routes; unlike it, it needs no docstring
YAML: every :class:`~app.web.routing.OperationRoute` carries its :class:`Operation`, whose body,
query and answer types are pydantic models, so the schemas are the very declarations that
validate requests and encode answers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from app.fields import IDENTIFIER_PATTERN, IDENTIFIER_RULE
from app.web.auth import READ, ROLES
from app.web.routing import Operation

Schema = dict[str, Any]
JSON = "application/json"
REQUEST_ID_HEADER = {"X-Request-Id": {"$ref": "#/components/headers/XRequestId"}}
IDEMPOTENCY_PARAMETER = {"optional": "ActionIdempotencyKey", "required": "IdempotencyKey"}


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
        if op.body is not None:
            found.append((op.body, "validation"))
        found += [(model, "serialization") for _, model, _ in op.answers]
    return found


def _untitled(schema: Any) -> Any:
    """pydantic titles every property after its name; the document's readers have the name."""
    if isinstance(schema, dict):
        return {
            k: _untitled(v)
            for k, v in schema.items()
            if not (k == "title" and isinstance(v, str) and "properties" not in schema)
        }
    if isinstance(schema, list):
        return [_untitled(v) for v in schema]
    return schema


def _not_null(schema: Schema) -> Schema:
    """A query parameter is absent or a string, never null: ``X | None = None`` shows as X."""
    options = [s for s in schema.get("anyOf", ()) if s != {"type": "null"}]
    if len(options) == 1 and schema.get("default", ...) is None:
        rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
        return {**options[0], **rest}
    return schema


def parameters(op: Operation) -> list[Schema]:
    """Path parameters, then the query model's fields, then the Idempotency-Key header."""
    found: list[Schema] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": IDENTIFIER_PATTERN},
            "description": f"{description} (400 when not {IDENTIFIER_RULE})",
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
    if op.idempotency is not None:
        name = op.key_parameter or IDEMPOTENCY_PARAMETER[op.idempotency]
        found.append(ref("parameters", name))
    return found


def operation(op: Operation, error_responses: dict[int, str], *, database_down: str = "") -> Schema:
    """The OpenAPI operation object of ``op``; ``error_responses`` names the shared response of
    each error status."""
    responses: dict[str, Schema] = {
        str(status): {
            "description": description,
            "headers": REQUEST_ID_HEADER,
            "content": {JSON: {"schema": ref("schemas", model.__name__)}},
        }
        for status, model, description in op.answers
    }
    # Every route authenticates (against the database: 503 when it cannot be reached) and counts
    # against its key's rate limit; only routes closed to some role can answer 403.
    statuses = {*op.errors, 401, 429, 503} | ({403} if op.roles != READ else set())
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
    roles = [role for role in ROLES if role in op.roles]
    description = f"{op.description}\n\nRoles: {', '.join(roles)}.".strip()
    schema: Schema = {
        "operationId": op.operation_id,
        "tags": [op.tag],
        "summary": op.summary,
        "description": description,
        "parameters": parameters(op),
        "responses": dict(sorted(responses.items())),
        "x-roles": roles,
    }
    if op.body is not None:
        schema["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": ref("schemas", op.body.__name__)}},
        }
    return schema
