"""The hosted payment page a depositor approves or declines on, and the UPI deep link.

Plain HTML forms, no JavaScript: the page must work from ``curl`` and from a test's HTTP client.
"""

from __future__ import annotations

from html import escape
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from app.dev.sandbox_psp.model import Payment
from app.money import major_units
from app.payments.sandbox_api import FAILED, HELD, REQUIRES_ACTION, SUCCEEDED

UPI_PAYEE = "sandbox@psp"
UPI_PAYEE_NAME = "Sandbox PSP"

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem}"
    "dl{display:grid;grid-template-columns:auto 1fr;gap:.3rem 1rem}dt{color:#555}"
    "form{display:inline-block;margin-right:.5rem}button{font-size:1rem;padding:.5rem 1.2rem}"
    ".sandbox{color:#a60;font-size:.85rem}"
)

_RESULTS = {
    SUCCEEDED: "Payment approved.",
    FAILED: "Payment declined.",
    HELD: "Payment held for review (KYC). The merchant will be told the outcome.",
    REQUIRES_ACTION: "Waiting for your approval.",
}


def upi_deep_link(payment: Payment) -> str:
    """A ``upi://pay`` intent as a UPI app would open it (NPCI's parameter names)."""
    params = {
        "pa": UPI_PAYEE,
        "pn": UPI_PAYEE_NAME,
        "tr": payment.psp_payment_id,
        "tn": payment.reference,
        "am": major_units(payment.amount, payment.currency),
        "cu": payment.currency,
    }
    return "upi://pay?" + urlencode(params, safe="@", quote_via=quote)


def return_location(return_url: str, payment: Payment) -> str:
    """``return_url`` with ``psp_payment_id`` and ``status`` added to its query, so the merchant's
    return page knows which payment came back and how it ended (to show, not to trust)."""
    parts = urlsplit(return_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [("psp_payment_id", payment.psp_payment_id), ("status", payment.status)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        f'<p class="sandbox">Sandbox PSP: no real money moves.</p>\n{body}\n</body></html>\n'
    )


def _summary(payment: Payment) -> str:
    amount = f"{major_units(payment.amount, payment.currency)} {payment.currency}"
    return (
        "<dl>"
        f'<dt>Amount</dt><dd id="amount">{escape(amount)}</dd>'
        f'<dt>Reference</dt><dd id="reference">{escape(payment.reference)}</dd>'
        f"<dt>Method</dt><dd>{escape(payment.method)}</dd>"
        f"<dt>Payment</dt><dd>{escape(payment.psp_payment_id)}</dd>"
        "</dl>"
    )


def checkout_page(payment: Payment) -> str:
    """The page a depositor lands on from ``redirect_url``; once decided, the result instead."""
    if payment.status != REQUIRES_ACTION:
        return result_page(payment)
    # Relative actions (the page is /pay/{id}) keep working behind a proxy that adds a prefix.
    pid = escape(payment.psp_payment_id)
    forms = (
        f'<form method="post" action="{pid}/approve">'
        '<button type="submit" name="outcome" value="approve">Approve</button></form>'
        f'<form method="post" action="{pid}/decline">'
        '<button type="submit" name="outcome" value="decline">Decline</button></form>'
    )
    return _page("Approve payment", f"<h1>Approve payment</h1>\n{_summary(payment)}\n{forms}")


def result_page(payment: Payment) -> str:
    result = _RESULTS.get(payment.status, f"Payment {payment.status}.")
    return _page(
        "Payment " + payment.status,
        f'<h1 id="result" data-status="{escape(payment.status)}">{escape(result)}</h1>\n'
        + _summary(payment),
    )


def missing_page() -> str:
    return _page("No such payment", "<h1>No such payment</h1>")
