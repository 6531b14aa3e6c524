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
from types import UnionType
from typing import Annotated, Any, Generic, Literal, TypeVar, Union, get_args, get_origin

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
    if error["type"] == "extra_forbidden":  # a closed message (extra="forbid")
        known = _known(model, error["loc"][:-1])
        return f"{name} is unknown" + (f": expected one of {', '.join(known)}" if known else "")
    if error["type"] == "value_error":
        return f"{name} must be {error.get('ctx', {}).get('error', error['msg'])}"
    if rules:
        return f"{name} must be {rules[0]}"
    return f"{name}: {error['msg']}"


def _rules(model: type[BaseModel], error: ErrorDetails) -> list[str]:
    """The rules declared on the field at ``error``'s location, following nested messages."""
    found = _field_at(model, error["loc"])
    return [] if found is None else [*_rules_of(found[1]), *_annotation_rules(found[0])]


def _field_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[Any, list[Any]] | None:
    """The annotation and metadata of the field at ``loc`` (``()``: the message itself)."""
    annotation: Any = model
    metadata: list[Any] = []
    for part in loc:
        fields = _message_type(annotation)
        if fields is None:
            return None
        for key, field in fields.model_fields.items():
            if part in (key, field.alias):
                annotation, metadata = field.annotation, list(field.metadata)
                break
        else:
            return None
    return annotation, metadata


def _known(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The field names of the message at ``loc``, as callers write them."""
    found = _field_at(model, loc)
    fields = None if found is None else _message_type(found[0])
    return [] if fields is None else [f.alias or k for k, f in fields.model_fields.items()]


def _message_type(annotation: Any) -> type[BaseModel] | None:
    """The message an annotation holds (``X`` or ``X | None``), if any."""
    for option in (annotation, *get_args(annotation)):
        if isinstance(option, type) and issubclass(option, BaseModel):
            return option
    return None


def _rules_of(metadata: list[Any]) -> list[str]:
    return [m.text for m in metadata if isinstance(m, Rule)]  # a OneOf is a Rule too


def _annotation_rules(annotation: Any) -> list[str]:
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *metadata = get_args(annotation)
        return [*_rules_of(metadata), *_annotation_rules(inner)]
    if origin is Literal:
        return ["one of " + ", ".join(str(v) for v in get_args(annotation))]
    if origin in (Union, UnionType):
        return [r for option in get_args(annotation) for r in _annotation_rules(option)]
    return []


def reply(answer: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """The JSON response for ``answer``, its fields named as the document names them (an alias
    like ``from`` where the attribute cannot be)."""
    body = orjson.dumps(answer.model_dump(mode="json", by_alias=True))
    return Response(body, status, headers, media_type="application/json")
