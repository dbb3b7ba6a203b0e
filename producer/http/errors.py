"""Error answers: every failure described once (``Failure``), rendered in the dialect of the route that failed.

OpenAI-style ``{"error": {"message", "type", "param", "code"}}`` by default; the Kling-task and apimodels
routers render their own envelopes through ``dialect_route``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.errors import ImageJobsError, InvalidRequestError, JobNotFoundError, StorageUnavailableError

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class ApiError(ImageJobsError):
    """An HTTP error answered in the OpenAI error shape."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(status, message, param=param, code=code), status_code=status, headers=headers)


def _validation_param(loc: tuple[Any, ...]) -> str | None:
    parts = [str(part) for part in loc if part not in ("body", "query", "path", "header")]
    return ".".join(parts) if parts else None


@dataclass(frozen=True, slots=True)
class Failure:
    """An error answer before a dialect renders it in its own envelope."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] | None = None


#: renders a ``Failure`` in one API dialect's error envelope
FailureRenderer = Callable[[Failure], JSONResponse]


def describe_failure(exc: Exception) -> Failure:
    """What any exception means to the caller: status, message, parameter, code (unknown ones are logged)."""
    if isinstance(exc, ApiError):  # subclasses may carry headers (e.g. ``Retry-After``)
        return Failure(exc.status, exc.message, exc.param, exc.code, getattr(exc, "headers", None))
    if isinstance(exc, InvalidRequestError):
        return Failure(400, exc.message, exc.param, exc.code)
    if isinstance(exc, JobNotFoundError):
        return Failure(404, f"No task found with id '{exc}'.", "task_id", "task_not_found")
    if isinstance(exc, RequestValidationError):
        return _validation_failure(exc)
    if isinstance(exc, StarletteHTTPException):
        return Failure(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))
    if isinstance(exc, StorageUnavailableError):
        log.warning("storage unavailable: %s", exc.message)
        return Failure(503, "The file store is unavailable; try again.", code="storage_unavailable")
    log.error("unhandled error: %s", type(exc).__name__, exc_info=exc)
    return Failure(500, "The server had an error while processing your request.", code="internal_error")


def _validation_failure(exc: RequestValidationError) -> Failure:
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    param = _validation_param(tuple(first.get("loc", ())))
    if first.get("type") == "json_invalid":
        return Failure(400, "The request body is not valid JSON.", code="invalid_json")
    if first.get("type") == "extra_forbidden":
        message = f"Unrecognized request argument supplied: {param}"
    else:
        message = f"Invalid value for '{param}': {first.get('msg', 'invalid')}." if param else str(first.get("msg"))
    return Failure(400, message, param, "invalid_parameter")


def openai_error(failure: Failure) -> JSONResponse:
    """The OpenAI error envelope (the default dialect)."""
    return error_response(
        failure.status, failure.message, param=failure.param, code=failure.code, headers=failure.headers
    )


def dialect_route(render: FailureRenderer) -> type[APIRoute]:
    """A route class whose every failure (auth, body, validation, look-up, crash) answers in ``render``'s envelope.

    Used as ``APIRouter(route_class=dialect_route(...))`` by the dialects that are not OpenAI's.
    """

    class DialectRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def handle(request: Request) -> Response:
                try:
                    return await handler(request)
                except Exception as exc:
                    return render(describe_failure(exc))

            return handle

    return DialectRoute


def install_error_handlers(app: FastAPI) -> None:
    """OpenAI-style answers for every failure outside the routes of other dialects."""

    async def _handle(_request: Request, exc: Exception) -> JSONResponse:
        return openai_error(describe_failure(exc))

    for kind in (
        ApiError,
        InvalidRequestError,
        JobNotFoundError,
        RequestValidationError,
        StarletteHTTPException,
        Exception,
    ):
        app.add_exception_handler(kind, _handle)
