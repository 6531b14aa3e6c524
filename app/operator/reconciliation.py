"""Provider reconciliation: a game provider's transaction report for one UTC day against the
ledger (contract section 2; docs/operator.md, "Provider reconciliation").

The provider's side is its report, a CSV file with the header
``transaction_id,round_id,player_id,event,amount,currency``: one line per money event it sent,
with the amount as it sent it. The wallet's side is every posting of that provider (``source``,
``external_id`` the provider's transaction id) made that UTC day. They are matched by
transaction id; a line whose transaction the wallet posted on another day is found there.

The findings are those of every reconciliation (:mod:`app.reconciliation`):
``missing_in_wallet``, ``missing_at_provider`` (marked ``origin: operator`` when the wallet made
the posting itself, an operator's settlement of a round), and a mismatch of the first field that
differs, in the order event, player, round, currency, amount.

The report is parsed strictly here (a 400 names the line and column of each fault), then copied
into a temporary table and matched in SQL (``sql/queries/reconciliation.sql``), so neither side of
a large day is held in the app: only the totals and the first :data:`MAX_LISTED` findings are.
``POST /v1/providers/{code}/reconciliation`` and ``wallet reconcile --provider`` give the same
report; nothing is changed or recorded.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from typing import Annotated, Any, Literal

import asyncpg
from pydantic import ConfigDict, Field

from app.db import Queries
from app.fields import (
    CURRENCY,
    CURRENCY_RULE,
    IDENTIFIER,
    IDENTIFIER_RULE,
    MAX_AMOUNT,
    Count,
    Identifier,
    Int64,
    OneOf,
    Time,
    amount_rule,
)
from app.reconciliation import (
    MISSING_IN_WALLET,
    default_day,
    first_mismatch,
    mismatch,
    missing_at,
    ok_means_none,
    sides_schema,
)
from app.web import http
from app.web.auth import READ
from app.web.errors import FieldError, InvalidRequest, NotFound
from app.web.messages import Answer, Body
from app.web.query import Day, day_bounds
from app.web.routing import Api, Call, Media

HEADER = ("transaction_id", "round_id", "player_id", "event", "amount", "currency")
# The money events, named as the ledger's kinds of the provider's postings.
EVENTS = ("bet", "cancel", "result", "result_change", "promo_win")
# Events outside game rounds: their round_id may be empty.
ROUNDLESS = ("promo_win",)
MISSING_AT_PROVIDER = missing_at("provider")
# Both sides have the transaction, differently: only the first difference, in this order.
COMPARED = ("event", "player", "round", "currency", "amount")
MISMATCHES = tuple(mismatch(what) for what in COMPARED)
DISCREPANCIES = (MISSING_IN_WALLET, MISSING_AT_PROVIDER, *MISMATCHES)
# Postings the wallet made on the provider's behalf carry an external id no provider can send
# (an operator's settlement: '#settle:<bet id>').
OPERATOR_PREFIX = "#"
# Findings listed in the answer; all are counted in `findings`.
MAX_LISTED = 1000
# Faults of a refused report listed in its 400 (the first is also its `field`).
MAX_FAULTS = 20
# A day's matching may take longer than an API statement's usual allowance.
STATEMENT_TIMEOUT = "60s"
CSV_MEDIA = "text/csv"
AMOUNT = re.compile(r"^(0|[1-9][0-9]*)$")

Line = tuple[int, str, str | None, str, str, int, str]


def parse_report(data: bytes) -> list[Line]:
    """The report's lines as ``(line number, transaction_id, round_id, player_id, event,
    amount, currency)``, or :class:`InvalidRequest` listing the first faults.

    Line numbers are the file's (the header is line 1). A leading UTF-8 byte order mark is
    allowed; blank lines are not.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"the report is not UTF-8 (byte {exc.start})", field="body") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    faults: list[FieldError] = []
    lines: list[Line] = []
    first_seen: dict[str, int] = {}
    try:
        header = next(reader, None)
        if header is None or tuple(header) != HEADER:
            bad = FieldError("header", f"line 1: the header must be {','.join(HEADER)}")
            raise InvalidRequest(bad.message, field=bad.field, errors=(bad,))
        for row in reader:
            number = reader.line_num
            found = _line(number, row, first_seen, faults)
            if found is not None:
                lines.append(found)
            if len(faults) >= MAX_FAULTS:
                break
    except csv.Error as exc:
        faults.append(FieldError(f"line[{reader.line_num}]", f"line {reader.line_num}: {exc}"))
    if faults:
        raise InvalidRequest(faults[0].message, field=faults[0].field, errors=tuple(faults))
    return lines


