"""Google Gemini native image generation (the nano-banana family): ``POST /v1beta/models/{model}:generateContent``.

Synchronous, ``x-goog-api-key``. The upstream makes one image per call (``candidateCount`` must be 1), so
``n`` images are ``n`` calls: one first (its error is raised: auth, quota, refused parameters or a blocked
prompt would fail every call), then the other ``n - 1`` concurrently (so ``n`` calls fit in one task's time
limit). When some of those fail, the images that were made are delivered: the caller pays per delivered
image, and repeating the whole job would pay the upstream twice for the images already made. Input images go
inline (``inlineData``, base64) after the prompt text. The answer's image is the last ``inlineData`` part
that is not a ``thought``; blocks arrive on HTTP 200 (``promptFeedback.blockReason``, ``finishReason``).

Catalog parameters arrive under these names: ``prompt``; ``size`` (``WxH``, mapped to the nearest aspect ratio
the model supports); ``aspectRatio`` and ``imageSize`` (sent as they are; ``aspectRatio`` wins over ``size``);
``image``, ``image_url``, ``image_urls``, ``images`` (input images, in that order).
"""

from __future__ import annotations

import logging
import math
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from shared.config import GeminiSettings
from shared.errors import (
    ContentPolicyError,
    PermanentProviderError,
    ProviderAuthError,
    ProviderError,
    QuotaExceededError,
    TransientProviderError,
    UnexpectedResponseError,
)
from worker.inputs import ImageLoader
from worker.providers._http import ErrorReading, Phase, call, error_body, make_client, reason_or_body
from worker.providers._images import decode_base64
from worker.providers.base import Completed, JobSpec, ProviderFacts, ResultImage, Submission

NAME = "gemini"


def _one_call_per_image(spec: JobSpec) -> int:
    """One ``generateContent`` call per image, in parallel: each holds a slot and takes a token."""
    return max(spec.image_count, 1)


