"""Answers that are not the dialect's JSON: what a proxy, a CDN or a half-closed connection puts in front of an
upstream. Every dialect serves the same ones (``[answer=NAME]`` at submit, ``[poll-answer=NAME]`` on every poll
of the task), so an adapter can be checked against each class of broken answer over real HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from fastapi import Response

#: seconds a ``text-429`` asks the client to wait
TEXT_429_RETRY_AFTER_S: Final = 7

_NGINX_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n"
    "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
_CDN_503 = (
    '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>503 Service Temporarily Unavailable'
    "</title></head><body><h1>Service Temporarily Unavailable</h1><p>The server is temporarily unable to service "
    "your request due to maintenance downtime or capacity problems.</p></body></html>"
)


def _html(status: int, page: str) -> Callable[[], Response]:
    return lambda: Response(page, status_code=status, media_type="text/html")


def _text_429() -> Response:
    return Response(
        "Too Many Requests",
        status_code=429,
        media_type="text/plain",
        headers={"retry-after": str(TEXT_429_RETRY_AFTER_S)},
    )


def _json_200(body: str) -> Callable[[], Response]:
    return lambda: Response(body, status_code=200, media_type="application/json")


#: name → the answer (a fresh ``Response`` per call)
BROKEN_ANSWERS: Final[Mapping[str, Callable[[], Response]]] = {
    "html-502": _html(502, _NGINX_502),
    "html-503": _html(503, _CDN_503),
    "text-429": _text_429,
    "empty-200": _json_200(""),
    "truncated-json": _json_200('{"code": 0, "created": 1764547200, "data": [{"b64_json": "iVBORw0KGgoAAAANSU'),
    "commented-json": _json_200('{\n  // served by the edge cache\n  "code": 0,\n  "created": 1764547200\n}'),
    "wrong-shape": _json_200('{"data": "unexpected", "status": 7}'),
}


def broken_answer(name: str | None) -> Response | None:
    """The broken answer named ``name`` (None: none asked for)."""
    make = BROKEN_ANSWERS.get(name) if name is not None else None
    return make() if make is not None else None
