"""Query parameters that several lists share: a page (:class:`app.web.pagination.PageQuery`), a
time range (:class:`TimeRange`), and a UTC day (:data:`Day`, :func:`day_bounds`)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

from pydantic import BeforeValidator, Field

from app.fields import Rule
from app.web.errors import InvalidRequest
from app.web.pagination import PageQuery

DAY_RULE = "YYYY-MM-DD"
MOMENT_RULE = "an RFC 3339 time with a zone, like 2026-05-18T11:42:18Z"
# Postgres stores UTC, and a statement reaches 30 days back: keep clear of year 1 and 9999.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9998, 12, 31, tzinfo=UTC)


def _moment(raw: object) -> object:
    if not isinstance(raw, str):
        return raw
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(MOMENT_RULE) from None
    if moment.tzinfo is None:
        raise ValueError(MOMENT_RULE)
    if not EARLIEST <= moment <= LATEST:
        raise ValueError("between 1970 and 9998")
    return moment


Moment = Annotated[
    datetime,
    BeforeValidator(_moment),
    Rule(MOMENT_RULE),
    Field(json_schema_extra={"type": "string", "format": "date-time"}),
]


class TimeRange(PageQuery):
    """A page of a list that can be bounded in time."""

    since: Moment | None = Field(
        None, alias="from", description=f"inclusive lower bound: {MOMENT_RULE}"
    )
    until: Moment | None = Field(
        None, alias="to", description=f"exclusive upper bound: {MOMENT_RULE}"
    )


def _day(raw: object) -> object:
    if not isinstance(raw, str):
        return raw
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ValueError(DAY_RULE) from None


Day = Annotated[
    date,
    BeforeValidator(_day),
    Rule(DAY_RULE),
    Field(json_schema_extra={"type": "string", "format": "date"}),
]


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """A UTC calendar day as [start, end)."""
    start = datetime.combine(day, time.min, tzinfo=UTC)
    try:
        return start, start + timedelta(days=1)
    except OverflowError:  # 9999-12-31 has no next day
        raise InvalidRequest("date is out of range", field="date") from None