def _line(
    number: int, row: list[str], first_seen: dict[str, int], faults: list[FieldError]
) -> Line | None:
    def fault(column: str | None, message: str) -> None:
        where = f"line[{number}]" + (f".{column}" if column else "")
        faults.append(FieldError(where, f"line {number}: {message}"))

    if len(row) != len(HEADER):
        fault(None, f"{len(HEADER)} fields expected, found {len(row)}")
        return None
    txn, round_id, player_id, event, amount, currency = row
    before = len(faults)
    if not IDENTIFIER.fullmatch(txn):
        fault("transaction_id", f"transaction_id must be {IDENTIFIER_RULE}")
    elif txn in first_seen:
        fault("transaction_id", f"transaction_id {txn} repeats line {first_seen[txn]}")
    else:
        first_seen[txn] = number
    if event not in EVENTS:
        fault("event", f"event must be one of {', '.join(EVENTS)}")
    if round_id or event not in ROUNDLESS:
        if not IDENTIFIER.fullmatch(round_id):
            fault("round_id", f"round_id must be {IDENTIFIER_RULE}" + _roundless_note(event))
    if not IDENTIFIER.fullmatch(player_id):
        fault("player_id", f"player_id must be {IDENTIFIER_RULE}")
    if not AMOUNT.fullmatch(amount) or int(amount) > MAX_AMOUNT:
        fault("amount", f"amount must be {amount_rule(0)}")
    if not CURRENCY.fullmatch(currency):
        fault("currency", f"currency must be {CURRENCY_RULE}")
    if len(faults) > before:
        return None
    return (number, txn, round_id or None, player_id, event, int(amount), currency)


def _roundless_note(event: str) -> str:
    return "" if event in ROUNDLESS else f" (empty only for {', '.join(ROUNDLESS)})"


SideAmount = Annotated[
    Int64 | None,
    Field(description="minor units as that side has it; null when it has no such transaction"),
]
SideText = Annotated[str | None, Field(description="null when this side has no such transaction")]


class ProviderDiscrepancy(Answer):
    """A transaction the provider's report and the ledger do not agree on."""

    model_config = ConfigDict(
        json_schema_extra=sides_schema(
            ["wallet_event", "wallet_player_id", "wallet_amount", "wallet_currency"],
            ["provider_event", "provider_player_id", "provider_amount", "provider_currency"],
            "provider",
        )
    )

    type: Annotated[str, OneOf.of(DISCREPANCIES)] = Field(
        description="missing_in_wallet: a line of the report the wallet never posted (on any "
        "day); missing_at_provider: a posting of that day no line names; event_mismatch, "
        "player_mismatch, round_mismatch, currency_mismatch, amount_mismatch: both sides have "
        "the transaction, differently (only the first difference, in that order)"
    )
    transaction_id: str = Field(description="the provider's transaction id")
    origin: Literal["provider", "operator"] = Field(
        description="operator: a posting the wallet made itself on the provider's behalf (an "
        "operator's settlement of a stale round), which no provider report holds"
    )
    line: Count | None = Field(description="the report's line (the header is 1); null if none")
    wallet_event: SideText
    provider_event: SideText
    wallet_player_id: SideText
    provider_player_id: SideText
    wallet_round_id: str | None = Field(description="null when none (a promo_win) or no posting")
    provider_round_id: str | None = Field(description="null when empty or no line")
    wallet_amount: SideAmount
    provider_amount: SideAmount
    wallet_currency: SideText
    provider_currency: SideText
    wallet_posted_at: Time | None = Field(
        description="when the wallet posted it (another day's posting is found too); null when "
        "it did not"
    )


