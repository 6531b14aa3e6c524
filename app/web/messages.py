"""Typed request and answer messages of the JSON APIs, and how they cross the wire.

A message is declared once, as a pydantic model built from :mod:`app.fields` types. From that one
declaration come the validation of what a caller sends (:func:`parse`, every bad field named),
the JSON of what the wallet answers (:func:`reply`), and the OpenAPI schemas
(:mod:`app.web.docgen`).

- :class:`Body` is what a caller sends: strict types (a JSON ``"5"`` is not an integer, ``true``
  is not an amount), unknown fields ignored.
- :class:`Answer` is what the wallet sends: closed (``additionalProperties: false`` in the
  document), so a field added to an answer must be declared here first.

The JSON itself is read by :func:`app.web.http.read_json` first, whose strict parser refuses what
pydantic would let through: duplicate keys (it keeps the last), deep nesting and U+0000.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails
from starlette.responses import Response

from app.fields import Rule
from app.web.errors import FieldError, InvalidRequest


class Body(BaseModel):
    """A request body (or a set of query parameters) as the caller sends it."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")


class Answer(BaseModel):
    """An answer of the API; closed, so that what leaves is what the document says."""

    model_config = ConfigDict(extra="forbid", frozen=True)


ItemT = TypeVar("ItemT", bound=Answer)


class Page(Answer, Generic[ItemT]):
    """A keyset-paged list (:mod:`app.web.pagination`)."""

    data: list[ItemT]
    next_cursor: str | None = Field(
        description="pass back as `cursor` for the next page; null on the last page"
    )


MessageT = TypeVar("MessageT", bound=BaseModel)


def parse(
    model: type[MessageT], data: Mapping[str, Any], *, strict: bool | None = None
) -> MessageT:
    """``data`` as a ``model``, or :class:`InvalidRequest` naming every bad field (the first one
    in ``field``, all of them in ``errors``)."""
    try:
        return model.model_validate(data, strict=strict)
    except ValidationError as exc:
        raise invalid(model, exc.errors(include_url=False, include_input=False)) from None


def invalid(model: type[BaseModel], errors: list[ErrorDetails]) -> InvalidRequest:
    """One 400 for every error pydantic found, each with the field's rule from its declaration."""
    found = [FieldError(_dotted(e["loc"]), _message(model, e)) for e in errors]
    first = found[0]
    return InvalidRequest(first.message, field=first.field, errors=tuple(found))


def _dotted(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "body"


def _message(model: type[BaseModel], error: ErrorDetails) -> str:
    """``name must be <rule>``: the rule a validator of ours raised (``ValueError("...")``), else
    the :class:`~app.fields.Rule` of the field's type; pydantic's own words otherwise."""
    name = _dotted(error["loc"])
    rules = _rules(model, error)
    if error["type"] == "missing":
        return f"{name} is required" + (f": {rules[0]}" if rules else "")
    if error["type"] == "value_error":
        return f"{name} must be {error.get('ctx', {}).get('error', error['msg'])}"
    if rules:
        return f"{name} must be {rules[0]}"
    return f"{name}: {error['msg']}"


def _rules(model: type[BaseModel], error: ErrorDetails) -> list[str]:
    if len(error["loc"]) != 1:
        return []
    name = str(error["loc"][0])
    for key, field in model.model_fields.items():
        if name in (key, field.alias):
            return [m.text for m in field.metadata if isinstance(m, Rule)]
    return []


def reply(answer: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """The JSON response for ``answer``."""
    return Response(
        orjson.dumps(answer.model_dump(mode="json")), status, headers, media_type="application/json"
    )
