"""``/docs/errors``: the page of error codes that every error answer's ``docs_url`` points at.

Read off the :class:`~app.web.errors.WalletError` hierarchy, like the OpenAPI document's error
answers: one entry per code, anchored by the code (``#rate_limited``), with its HTTP status and
what each class of that code says of itself. A new error class shows here by being declared.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from functools import cache

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from app.web.errors import ERRORS_PAGE, WalletError, error_classes
from app.web.routing import Api, Media

ROLE = re.compile(r":\w+:(`[^`]+`)")
CODE = re.compile(r"`([^`]+)`")
# The page's own style sheet, inline; the policy admits it by its hash and nothing else: no
# script, no image, no other style.
STYLE = (
    "body{font:15px/1.5 system-ui,sans-serif;color:#101828;max-width:52rem;margin:2rem auto;"
    "padding:0 1rem}h1{font-size:1.6rem}h2{font:600 1.05rem ui-monospace,monospace;margin:0}"
    "section{border:1px solid #eaecf0;border-radius:8px;padding:.8rem 1rem;margin:.8rem 0}"
    "section:target{border-color:#2e90fa;box-shadow:0 0 0 3px #d1e9ff}"
    ".status{color:#667085;margin:.2rem 0}code{background:#f2f4f7;border-radius:4px;"
    "padding:0 4px;font-size:.9em}a{color:#175cd3}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


def _said(cls: type[WalletError]) -> list[str]:
    """What the class says of its answers: its description (less a leading repeat of its code),
    or its docstring's first paragraph when it has none; then the headers it adds."""
    said = []
    if "description" in vars(cls):
        text = cls.description
        if text.startswith(cls.code):
            text = text[len(cls.code) :].lstrip(": ")
        if text:
            said.append(text)
    elif cls.__doc__ and "__doc__" in vars(cls):
        said.append(" ".join(cls.__doc__.split("\n\n")[0].split()))
    if "retry_after_note" in vars(cls) and cls.retry_after_note:
        said.append(f"`Retry-After`: {cls.retry_after_note}")
    if "challenge_note" in vars(cls) and cls.challenge_note:
        said.append(f"`WWW-Authenticate`: {cls.challenge_note}")
    return said


def _markup(text: str) -> str:
    """Docstring text as HTML: escaped, with its `code` and ``code`` spans (and Sphinx roles)
    as <code>."""
    text = ROLE.sub(r"\1", text).replace("``", "`")
    return CODE.sub(r"<code>\1</code>", html.escape(text, quote=False))


@cache
def page() -> str:
    """The HTML page; the classes do not change under a running process."""
    entries: dict[str, tuple[set[int], list[str]]] = {}
    for cls in error_classes():
        statuses, said = entries.setdefault(cls.code, (set(), []))
        statuses.add(cls.http_status)
        said += _said(cls)
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8"><title>Error codes</title>',
        f"<style>{STYLE}</style></head><body>",
        "<h1>Error codes</h1>",
        '<p>Every error answer of the operator and payments APIs is <code>{"error": {code, '
        "message, http_status, docs_url, request_id}}</code>; <code>docs_url</code> points at "
        'its code below. The API itself is documented at <a href="../docs">/docs</a>.</p>',
    ]
    for code in sorted(entries):
        statuses, said = entries[code]
        status = ", ".join(str(s) for s in sorted(statuses))
        parts.append(f'<section id="{html.escape(code)}"><h2>{html.escape(code)}</h2>')
        parts.append(f'<p class="status">HTTP {status}</p>')
        if len(said) == 1:
            parts.append(f"<p>{_markup(said[0])}</p>")
        else:
            # One code, several cases (classes): one item each, not one run-on paragraph.
            parts.append("<ul>" + "".join(f"<li>{_markup(text)}</li>" for text in said) + "</ul>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


api = Api("docs")


@api.get(
    ERRORS_PAGE,
    summary="The error codes: what each means (every error's docs_url points here)",
    answers=[(200, Media(("text/html",)), "An HTML page, an entry per code anchored by it")],
    public=True,
)
async def error_codes(request: Request) -> Response:
    return HTMLResponse(page(), headers={"Content-Security-Policy": CSP})


routes = api.routes
