"""What finance and on-call read: the audit log, the ledger check, the daily report, and the
reconciliations (a PSP's settlement report, a provider's CSV day report)."""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from app.admin import auth
from app.admin.pages import Visit, operation_of, page, refusal, screen, visit_of
from app.audit import ACTIONS
from app.fields import IDENTIFIER, IDENTIFIER_RULE
from app.ledger.service import CHECKS
from app.operator import reconciliation as provider_reconciliation
from app.operator import reports
from app.payments import reconciliation
from app.reconciliation import default_day
from app.state import wallet
from app.web import http, messages
from app.web.errors import InvalidRequest, NotFound

AUDIT = operation_of(reports.api.routes, reports.list_audit)
LEDGER = operation_of(reports.api.routes, reports.check_ledger)
DAILY = operation_of(reports.api.routes, reports.daily_report_route)
PSP = operation_of(reconciliation.routes, reconciliation.reconciliation)
PROVIDER = operation_of(
    provider_reconciliation.routes, provider_reconciliation.provider_reconciliation
)


@screen(AUDIT, "audit.html")
async def audit(v: Visit) -> Response:
    page = await reports.list_audit(v.call, v.query(reports.AuditQuery))
    return v.render(
        "audit.html", rows=page.data, next_link=v.next_page(page.next_cursor), actions=ACTIONS
    )


@screen(LEDGER, "ledger.html")
async def ledger(v: Visit) -> Response:
    return v.render("ledger.html", check=await reports.check_ledger(v.call), checks=CHECKS)


@screen(DAILY, "daily.html")
async def daily(v: Visit) -> Response:
    report = await reports.daily_report_route(v.call, v.query(reports.DailyQuery))
    return v.render("daily.html", report=report)


@screen(PSP, "reconciliation.html")
async def psp(v: Visit) -> Response:
    names = [p.name for p in v.w.payments.psps]
    if "psp" not in v.form():
        return v.render("reconciliation.html", psps=names, report=None)
    report = await reconciliation.reconciliation(
        v.call, v.query(reconciliation.ReconciliationQuery)
    )
    return v.render("reconciliation.html", psps=names, report=report)


@screen(PROVIDER, "provider_reconciliation.html")
async def provider(v: Visit) -> Response:
    """The upload form; :func:`provider_upload` reconciles the report it sends."""
    return v.render("provider_reconciliation.html", report=None)


# Room for the form's other fields and multipart framing around the file itself.
FORM_OVERHEAD = 64 * 1024


async def provider_upload(request: Request) -> Response:
    """A provider's CSV day report, uploaded, matched as the API's route matches it (the same
    parser and query; the API takes the file as its body, the form as a part)."""
    w = wallet(request)
    limit = w.settings.reconciliation_max_bytes
    acquire_timeout = w.settings.db_acquire_timeout_ms / 1000
    # Refused before a byte of the file is read when it cannot be this site's form or this
    # visitor's session; then the file is read whole with no pooled connection held (a slow
    # upload holds its socket only), and over the limit it is not read further.
    if not auth.same_origin(request):
        return page(request, "signed_out.html", 403, error="CSRF check failed.")
    async with w.pool.acquire(timeout=acquire_timeout) as conn:
        if await visit_of(request, conn, w) is None:
            return page(request, "signed_out.html", 403)
    whole = await http.read_body_first(request, limit + FORM_OVERHEAD)
    async with w.pool.acquire(timeout=acquire_timeout) as conn:
        visit = await visit_of(request, conn, w)
        if visit is None:
            return page(request, "signed_out.html", 403)
        if not whole:
            error = f"the report exceeds {limit} bytes"
            return visit.render("provider_reconciliation.html", 413, error=error, report=None)
        async with request.form(max_files=1, max_fields=5) as form:
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            upload = form.get("report")
            refused = refusal(visit, PROVIDER, fields.get(auth.CSRF_FIELD))
            if refused is not None:
                return refused
            try:
                code = fields.get("provider", "")
                if IDENTIFIER.fullmatch(code) is None:
                    raise InvalidRequest(f"provider must be {IDENTIFIER_RULE}", field="provider")
                query = messages.parse(
                    provider_reconciliation.ProviderReconciliationQuery,
                    {"date": fields["date"]} if fields.get("date") else {},
                )
                if not isinstance(upload, UploadFile):
                    raise InvalidRequest("choose the report's CSV file", field="report")
                data = await upload.read(limit + 1)
                if len(data) > limit:
                    raise InvalidRequest(f"the report exceeds {limit} bytes", field="report")
                await provider_reconciliation.known_provider(conn, w.queries, code)
                report = await provider_reconciliation.report(
                    conn,
                    w.queries,
                    code,
                    default_day(query.date),
                    provider_reconciliation.parse_report(data),
                )
            except (InvalidRequest, NotFound) as exc:
                return visit.render(
                    "provider_reconciliation.html", exc.http_status, error=exc.message, report=None
                )
        return visit.render("provider_reconciliation.html", report=report)
