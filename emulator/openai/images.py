"""OpenAI Images dialect: synchronous ``POST /v1/images/generations`` (JSON) and ``/v1/images/edits`` (multipart).

The handler waits the sampled generation time (``asyncio.sleep``), then answers an ``ImagesResponse``:
``data[].b64_json`` plus ``usage`` for GPT image models; ``data[].url`` (served by
``GET /_emulator/files/openai/{id}/{index}.png``) or ``b64_json`` for DALL·E (only while the
``openai.dalle_retired`` knob is off; by default DALL·E answers 404 ``model_not_found``, as upstream since
2026-05-12). Every response carries ``x-request-id``; injected 429/5xx faults also carry
``x-should-retry: false``, so the SDK's automatic retries do not multiply them.

Safety blocks: GPT image models answer 400 ``image_generation_user_error`` / ``moderation_blocked`` with
``moderation_details`` (stage ``input`` at submit for ``[moderated]``, ``output`` after the generation
time for ``[moderated-async]``); DALL·E answers 400 ``invalid_request_error`` / ``content_policy_violation``.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from emulator.faults import front_door, generation_time
from emulator.knobs import Knobs
from emulator.markers import Markers, parse_markers
from emulator.openai.edits import check_edit_files, read_edit_form
from emulator.openai.params import (
    DALL_E_2,
    DALL_E_3,
    OpenAIImageRequest,
    OpenAIParamError,
    parse_image_request,
)
from emulator.render import render_image, render_png_cached

HANG_S = 3600.0
_NO_RETRY = {"x-should-retry": "false"}
_MAX_URL_RESULTS = 10_000
# Output tokens per image for 1024x1024 / 1024x1536 / 1536x1024 (gpt-image-1 family).
_OUTPUT_TOKENS = {"low": (272, 408, 400), "medium": (1056, 1584, 1568), "high": (4160, 6240, 6208)}
_SIZE_COLUMN = {"1024x1024": 0, "1024x1536": 1, "1536x1024": 2}
_IMAGE_INPUT_TOKENS = 323  # per input image of an edit (a plausible low-fidelity figure)
_MODERATION_CATEGORIES = ["violence"]  # what a [moderated] prompt is said to contain
_IMAGES_PER_MINUTE = 5  # tier 1 IPM, quoted in rate-limit messages


def openai_error(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code, **extra}}
    return JSONResponse(body, status_code=status, headers=headers)


def _server_error() -> JSONResponse:
    message = "The server had an error while processing your request. Sorry about that!"
    return openai_error(500, message, type_="server_error", headers=_NO_RETRY)


def _quota_exceeded() -> JSONResponse:
    message = "You exceeded your current quota, please check your plan and billing details."
    return openai_error(429, message, type_="insufficient_quota", code="insufficient_quota", headers=_NO_RETRY)


def _rate_limited(model: str) -> JSONResponse:
    message = (
        f"Rate limit reached for {model} in organization org-emulator on images per minute (IPM): "
        f"Limit {_IMAGES_PER_MINUTE}, Used {_IMAGES_PER_MINUTE}, Requested 1. Please try again in 1s. "
        "Visit https://platform.openai.com/account/rate-limits to learn more."
    )
    headers = {
        **_NO_RETRY,
        "retry-after": "1",
        "retry-after-ms": "1000",
        "x-ratelimit-limit-requests": str(_IMAGES_PER_MINUTE),
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1s",
    }
    return openai_error(429, message, type_="requests", code="rate_limit_exceeded", headers=headers)


def _safety_block(params: OpenAIImageRequest, stage: str) -> JSONResponse:
    """GPT image: ``moderation_blocked`` with ``moderation_details``; DALL·E: ``content_policy_violation``."""
    if params.is_gpt:
        message = "Your request was rejected by the safety system. Contact us if you think this is an error."
        details = {"moderation_stage": stage, "categories": _MODERATION_CATEGORIES}
        return openai_error(
            400, message, type_="image_generation_user_error", code="moderation_blocked", moderation_details=details
        )
    subject = "Your prompt" if stage == "input" else "Image descriptions generated from your prompt"
    message = (
        "Your request was rejected as a result of our safety system. "
        f"{subject} may contain text that is not allowed by our safety system."
    )
    return openai_error(400, message, code="content_policy_violation")


def _mask(key: str) -> str:
    return f"{key[:3]}{'*' * 8}{key[-4:]}" if len(key) > 8 else "*" * len(key)


def usage(request: OpenAIImageRequest, input_images: int) -> dict[str, Any]:
    """A realistic ``usage`` block for GPT image models."""
    row = _OUTPUT_TOKENS.get(request.quality, _OUTPUT_TOKENS["high"])
    column = _SIZE_COLUMN.get(request.size)
    per_image = row[column] if column is not None else round(row[0] * request.width * request.height / 1024**2)
    text_tokens = max(1, len(request.prompt) // 4)
    image_tokens = _IMAGE_INPUT_TOKENS * input_images
    output_tokens = per_image * request.n
    return {
        "input_tokens": text_tokens + image_tokens,
        "input_tokens_details": {"image_tokens": image_tokens, "text_tokens": text_tokens},
        "output_tokens": output_tokens,
        "output_tokens_details": {"image_tokens": output_tokens, "text_tokens": 0},
        "total_tokens": text_tokens + image_tokens + output_tokens,
    }


class OpenAIEmulator:
    """The OpenAI account: API key, DALL·E URL results and route handlers."""

    def __init__(self, knobs: Knobs, *, api_key: str) -> None:
        self.knobs = knobs
        self.api_key = api_key
        self._url_results: OrderedDict[str, tuple[int, int, int]] = OrderedDict()  # id -> (w, h, n)

    def reset(self) -> None:
        self._url_results.clear()

    def build_router(self) -> APIRouter:
        router = APIRouter(tags=["openai"])
        router.add_api_route("/v1/images/generations", self.generate, methods=["POST"])
        router.add_api_route("/v1/images/edits", self.edit, methods=["POST"])
        return router

    def files_router(self) -> APIRouter:
        router = APIRouter(tags=["openai"])
        router.add_api_route("/_emulator/files/openai/{result_id}/{index}.png", self.file, methods=["GET"])
        return router

    # -- handlers -----------------------------------------------------------------------------------

    async def generate(self, request: Request) -> Response:
        return await self._handle(request, edit=False)

    async def edit(self, request: Request) -> Response:
        return await self._handle(request, edit=True)

    async def file(self, result_id: str, index: str) -> Response:
        found = self._url_results.get(result_id)
        if found is None or index not in map(str, range(found[2])):
            return openai_error(404, "File not found.")
        png = render_png_cached(f"openai {result_id} #{index}", found[0], found[1])
        return Response(png, media_type="image/png")

    # -- internals ----------------------------------------------------------------------------------

    async def _handle(self, request: Request, *, edit: bool) -> Response:
        self.knobs.stats.openai.requests += 1
        started = time.monotonic()
        result_id = uuid.uuid4().hex
        response = await self._answer(request, result_id, edit=edit)
        response.headers["x-request-id"] = f"req_{result_id}"
        response.headers["openai-processing-ms"] = str(round((time.monotonic() - started) * 1000))
        if response.status_code >= 300:
            self.knobs.stats.openai.rejected += 1
        return response

    async def _answer(self, request: Request, result_id: str, *, edit: bool) -> Response:
        if (denied := self._auth_error(request)) is not None:
            return denied
        input_images = 0
        retired = self.knobs.config.openai.dalle_retired
        try:
            if edit:
                form = await read_edit_form(request)
                params = parse_image_request(form.fields, edit=True, dalle_retired=retired)
                first_image_size = check_edit_files(params, form)
                params = _edit_output_size(params, first_image_size)
                input_images = len(form.images)
            else:
                params = parse_image_request(await self._json_body(request), dalle_retired=retired)
        except OpenAIParamError as exc:
            return openai_error(exc.status, exc.message, param=exc.param, code=exc.code)
        markers = parse_markers(params.prompt)
        if (rejection := self._front_door(markers, params)) is not None:
            return rejection
        await asyncio.sleep(generation_time(markers, self.knobs.config.openai.latency, self.knobs.rng, hang_s=HANG_S))
        if markers.moderated_async:
            return _safety_block(params, "output")
        if markers.fail or self.knobs.chance(self.knobs.config.openai.failure_rate):
            return _server_error()
        body = self._images_response(request, params, result_id, input_images)
        if params.stream and params.is_gpt:
            return StreamingResponse(_events(body, params, edit=edit), media_type="text/event-stream")
        return JSONResponse(body)

    def _auth_error(self, request: Request) -> Response | None:
        scheme, _, key = request.headers.get("authorization", "").strip().partition(" ")
        key = key.strip()
        if scheme.lower() == "bearer" and key == self.api_key:
            return None
        if not key:
            message = "You didn't provide an API key. Use an Authorization header with Bearer auth."
        else:
            message = f"Incorrect API key provided: {_mask(key)}. Find your API key in your account settings."
        return openai_error(401, message, code="invalid_api_key")

    @staticmethod
    async def _json_body(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise OpenAIParamError("We could not parse the JSON body of your request.", None)
        return body

    def _front_door(self, markers: Markers, params: OpenAIImageRequest) -> Response | None:
        """Faults decided before generating: markers first, then the random rates."""
        return front_door(
            self.knobs,
            self.knobs.config.openai,
            markers,
            blocked=markers.moderated,
            on_blocked=lambda: _safety_block(params, "input"),
            on_rate_limited=lambda: _rate_limited(params.model),
            on_quota=_quota_exceeded,
            on_server_error=_server_error,
        )

    def _images_response(
        self, request: Request, params: OpenAIImageRequest, result_id: str, input_images: int
    ) -> dict[str, Any]:
        revised_prompt = params.prompt if params.model == DALL_E_3 else None
        data: list[dict[str, Any]] = []
        if params.response_format == "url":
            self._remember(result_id, params)
            base = str(request.base_url).rstrip("/")
            for i in range(params.n):
                url = f"{base}/_emulator/files/openai/{result_id}/{i}.png"
                data.append({"url": url, "revised_prompt": revised_prompt})
        else:
            for i in range(params.n):
                label = f"openai {result_id} #{i}"
                transparent = params.background == "transparent"
                raw = render_image(label, params.width, params.height, params.output_format, transparent=transparent)
                data.append({"b64_json": base64.b64encode(raw).decode("ascii"), "revised_prompt": revised_prompt})
        body: dict[str, Any] = {"created": int(time.time()), "data": data}
        if params.is_gpt:
            body |= {
                "background": params.background,
                "output_format": params.output_format,
                "quality": params.quality,
                "size": params.size,
                "usage": usage(params, input_images),
            }
        return body

    def _remember(self, result_id: str, params: OpenAIImageRequest) -> None:
        self._url_results[result_id] = (params.width, params.height, params.n)
        while len(self._url_results) > _MAX_URL_RESULTS:
            self._url_results.popitem(last=False)


def _events(body: dict[str, Any], params: OpenAIImageRequest, *, edit: bool) -> Iterator[bytes]:
    """``stream=true``: per image, ``partial_images`` partial events (coarser renders of it), then its completed
    event; usage on each completed event is that image's share of the request's. Shapes:
    https://platform.openai.com/docs/api-reference/images-streaming"""
    kind = "image_edit" if edit else "image_generation"
    common = {key: body[key] for key in ("background", "output_format", "quality", "size")}
    usage_total = body["usage"]
    count = len(body["data"])
    for index, item in enumerate(body["data"]):
        for partial in range(params.partial_images):
            raw = render_image(f"partial {index}.{partial}", params.width, params.height, params.output_format)
            event = {"type": f"{kind}.partial_image", "b64_json": base64.b64encode(raw).decode("ascii"),
                     "created_at": body["created"], "partial_image_index": partial, **common}  # fmt: skip
            yield _sse(event)
        share = {key: _share(value, index, count) for key, value in usage_total.items()}
        event = {"type": f"{kind}.completed", "b64_json": item["b64_json"], "created_at": body["created"],
                 **common, "usage": share}  # fmt: skip
        yield _sse(event)


def _share(value: Any, index: int, count: int) -> Any:
    """Image ``index``'s share of a usage count (the remainder on the last image), recursively for details."""
    if isinstance(value, dict):
        return {key: _share(item, index, count) for key, item in value.items()}
    return value // count + (value % count if index == count - 1 else 0)


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def _edit_output_size(params: OpenAIImageRequest, first_image: tuple[int, int]) -> OpenAIImageRequest:
    """``size=auto`` on a GPT image edit follows the first input's shape (square, landscape or portrait)."""
    if not params.auto_size or params.model == DALL_E_2:
        return params
    width, height = first_image
    size = (1536, 1024) if width > height else (1024, 1536) if height > width else (1024, 1024)
    return dataclasses.replace(params, width=size[0], height=size[1])