class ProviderTotals(Answer):
    """Both sides of one currency: the report's lines, and the provider's postings that day."""

    provider_count: Count
    provider_amount: Int64 = Field(description="the sum of the lines' amounts")
    wallet_count: Count
    wallet_amount: Int64 = Field(
        description="the sum of the postings' amounts as sent (a cancel sent without an "
        "amount counts its refund)"
    )


class ProviderReconciliation(Answer):
    """A provider's transaction report for one UTC day matched against the ledger by
    transaction id. See docs/operator.md, "Provider reconciliation"."""

    model_config = ConfigDict(json_schema_extra=ok_means_none)

    provider: Identifier = Field(description="the provider's code, as asked")
    date: dt.date = Field(description="the UTC day reconciled")
    ok: bool = Field(description="true when there is no discrepancy")
    matched: Count = Field(description="lines the ledger has identically")
    wallet_count: Count = Field(description="the provider's postings made that day")
    provider_count: Count = Field(description="lines of the report")
    totals: dict[str, ProviderTotals] = Field(
        description="per currency of either side: counts and amount sums of both"
    )
    findings: dict[str, Count] = Field(
        description="how many discrepancies of each type (every type, 0 included)"
    )
    truncated: bool = Field(
        description=f"true when there are more than {MAX_LISTED} discrepancies: only the first "
        "are listed, `findings` counts them all"
    )
    discrepancies: list[ProviderDiscrepancy] = Field(
        description="the report's lines in file order, then the day's postings no line names, "
        f"in posting order; at most {MAX_LISTED}"
    )


class ProviderReconciliationQuery(Body):
    date: Day | None = Field(
        None,
        description="the UTC day, YYYY-MM-DD; default yesterday (UTC) (400 on `date` otherwise)",
    )


async def known_provider(conn: asyncpg.Connection, queries: Queries, provider: str) -> None:
    """404 for a code no provider has, before its report is read."""
    if await conn.fetchval(*queries.provider_exists(code=provider)) is None:
        raise NotFound(f"no provider {provider!r}")


async def report(
    conn: asyncpg.Connection, queries: Queries, provider: str, day: dt.date, lines: list[Line]
) -> ProviderReconciliation:
    """The reconciliation of ``provider``'s parsed report for ``day`` (``ok`` when nothing
    differs). Runs in one transaction of its own, whose temporary table it leaves behind."""
    start, end = day_bounds(day)
    counts = dict.fromkeys(DISCREPANCIES, 0)
    listed: list[ProviderDiscrepancy] = []
    async with conn.transaction():
        await conn.execute(*queries.reconciliation_timeout(timeout=STATEMENT_TIMEOUT))
        await conn.execute(*queries.create_reconciliation_lines())
        await conn.copy_records_to_table("reconciliation_lines", records=lines)
        await conn.execute(*queries.analyze_reconciliation_lines())
        totals = {
            r["currency"]: ProviderTotals(
                provider_count=r["provider_count"],
                provider_amount=int(r["provider_amount"]),
                wallet_count=r["wallet_count"],
                wallet_amount=int(r["wallet_amount"]),
            )
            for r in await conn.fetch(
                *queries.provider_totals(provider=provider, since=start, until=end)
            )
        }
        async for row in conn.cursor(
            *queries.provider_findings(provider=provider, since=start, until=end)
        ):
            finding = _finding(row)
            counts[finding.type] += 1
            if len(listed) <= MAX_LISTED:
                listed.append(finding)
    unmatched_lines = sum(n for kind, n in counts.items() if kind != MISSING_AT_PROVIDER)
    return ProviderReconciliation(
        provider=provider,
        date=day,
        ok=not listed,
        matched=len(lines) - unmatched_lines,
        wallet_count=sum(t.wallet_count for t in totals.values()),
        provider_count=len(lines),
        totals=totals,
        findings=counts,
        truncated=len(listed) > MAX_LISTED,
        discrepancies=listed[:MAX_LISTED],
    )


