"""ByteDance Ark (Seedream) dialect: synchronous ``POST /api/v3/images/generations`` with Bearer auth.

The handler waits the sampled generation time, then answers
``{"model", "created", "data": [{"url" | "b64_json", "size"}], "usage": {"generated_images", "output_tokens",
"total_tokens"}}``. URL results are served by ``GET /_emulator/files/ark/{id}/{index}.{png|jpeg}`` for 24 h,
as Ark's signed links are. Errors use Ark's envelope ``{"error": {"code", "message", "param", "type"}}``
with its real codes; every answer carries ``x-request-id``, and error messages end with the request id.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from emulator.ark.params import ArkImageRequest, ArkParamError, parse_image_request
from emulator.faults import front_door, generation_time
from emulator.knobs import Knobs
from emulator.markers import Markers, parse_markers
from emulator.render import render_image, render_png_cached

PATH = "/api/v3/images/generations"
HANG_S = 3600.0
URL_TTL_S = 24 * 3600
_MAX_URL_RESULTS = 10_000
_PIXELS_PER_TOKEN = 256  # Ark bills output tokens as width x height / 256 (16280 for 1760x2368)
_TYPES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 429: "TooManyRequests",
          500: "InternalServerError"}  # fmt: skip
_EXPIRED = "<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"  # noqa: E501

TEXT_MODERATED = "The request failed because the input text may contain sensitive information."
OUTPUT_MODERATED = "The request failed because the output image may contain sensitive information."
SERVER_ERROR = "The service encountered an unexpected internal error."
RATE_LIMITED = "The request has exceeded the rate limit of the endpoint (RPM). Please try again later."
OVERDUE = "The request failed because your account has an overdue balance."
BAD_KEY = "The API key or AK/SK in the request is missing or invalid."


def _request_id() -> str:
    return f"02{int(time.time() * 1000)}{uuid.uuid4().hex[:24]}"


def ark_error(status: int, code: str, message: str, *, request_id: str, param: str = "") -> JSONResponse:
    body = {"error": {"code": code, "message": f"{message} Request id: {request_id}", "param": param,
                      "type": _TYPES.get(status, "BadRequest")}}  # fmt: skip
    return JSONResponse(body, status_code=status)


@dataclass(frozen=True, slots=True)
class _UrlResult:
    width: int
    height: int
    count: int
    extension: str
    watermark: bool
    created_at: float


def _label(result_id: str, index: int, watermark: bool) -> str:
    return f"ark {result_id} #{index}" + (" AI generated" if watermark else "")


class ArkEmulator:
    """The Ark account: API key, URL results and route handlers."""

    def __init__(self, knobs: Knobs, *, api_key: str, clock: Callable[[], float] = time.time) -> None:
        self.knobs = knobs
        self.api_key = api_key
        self.clock = clock
        self._url_results: OrderedDict[str, _UrlResult] = OrderedDict()

    def reset(self) -> None:
        self._url_results.clear()

    def build_router(self) -> APIRouter:
        router = APIRouter(tags=["ark"])
        router.add_api_route(PATH, self.generate, methods=["POST"])
        return router

    def files_router(self) -> APIRouter:
        router = APIRouter(tags=["ark"])
        router.add_api_route("/_emulator/files/ark/{result_id}/{name}", self.file, methods=["GET"])
        return router

    # -- handlers -----------------------------------------------------------------------------------

    async def generate(self, request: Request) -> Response:
        self.knobs.stats.ark.requests += 1
        request_id = _request_id()
        response = await self._answer(request, request_id)
        response.headers["x-request-id"] = request_id
        if response.status_code >= 300:
            self.knobs.stats.ark.rejected += 1
        return response

    async def file(self, result_id: str, name: str) -> Response:
        found = self._url_results.get(result_id)
        index, _, extension = name.partition(".")
        if found is None or extension != found.extension or index not in map(str, range(found.count)):
            return Response(status_code=404)
        if self.clock() > found.created_at + URL_TTL_S:
            return Response(_EXPIRED, status_code=403, media_type="application/xml")
        label = _label(result_id, int(index), found.watermark)
        if extension == "png":
            return Response(render_png_cached(label, found.width, found.height), media_type="image/png")
        return Response(render_image(label, found.width, found.height, "jpeg"), media_type="image/jpeg")

    # -- internals ----------------------------------------------------------------------------------

    async def _answer(self, request: Request, request_id: str) -> Response:
        if not self._authorized(request):
            return ark_error(401, "AuthenticationError", BAD_KEY, request_id=request_id)
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        if not isinstance(body, dict):
            message = "The request body is not a valid JSON object."
            return ark_error(400, "InvalidParameter", message, request_id=request_id)
        try:
            params = parse_image_request(body)
        except ArkParamError as exc:
            return ark_error(exc.status, exc.code, exc.message, request_id=request_id, param=exc.param)
        markers = parse_markers(params.prompt)
        if (rejection := self._front_door(markers, request_id)) is not None:
            return rejection
        await asyncio.sleep(generation_time(markers, self.knobs.config.ark.latency, self.knobs.rng, hang_s=HANG_S))
        if markers.fail or self.knobs.chance(self.knobs.config.ark.failure_rate):
            return ark_error(500, "InternalServiceError", SERVER_ERROR, request_id=request_id)
        if markers.moderated_async and params.count == 1:
            return ark_error(400, "OutputImageSensitiveContentDetected", OUTPUT_MODERATED, request_id=request_id)
        return JSONResponse(self._images_response(request, params, moderate_last=markers.moderated_async))

    def _authorized(self, request: Request) -> bool:
        scheme, _, key = request.headers.get("authorization", "").strip().partition(" ")
        return scheme.lower() == "bearer" and key.strip() == self.api_key

    def _front_door(self, markers: Markers, request_id: str) -> Response | None:
        """Faults decided before generating: markers first, then the random rates."""
        error = partial(ark_error, request_id=request_id)
        return front_door(
            self.knobs,
            self.knobs.config.ark,
            markers,
            blocked=markers.moderated,
            on_blocked=partial(error, 400, "InputTextSensitiveContentDetected", TEXT_MODERATED),
            on_rate_limited=partial(error, 429, "RateLimitExceeded.EndpointRPMExceeded", RATE_LIMITED),
            on_quota=partial(error, 403, "AccountOverdueError", OVERDUE),
            on_server_error=partial(error, 500, "InternalServiceError", SERVER_ERROR),
        )

    def _images_response(self, request: Request, params: ArkImageRequest, *, moderate_last: bool) -> dict[str, Any]:
        """The generated group; with ``moderate_last`` its last image failed output moderation (the rest is kept)."""
        result_id = uuid.uuid4().hex
        delivered = params.count - 1 if moderate_last else params.count
        extension = "jpeg" if params.output_format == "jpeg" else "png"
        data: list[dict[str, Any]] = []
        for i in range(delivered):
            if params.response_format == "url":
                url = f"{str(request.base_url).rstrip('/')}/_emulator/files/ark/{result_id}/{i}.{extension}"
                data.append({"url": f"{url}?X-Tos-Expires={URL_TTL_S}", "size": params.size})
            else:
                raw = render_image(_label(result_id, i, params.watermark), params.width, params.height,
                                   params.output_format)  # fmt: skip
                data.append({"b64_json": base64.b64encode(raw).decode("ascii"), "size": params.size})
        if moderate_last:
            data.append({"error": {"code": "OutputImageSensitiveContentDetected", "message": OUTPUT_MODERATED}})
        if params.response_format == "url":
            self._remember(result_id, _UrlResult(params.width, params.height, delivered, extension,
                                                 params.watermark, self.clock()))  # fmt: skip
        tokens = delivered * params.width * params.height // _PIXELS_PER_TOKEN
        return {
            "model": params.model,
            "created": int(self.clock()),
            "data": data,
            "usage": {"generated_images": delivered, "output_tokens": tokens, "total_tokens": tokens},
        }

    def _remember(self, result_id: str, result: _UrlResult) -> None:
        self._url_results[result_id] = result
        while len(self._url_results) > _MAX_URL_RESULTS:
            self._url_results.popitem(last=False)
