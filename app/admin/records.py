"""What finance and on-call read: the audit log, the ledger check, the daily report, and the
reconciliations (a PSP's settlement report, a provider's CSV day report)."""

from __future__ import annotations

from starlette.responses import Response

from app.admin.pages import Visit, operation_of, screen
from app.audit import ACTIONS
from app.operator import reports
from app.payments import reconciliation

AUDIT = operation_of(reports.api.routes, reports.list_audit)
LEDGER = operation_of(reports.api.routes, reports.check_ledger)
DAILY = operation_of(reports.api.routes, reports.daily_report_route)
PSP = operation_of(reconciliation.routes, reconciliation.reconciliation)


@screen(AUDIT, "audit.html")
async def audit(v: Visit) -> Response:
    page = await reports.list_audit(v.call, v.query(reports.AuditQuery))
    return v.render(
        "audit.html", rows=page.data, next_link=v.next_page(page.next_cursor), actions=ACTIONS
    )


@screen(LEDGER, "ledger.html")
async def ledger(v: Visit) -> Response:
    return v.render("ledger.html", check=await reports.check_ledger(v.call))


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
