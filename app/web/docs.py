"""``/docs``: the OpenAPI document rendered for people, by Swagger UI served from this origin.

Swagger UI (vendored in ``docs_ui/``, see its README) renders the descriptions' Markdown and the
schemas, filters by tag, and has "Authorize" (an API key as ``Authorization: Bearer``) and "Try
it out". Its files are package data, so the page works offline and loads nothing from elsewhere;
the Content-Security-Policy below makes sure of that even if someone edits the page carelessly.

Every URL in the page is relative to the page (``openapi.json``, ``docs/assets/...``), so it
works behind a proxy that mounts the app under a path prefix (ASGI ``root_path``). The page has no
inline script or style: the start-up code is our own ``docs_ui/docs.js``.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from app.web.routing import Api, Media

ASSETS_PATH = "/docs/assets"
JAVASCRIPT = "text/javascript; charset=utf-8"
CSS = "text/css; charset=utf-8"

# The files under /docs/assets/, and their media types: nothing else in docs_ui/ is served.
ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": JAVASCRIPT,
    "swagger-ui.css": CSS,
    "favicon-32x32.png": "image/png",
    "docs.js": JAVASCRIPT,
}

# Vendored files never change under a running process; a new Swagger UI comes with a release.
ASSET_CACHE = "public, max-age=86400"

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>API documentation</title>
<link rel="stylesheet" href="docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="docs/assets/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui" data-openapi="openapi.json"></div>
<noscript><p>This page needs JavaScript; the document itself is
<a href="openapi.json">openapi.json</a>.</p></noscript>
<script src="docs/assets/swagger-ui-bundle.js"></script>
<script src="docs/assets/docs.js"></script>
</body>
</html>
"""

# Scripts and styles of this origin only, and requests to this origin only ("Try it out" calls
# the API here). Swagger UI's stylesheet draws its icons from data: URLs.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@cache
def asset(name: str) -> bytes:
    """The bytes of a vendored file, read from the installed package once."""
    return resources.files(__package__).joinpath("docs_ui", name).read_bytes()


api = Api(
    "docs",
    path_params={"name": "a file of the page"},
    path_values={"name": tuple(ASSETS)},  # any other name is 404
)


@api.get(
    "/docs",
    summary="This document, rendered for people (Swagger UI)",
    answers=[(200, Media(("text/html",)), "An HTML page that renders openapi.json, beside it")],
    public=True,
)
async def docs(request: Request) -> Response:
    return HTMLResponse(PAGE, headers={"Content-Security-Policy": CSP})


@api.get(
    ASSETS_PATH + "/{name}",
    summary="A file of the /docs page (Swagger UI's, vendored, and its start-up script)",
    answers=[
        (200, Media(tuple(sorted({media.split(";")[0] for media in ASSETS.values()}))), "The file")
    ],
    errors=(404,),
    public=True,
)
async def docs_asset(request: Request, name: str) -> Response:
    return Response(
        asset(name),
        media_type=ASSETS[name],
        headers={"Cache-Control": ASSET_CACHE, "X-Content-Type-Options": "nosniff"},
    )


routes = api.routes
