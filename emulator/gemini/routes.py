"""Gemini dialect: synchronous ``POST /v1beta/models/{model}:generateContent`` for the image models.

Auth is ``x-goog-api-key`` (or ``?key=``). After the sampled generation time the answer is a
``GenerateContentResponse``: one candidate whose parts hold the image as base64 ``inlineData`` (Gemini 3
models first emit ``thought: true`` parts, an interim image among them, and sign the final image with a
``thoughtSignature``), plus ``usageMetadata``, ``modelVersion`` and ``responseId``. Blocks arrive on HTTP
200: ``finishReason: IMAGE_SAFETY`` (output filtered) or ``promptFeedback.blockReason`` (prompt refused).
Errors use Google's envelope ``{"error": {"code", "message", "status", "details"}}``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from emulator.faults import front_door, generation_time
from emulator.gemini.params import GeminiImageRequest, GeminiParamError, parse_generate_request
from emulator.knobs import Knobs
from emulator.markers import Markers, parse_markers
from emulator.render import ImageFormat, render_image

HANG_S = 3600.0
GENERATE_PATH = "/v1beta/models/{model}:generateContent"
SERVICE = "generativelanguage.googleapis.com"
_TYPE = "type.googleapis.com/google.rpc."
_RATE_LIMIT_DOCS = "https://ai.google.dev/gemini-api/docs/rate-limits"
_QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more information on this "
    f"error, head to: {_RATE_LIMIT_DOCS}. To monitor your current usage, head to: https://ai.dev/rate-limit."
)
_IMAGE_SAFETY_MESSAGE = (
    "Unable to show the generated image. The generated image was filtered out because it violated Google's "
    "Generative AI Prohibited Use policy. You will not be charged for blocked images. Try rephrasing the prompt. "
    "If you think this was an error, send feedback."
)
_THOUGHT_TEXT = "**Composing the scene**\n\nI am laying out the subject, the light and the framing the prompt asks for."


def gemini_error(code: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=code)


def _param_error(exc: GeminiParamError) -> JSONResponse:
    details = None
    if exc.status == 400 and exc.field is not None:
        violation = {"field": exc.field, "description": exc.message}
        details = [{"@type": f"{_TYPE}BadRequest", "fieldViolations": [violation]}]
    return gemini_error(exc.status, exc.status_name, exc.message, details)


def _quota_exhausted(model_id: str, *, per: str, limit: int, retry_s: int) -> JSONResponse:
    """429 ``RESOURCE_EXHAUSTED``: a ``QuotaFailure`` naming the exhausted quota, and ``RetryInfo``."""
    metric = f"{SERVICE}/generate_content_paid_tier_requests"
    violation = {
        "quotaMetric": metric,
        "quotaId": f"GenerateRequestsPer{per}PerProjectPerModel",
        "quotaDimensions": {"location": "global", "model": model_id},
        "quotaValue": str(limit),
    }
    message = (
        f"{_QUOTA_MESSAGE} \n* Quota exceeded for metric: {metric}, limit: {limit}, model: {model_id}\n"
        f"Please retry in {retry_s}s."
    )
    details: list[dict[str, Any]] = [
        {
            "@type": f"{_TYPE}Help",
            "links": [{"description": "Learn more about Gemini API quotas", "url": _RATE_LIMIT_DOCS}],
        },
        {"@type": f"{_TYPE}QuotaFailure", "violations": [violation]},
        {"@type": f"{_TYPE}RetryInfo", "retryDelay": f"{retry_s}s"},
    ]
    return gemini_error(429, "RESOURCE_EXHAUSTED", message, details)


def _rate_limited(model_id: str) -> JSONResponse:
    return _quota_exhausted(model_id, per="Minute", limit=20, retry_s=1)


def _server_error() -> JSONResponse:
    message = (
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting"
    )
    return gemini_error(500, "INTERNAL", message)


def _overloaded() -> JSONResponse:
    return gemini_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _response_id() -> str:
    return secrets.token_urlsafe(16)[:22]


class GeminiEmulator:
    """The Gemini API project: one API key and the route handler."""

    def __init__(self, knobs: Knobs, *, api_key: str) -> None:
        self.knobs = knobs
        self.api_key = api_key

    def reset(self) -> None:
        """Nothing is kept between requests (results are inline)."""

    def build_router(self) -> APIRouter:
        router = APIRouter(tags=["gemini"])
        router.add_api_route(GENERATE_PATH, self.generate, methods=["POST"])
        return router

    # -- handler ------------------------------------------------------------------------------------

    async def generate(self, model: str, request: Request) -> Response:
        stats = self.knobs.stats.gemini
        stats.requests += 1
        started = time.monotonic()
        response = await self._answer(model, request)
        response.headers["server-timing"] = f"gfet4t7; dur={round((time.monotonic() - started) * 1000)}"
        if response.status_code >= 300:
            stats.rejected += 1
        return response

    # -- internals ----------------------------------------------------------------------------------

    async def _answer(self, model_id: str, request: Request) -> Response:
        if (denied := self._auth_error(request)) is not None:
            return denied
        try:
            try:
                body = json.loads(await request.body())
            except ValueError:
                raise GeminiParamError("Invalid JSON payload received. Unexpected token.") from None
            params = parse_generate_request(model_id, body)
        except GeminiParamError as exc:
            return _param_error(exc)
        markers = parse_markers(params.prompt)
        if (rejection := self._front_door(params, markers)) is not None:
            return rejection
        await asyncio.sleep(generation_time(markers, self.knobs.config.gemini.latency, self.knobs.rng, hang_s=HANG_S))
        if markers.fail or self.knobs.chance(self.knobs.config.gemini.failure_rate):
            return _overloaded()
        if markers.moderated:
            return JSONResponse(self._image_safety(params))
        return JSONResponse(self._response(params))

    def _auth_error(self, request: Request) -> Response | None:
        key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
        if key == self.api_key:
            return None
        if not key:
            message = (
                "Method doesn't allow unregistered callers (callers without established identity). "
                "Please use API Key or other form of API consumer identity to call this API."
            )
            return gemini_error(403, "PERMISSION_DENIED", message)
        message = "API key not valid. Please pass a valid API key."
        details: list[dict[str, Any]] = [
            {
                "@type": f"{_TYPE}ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": SERVICE},
            },
            {"@type": f"{_TYPE}LocalizedMessage", "locale": "en-US", "message": message},
        ]
        return gemini_error(400, "INVALID_ARGUMENT", message, details)

    def _front_door(self, params: GeminiImageRequest, markers: Markers) -> Response | None:
        """Faults decided before generating: markers first, then the random rates."""
        return front_door(
            self.knobs,
            self.knobs.config.gemini,
            markers,
            blocked=markers.moderated_async,
            on_blocked=lambda: JSONResponse(self._prompt_blocked(params)),
            on_rate_limited=lambda: _rate_limited(params.model_id),
            on_quota=lambda: _quota_exhausted(params.model_id, per="Day", limit=250, retry_s=3600),
            on_server_error=_server_error,
        )

    def _usage(self, params: GeminiImageRequest, *, images_out: int) -> dict[str, Any]:
        text_tokens = max(1, len(params.prompt) // 4)
        image_tokens = params.model.input_image_tokens * len(params.images)
        out_tokens = params.model.output_tokens.get(params.image_size, 1290) * images_out
        thought_tokens = 180 if params.model.thinks and images_out else 0
        prompt_details = [{"modality": "TEXT", "tokenCount": text_tokens}]
        if image_tokens:
            prompt_details.append({"modality": "IMAGE", "tokenCount": image_tokens})
        usage: dict[str, Any] = {
            "promptTokenCount": text_tokens + image_tokens,
            "candidatesTokenCount": out_tokens,
            "totalTokenCount": text_tokens + image_tokens + out_tokens + thought_tokens,
            "promptTokensDetails": prompt_details,
        }
        if out_tokens:
            usage["candidatesTokensDetails"] = [{"modality": "IMAGE", "tokenCount": out_tokens}]
        if thought_tokens:
            usage["thoughtsTokenCount"] = thought_tokens
        return usage

    def _envelope(self, params: GeminiImageRequest, response_id: str, **fields: Any) -> dict[str, Any]:
        return {**fields, "modelVersion": params.model_id, "responseId": response_id}

    def _response(self, params: GeminiImageRequest) -> dict[str, Any]:
        response_id = _response_id()
        width, height = params.size
        mime_type = params.model.output_mime_type
        fmt: ImageFormat = "jpeg" if mime_type == "image/jpeg" else "png"
        parts: list[dict[str, Any]] = []
        if params.model.thinks:
            interim = render_image(f"gemini {response_id} draft", max(16, width // 4), max(16, height // 4), fmt)
            parts.append({"text": _THOUGHT_TEXT, "thought": True})
            parts.append({"inlineData": {"mimeType": mime_type, "data": _b64(interim)}, "thought": True})
        if "IMAGE" not in params.modalities:
            parts.append({"text": "I can only describe the image here: the response modalities exclude IMAGE."})
            candidate = {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
            return self._envelope(
                params, response_id, candidates=[candidate], usageMetadata=self._usage(params, images_out=0)
            )
        if "TEXT" in params.modalities and not params.model.thinks:
            parts.append({"text": "Here is the image you asked for."})
        final: dict[str, Any] = {
            "inlineData": {
                "mimeType": mime_type,
                "data": _b64(render_image(f"gemini {response_id}", width, height, fmt)),
            }
        }
        if params.model.thinks:
            final["thoughtSignature"] = _b64(secrets.token_bytes(48))
        parts.append(final)
        candidate = {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
        return self._envelope(
            params, response_id, candidates=[candidate], usageMetadata=self._usage(params, images_out=1)
        )

    def _image_safety(self, params: GeminiImageRequest) -> dict[str, Any]:
        candidate = {"finishReason": "IMAGE_SAFETY", "finishMessage": _IMAGE_SAFETY_MESSAGE, "index": 0}
        return self._envelope(
            params, _response_id(), candidates=[candidate], usageMetadata=self._usage(params, images_out=0)
        )

    def _prompt_blocked(self, params: GeminiImageRequest) -> dict[str, Any]:
        feedback = {"blockReason": "PROHIBITED_CONTENT"}
        return self._envelope(
            params, _response_id(), promptFeedback=feedback, usageMetadata=self._usage(params, images_out=0)
        )
