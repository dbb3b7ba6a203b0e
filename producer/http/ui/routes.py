"""Serves the console's page and its static files.

The page holds no data: the browser script fetches it from the JSON API with the caller's key, and puts every
value into the page as text (``textContent``), never as markup. The Content-Security-Policy allows scripts from
this origin only, so even a markup slip could not run an injected handler
(https://developer.mozilla.org/en-US/docs/Web/HTTP/Headers/Content-Security-Policy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from producer.http.errors import ApiError

STATIC_DIR: Final = Path(__file__).parent / "static"
#: the files the console consists of; nothing else under ``/ui/static`` is served
ASSETS: Final = {"app.js": "text/javascript", "app.css": "text/css", "index.html": "text/html"}
#: images may come from the object store's own host (presigned S3 URLs)
POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data: http: https:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS: Final = {
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/ui", response_model=None)
async def console() -> FileResponse:
    """The console's single page (its views are chosen by the URL fragment)."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=HEADERS)


@router.get("/ui/")
async def console_slash() -> RedirectResponse:
    return RedirectResponse("/ui", status_code=307)


@router.get("/ui/static/{name}", response_model=None)
async def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise ApiError(404, f"No console file '{name}'.", param="name", code="not_found")
    return FileResponse(STATIC_DIR / name, media_type=ASSETS[name], headers=HEADERS)