FACTS = ProviderFacts(
    name=NAME, asynchronous=False, slots=_one_call_per_image, requests=lambda spec: float(_one_call_per_image(spec))
)
GENERATE_PATH = "/v1beta/models/{model}:generateContent"
IMAGE_FIELDS = ("image", "image_url", "image_urls", "images")
ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
#: models that also take the extreme ratios (Nano Banana 2, reference §2.3)
EXTRA_RATIO_MODELS = ("gemini-3.1-flash-image",)
EXTRA_ASPECT_RATIOS = ("1:4", "4:1", "1:8", "8:1")
#: finish / block reasons that mean moderation (the caller's problem); others without an image mean "no image"
POLICY_REASONS = frozenset(
    {
        "SAFETY",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)
_SIZE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")
_RATIO = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")
_DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
_BILLING_WORDS = ("billing", "free tier")
#: "…, limit: 0, model: …" in a RESOURCE_EXHAUSTED message: this key has no allowance for the model at all
_LIMIT_ZERO = re.compile(r"\blimit:\s*0(?![\d.])")
#: ``google.rpc.ErrorInfo`` reasons that mean the project cannot pay, not that the key is wrong
_BILLING_REASONS = frozenset({"BILLING_DISABLED", "BILLING_NOT_ACTIVE"})

log = logging.getLogger(__name__)


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


# -- request -------------------------------------------------------------------------------------------


class Blob(_Camel):
    mime_type: str
    data: str


class RequestPart(_Camel):
    text: str | None = None
    inline_data: Blob | None = None


class Content(_Camel):
    role: str = "user"
    parts: list[RequestPart]


class ImageConfig(_Camel):
    aspect_ratio: str | None = None
    image_size: str | None = None


class GenerationConfig(_Camel):
    response_modalities: list[str] = ["IMAGE"]
    image_config: ImageConfig | None = None


class GenerateContentRequest(_Camel):
    contents: list[Content]
    generation_config: GenerationConfig


# -- response ------------------------------------------------------------------------------------------


class ResponsePart(_Camel):
    text: str | None = None
    inline_data: Blob | None = None
    thought: bool = False


class ResponseContent(_Camel):
    parts: list[ResponsePart] = []


class Candidate(_Camel):
    content: ResponseContent | None = None
    finish_reason: str | None = None
    finish_message: str | None = None


class PromptFeedback(_Camel):
    block_reason: str | None = None
    block_reason_message: str | None = None


class GenerateContentResponse(_Camel):
    candidates: list[Candidate] = []
    prompt_feedback: PromptFeedback | None = None
    model_version: str | None = None


class GoogleRpcStatus(BaseModel):
    code: int = 0
    message: str = ""
    status: str = ""
    details: list[dict[str, Any]] = []


class GoogleErrorBody(BaseModel):
    error: GoogleRpcStatus


# -- adapter -------------------------------------------------------------------------------------------


class GeminiProvider:
    """Gemini image models: 2.5 Flash Image, 3 Pro Image, 3.1 Flash Image (reference §2.3)."""

    name = NAME

    def __init__(self, settings: GeminiSettings, *, images: ImageLoader, http: httpx.Client | None = None) -> None:
        assert settings.base_url and settings.api_key  # filled by Settings
        self._images = images
        self._http = http or make_client(base_url=settings.base_url, timeout_s=settings.timeout_s)
        self._auth = {"x-goog-api-key": settings.api_key.get_secret_value()}

    def submit(self, spec: JobSpec) -> Submission:
        body = self._request_body(spec).model_dump(mode="json", by_alias=True, exclude_none=True)
        path = GENERATE_PATH.format(model=spec.upstream_model)
        # One call first: what fails it (auth, quota, refused parameters, a blocked prompt) would fail every call.
        first = self._generate_one(path, body)
        others: list[ResultImage | ProviderError] = []
        if spec.image_count > 1:
            with ThreadPoolExecutor(max_workers=spec.image_count - 1, thread_name_prefix="gemini") as pool:
                others = list(pool.map(lambda _: self._try_generate_one(path, body), range(spec.image_count - 1)))
        failed = [outcome for outcome in others if isinstance(outcome, ProviderError)]
        if failed:
            log.warning(
                "gemini: %d of %d calls failed, delivering the rest: %s", len(failed), spec.image_count, failed[0]
            )
        return Completed(images=(first, *(outcome for outcome in others if isinstance(outcome, ResultImage))))

    def close(self) -> None:
        self._http.close()

    def _request_body(self, spec: JobSpec) -> GenerateContentRequest:
        params = spec.params
        parts = [RequestPart(text=str(params.get("prompt", "")))]
        for ref in _image_refs(params):
            image = self._images.load(ref)
            parts.append(RequestPart(inline_data=Blob(mime_type=image.mime_type, data=image.base64())))
        aspect_ratio = params.get("aspectRatio")
        if not isinstance(aspect_ratio, str):
            aspect_ratio = _aspect_ratio_for_size(params.get("size"), spec.upstream_model)
        image_size = params.get("imageSize")
        image_config = ImageConfig(
            aspect_ratio=aspect_ratio, image_size=_normalise_image_size(image_size) if image_size else None
        )
        has_config = image_config.aspect_ratio is not None or image_config.image_size is not None
        return GenerateContentRequest(
            contents=[Content(parts=parts)],
            generation_config=GenerationConfig(image_config=image_config if has_config else None),
        )

    def _generate_one(self, path: str, body: dict[str, Any]) -> ResultImage:
        """One upstream call: its final image, or a ``ProviderError``."""
        parsed = call(
            self._http,
            "POST",
            path,
            GenerateContentResponse,
            provider=NAME,
            phase=Phase.SUBMIT,
            read_error=read_error,
            json=body,
            headers=self._auth,
        )
        return _final_image(parsed)

    def _try_generate_one(self, path: str, body: dict[str, Any]) -> ResultImage | ProviderError:
        try:
            return self._generate_one(path, body)
        except ProviderError as exc:
            return exc


def _image_refs(params: dict[str, Any]) -> list[str]:
    refs: list[str] = []
    for name in IMAGE_FIELDS:
        value = params.get(name)
        if isinstance(value, str):
            refs.append(value)
        elif isinstance(value, list):
            refs.extend(item for item in value if isinstance(item, str))
    return refs


def _normalise_image_size(value: object) -> str:
    """``2k`` → ``2K`` (the upstream's values are case-sensitive); ``0.5K`` → ``512``."""
    text = str(value).strip().upper()
    return "512" if text == "0.5K" else text


def _aspect_ratio_for_size(size: object, model: str) -> str | None:
    """An OpenAI-style ``WxH`` (or a ``W:H``) → the nearest aspect ratio the model supports; ``auto`` → none."""
    if not isinstance(size, str):
        return None
    match = _SIZE.match(size) or _RATIO.match(size)
    if match is None:
        return None
    width, height = int(match.group(1)), int(match.group(2))
    if width <= 0 or height <= 0:
        return None
    allowed = ASPECT_RATIOS + (EXTRA_ASPECT_RATIOS if model.startswith(EXTRA_RATIO_MODELS) else ())
    target = math.log(width / height)

    def distance(ratio: str) -> float:
        w, _, h = ratio.partition(":")
        return abs(math.log(int(w) / int(h)) - target)

    return min(allowed, key=distance)


def _final_image(response: GenerateContentResponse) -> ResultImage:
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason:
        detail = f": {feedback.block_reason_message}" if feedback.block_reason_message else ""
        raise ContentPolicyError(f"Gemini blocked the prompt ({feedback.block_reason}){detail}", provider=NAME)
    if not response.candidates:
        raise UnexpectedResponseError("Gemini answered without candidates", provider=NAME)
    candidate = response.candidates[0]
    parts = candidate.content.parts if candidate.content is not None else []
    images = [part.inline_data for part in parts if part.inline_data is not None and not part.thought]
    if images:
        return ResultImage(data=decode_base64(images[-1].data, provider=NAME, label="Gemini", lenient=True))
    reason = candidate.finish_reason or "unknown"
    said = candidate.finish_message or " ".join(part.text for part in parts if part.text and not part.thought)
    detail = f": {said[:300]}" if said else ""
    if reason in POLICY_REASONS:
        raise ContentPolicyError(f"Gemini withheld the image ({reason}){detail}", provider=NAME)
    raise PermanentProviderError(f"Gemini answered without an image (finishReason {reason}){detail}", provider=NAME)


def _detail_types(error: GoogleRpcStatus, suffix: str) -> list[dict[str, Any]]:
    return [detail for detail in error.details if str(detail.get("@type", "")).endswith(suffix)]


def _retry_delay_s(error: GoogleRpcStatus) -> float | None:
    """``google.rpc.RetryInfo.retryDelay`` (``"28s"``); None: the ``Retry-After`` header, if any."""
    for detail in _detail_types(error, "google.rpc.RetryInfo"):
        match = _DELAY.match(str(detail.get("retryDelay", "")))
        if match is not None:
            return float(match.group(1))
    return None


def _is_quota_exhaustion(error: GoogleRpcStatus) -> bool:
    """A RESOURCE_EXHAUSTED that waiting seconds will not cure: a quota of 0 for the model (a free tier without
    it, billing not enabled), or a per-day quota used up (https://ai.google.dev/gemini-api/docs/rate-limits)."""
    for detail in _detail_types(error, "google.rpc.QuotaFailure"):
        for violation in detail.get("violations", []) or []:
            if not isinstance(violation, dict):
                continue
            if "PerDay" in str(violation.get("quotaId", "")) or str(violation.get("quotaValue", "")) == "0":
                return True
    return _LIMIT_ZERO.search(error.message) is not None


def _reasons(error: GoogleRpcStatus) -> set[str]:
    return {str(detail.get("reason", "")) for detail in _detail_types(error, "google.rpc.ErrorInfo")}


def _is_bad_api_key(error: GoogleRpcStatus) -> bool:
    return bool(_reasons(error) & {"API_KEY_INVALID", "API_KEY_EXPIRED"}) or "API key not valid" in error.message


def _is_billing(error: GoogleRpcStatus) -> bool:
    """Billing not enabled / free tier not available: FAILED_PRECONDITION or PERMISSION_DENIED saying so."""
    if _reasons(error) & _BILLING_REASONS:
        return True
    return error.status in ("FAILED_PRECONDITION", "PERMISSION_DENIED") and any(
        word in error.message.lower() for word in _BILLING_WORDS
    )


def read_error(response: httpx.Response) -> ErrorReading:
    """Google's RPC status (https://ai.google.dev/gemini-api/docs/troubleshooting) on top of the
    HTTP status: exhausted quota and billing, a bad key sent as 400, and ``RetryInfo``."""
    status = response.status_code
    body = error_body(response, GoogleErrorBody)
    if body is None:
        return ErrorReading(f"Gemini {status}: {reason_or_body(response)}")
    error = body.error
    message = f"Gemini {status} {error.status or 'error'}: {error.message or reason_or_body(response)}"
    if _is_billing(error) or ((error.status == "RESOURCE_EXHAUSTED" or status == 429) and _is_quota_exhaustion(error)):
        return ErrorReading(message, kind=QuotaExceededError)
    if status == 400 and _is_bad_api_key(error):
        return ErrorReading(message, kind=ProviderAuthError)
    if status == 499:  # CANCELLED: the server gave up on it, not a verdict on the request
        return ErrorReading(message, kind=TransientProviderError)
    return ErrorReading(message, retry_after_s=_retry_delay_s(error))