def _finding(row: asyncpg.Record) -> ProviderDiscrepancy:
    fields: dict[str, Any] = dict(row)
    if row["line"] is None:
        kind = MISSING_AT_PROVIDER
    elif row["wallet_event"] is None:
        kind = MISSING_IN_WALLET
    else:
        kind = first_mismatch(
            (what, row[f"wallet_{column}"], row[f"provider_{column}"])
            for what, column in zip(
                COMPARED, ("event", "player_id", "round_id", "currency", "amount"), strict=True
            )
        ) or mismatch("event")  # the query returns only rows that differ
    operator = row["wallet_event"] is not None and row["transaction_id"].startswith(OPERATOR_PREFIX)
    return ProviderDiscrepancy(type=kind, origin="operator" if operator else "provider", **fields)


async def reconcile(
    conn: asyncpg.Connection, queries: Queries, provider: str, day: dt.date, data: bytes
) -> dict[str, Any]:
    """:func:`report` of a report's bytes, as JSON (``wallet reconcile --provider`` prints it)."""
    await known_provider(conn, queries, provider)
    lines = parse_report(data)
    return (await report(conn, queries, provider, day, lines)).model_dump(mode="json")


api = Api("reports", path_params={"code": "the provider's code"})


@api.post(
    "/v1/providers/{code}/reconciliation",
    summary="Match a provider's transaction report for one UTC day against the ledger",
    roles=READ,
    query=ProviderReconciliationQuery,
    raw_body=Media(
        (CSV_MEDIA,),
        {
            "type": "string",
            "description": f"CSV with the header `{','.join(HEADER)}`, one line per money "
            f"event ({', '.join(EVENTS)}); round_id empty only for {', '.join(ROUNDLESS)}; "
            "amount in integer minor units as sent",
        },
    ),
    answers=[(200, ProviderReconciliation, "The reconciliation report; `ok` when nothing differs")],
    errors=(400, 404),
    description="Reads the provider's transaction report for the day (the body, `text/csv`, "
    "at most WALLET_RECONCILIATION_MAX_BYTES, default 32 MiB) and matches its lines, by "
    "transaction id, against the provider's postings in the ledger: a line is found whatever "
    "day it was posted, and every posting of that day no line names is reported. Findings: "
    "`missing_in_wallet`, `missing_at_provider` (`origin: operator` for the wallet's own "
    "settlements), `event_mismatch`, `player_mismatch`, `round_mismatch`, "
    "`currency_mismatch`, `amount_mismatch`; totals per currency for both sides. Like "
    "`wallet reconcile --provider` (docs/operator.md); nothing is changed or recorded.\n\n"
    "400 `invalid_request` on a report that is not strict CSV of that header (each fault in "
    "`errors`, `field` like `line[3].amount`), a body over the size limit or not `text/csv` "
    "(`field` `body`), or `date` not a day; 404 when no provider has this code.",
    operation_id="reconcileProvider",
)
async def provider_reconciliation(
    c: Call, code: str, query: ProviderReconciliationQuery
) -> ProviderReconciliation:
    """``POST`` the CSV report, ``?date=YYYY-MM-DD`` (default yesterday, UTC)."""
    await known_provider(c.conn, c.w.queries, code)
    media = c.request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != CSV_MEDIA:
        raise InvalidRequest(f"the body must be {CSV_MEDIA}", field="body")
    limit = c.w.settings.reconciliation_max_bytes
    try:
        data = await http.read_body(c.request, limit)
    except http.BodyTooLarge:
        raise InvalidRequest(
            f"the report exceeds {limit} bytes (WALLET_RECONCILIATION_MAX_BYTES)", field="body"
        ) from None
    lines = parse_report(data)
    return await report(c.conn, c.w.queries, code, default_day(query.date), lines)


routes = api.routes
