"""OpenAI Images: synchronous ``POST /v1/images/generations`` (JSON) and ``POST /v1/images/edits`` (multipart).

A job with input images (``image``, ``image_url``, ``image_urls``, ``images``) is an edit: each image is
read by the ``ImageLoader`` (URL, data URI or raw base64) and uploaded as a file — ``image`` for one,
``image[]`` for several — with the optional ``mask`` (a PNG; applied to the first image upstream).
Formats OpenAI does not take (GIF) are converted to PNG first.

DALL·E was removed from the API on 2026-05-12. Jobs for ``dall-e-3`` / ``dall-e-2`` go to
``settings.dalle_replacement`` (default ``gpt-image-1``) with DALL·E-only parameters mapped: quality
``standard``/``hd`` → ``medium``/``high``; sizes ``1792x1024``/``1024x1792`` → ``1536x1024``/``1024x1536``,
``256x256``/``512x512`` → ``1024x1024``; ``style`` dropped (GPT image models have none). The answer names
the model that served (``Completed.served_model``). A replacement that is itself a DALL·E model (an
upstream that still serves it) gets the parameters unchanged, with ``response_format=b64_json``.
"""

from __future__ import annotations

import io
import json
from typing import Any, Literal, TypeVar

import httpx
from httpx_sse import EventSource
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, ValidationError

from shared.config import OpenAISettings
from shared.errors import (
    ConfigurationError,
    ContentPolicyError,
    ProviderError,
    QuotaExceededError,
    TransientProviderError,
    UnexpectedResponseError,
    UpstreamRejectedError,
)
from shared.jobs import JsonObject
from worker.inputs import ImageLoader, InputImage, InputImageError
from worker.providers._http import (
    ErrorReading,
    Phase,
    answer_error,
    call,
    error_body,
    make_client,
    parse_data,
    reason_or_body,
    send,
)
from worker.providers._images import decode_base64
from worker.providers.base import Completed, JobSpec, ProviderFacts, ResultImage, Submission

NAME = "openai"
FACTS = ProviderFacts(name=NAME, asynchronous=False)
GENERATIONS_PATH = "/v1/images/generations"
EDITS_PATH = "/v1/images/edits"
#: the request fields that carry input images, in the order they are uploaded
INPUT_FIELDS = ("image", "image_url", "image_urls", "images")
_MODERATION_CODES = ("moderation_blocked", "content_policy_violation")
#: the account has no allowance left (https://platform.openai.com/docs/guides/error-codes): no credit, a hard
#: billing limit reached, billing not active. Waiting cures none of them; another key may work.
_QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached", "billing_not_active"})
_DALLE_QUALITY = {"standard": "medium", "hd": "high"}
_DALLE_SIZE = {"1792x1024": "1536x1024", "1024x1792": "1024x1536", "256x256": "1024x1024", "512x512": "1024x1024"}
_UPLOAD_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
#: the fields of an answer, besides the images, that the job keeps (``Completed.report``)
REPORTED_FIELDS = ("background", "output_format", "quality", "size", "usage")

Upload = tuple[str, tuple[str, bytes, str]]


class _ImageParams(BaseModel):
    """What generations and edits have in common (every field optional except model and prompt)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str
    prompt: str
    n: int | None = None
    size: str | None = None
    quality: str | None = None
    background: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    response_format: Literal["b64_json"] | None = None
    stream: bool | None = None
    partial_images: int | None = None


R = TypeVar("R", bound=_ImageParams)


class GenerationRequest(_ImageParams):
    """The JSON body of ``POST /v1/images/generations``."""

    style: str | None = None
    moderation: str | None = None


class EditRequest(_ImageParams):
    """The non-file form fields of ``POST /v1/images/edits`` (the images and the mask go as files)."""

    input_fidelity: str | None = None

    def form_fields(self) -> dict[str, str]:
        dumped = self.model_dump(exclude_none=True).items()
        return {key: ("true" if value else "false") if isinstance(value, bool) else str(value) for key, value in dumped}


class OpenAIImage(BaseModel):
    b64_json: str | None = None
    url: str | None = None


class ImagesResponse(BaseModel):
    """https://platform.openai.com/docs/api-reference/images/object: GPT image answers also name the size,
    quality, background and output format they produced and the tokens they billed (``usage``)."""

    created: int
    data: list[OpenAIImage] = []
    background: str | None = None
    output_format: str | None = None
    quality: str | None = None
    size: str | None = None
    usage: dict[str, Any] | None = None
    #: partial images, when the answer was streamed (``partial_images``), in the order they came
    partials: list[OpenAIImage] = []

    def report(self) -> JsonObject | None:
        """What the answer says besides the images (kept on the job, answered to OpenAI clients, priced)."""
        reported = self.model_dump(include=set(REPORTED_FIELDS), exclude_none=True)
        return reported or None


class ModerationDetails(BaseModel):
    moderation_stage: str | None = None
    categories: list[str] = []


class OpenAIError(BaseModel):
    message: str = ""
    type: str | None = None
    param: str | None = None
    code: str | None = None
    moderation_details: ModerationDetails | None = None


class OpenAIErrorBody(BaseModel):
    error: OpenAIError


class OpenAIImagesProvider:
    """GPT image generations and edits; DALL·E names served by the configured replacement."""

    name = NAME

    def __init__(
        self, settings: OpenAISettings, *, http: httpx.Client | None = None, images: ImageLoader | None = None
    ) -> None:
        assert settings.base_url and settings.api_key  # filled by Settings
        self._images = images
        self._http = http or make_client(base_url=settings.base_url, timeout_s=settings.timeout_s)
        self._auth = {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"}
        self._dalle_replacement = settings.dalle_replacement

    def submit(self, spec: JobSpec) -> Submission:
        params = dict(spec.params)
        refs = _pop_input_refs(params)
        mask = params.pop("mask", None)
        partials = params.pop("partial_images", 0)
        model = self._serving_model(spec.upstream_model)
        if _is_dalle(spec.upstream_model):
            params = _dalle_params(params, served_by=model)
        if isinstance(partials, int) and partials > 0 and not _is_dalle(model):
            # partial images come only as Server-Sent Events (``stream``)
            params |= {"stream": True, "partial_images": partials}
        if refs:
            parsed = self._edit(model, params, refs, mask)
        elif mask is not None:
            raise UpstreamRejectedError("OpenAI: 'mask' needs an input image to edit", provider=NAME)
        else:
            params.pop("input_fidelity", None)  # an edit parameter; nothing to match without input images
            body = _request(GenerationRequest, model, params).model_dump(exclude_none=True)
            parsed = self._post(GENERATIONS_PATH, json=body)
        images = tuple(_to_result_image(image) for image in parsed.data)
        if not images:
            raise UnexpectedResponseError("OpenAI answered without images", provider=NAME)
        served_model = model if model != spec.upstream_model else None
        return Completed(
            images=images,
            served_model=served_model,
            report=parsed.report(),
            partials=tuple(_to_result_image(image) for image in parsed.partials),
        )

    def close(self) -> None:
        self._http.close()

    def _serving_model(self, upstream_model: str) -> str:
        return self._dalle_replacement if _is_dalle(upstream_model) and self._dalle_replacement else upstream_model

    def _edit(self, model: str, params: JsonObject, refs: list[str], mask: object) -> ImagesResponse:
        params.pop("moderation", None)  # not an edit parameter upstream (edits are moderated at `auto`)
        request = _request(EditRequest, model, params)
        if self._images is None:
            raise ConfigurationError("the OpenAI adapter needs an ImageLoader for edits")
        field = "image" if len(refs) == 1 else "image[]"
        files = [_upload(self._images.load(ref), field, index) for index, ref in enumerate(refs)]
        if isinstance(mask, str):
            files.append(_upload(self._images.load(mask), "mask", 0, png_only=True))
        return self._post(EDITS_PATH, data=request.form_fields(), files=files)

    def _post(self, path: str, **content: Any) -> ImagesResponse:
        if _asks_for_events(content):
            return self._post_streamed(path, **content)
        return call(
            self._http,
            "POST",
            path,
            ImagesResponse,
            provider=NAME,
            phase=Phase.SUBMIT,
            read_error=read_error,
            headers=self._auth,
            **content,
        )

    def _post_streamed(self, path: str, **content: Any) -> ImagesResponse:
        """A ``stream`` request: its answer is Server-Sent Events (read whole: the job keeps the partials)."""
        response = send(self._http, "POST", path, provider=NAME, headers=self._auth, **content)
        if response.status_code != 200:
            raise answer_error(response, provider=NAME, phase=Phase.SUBMIT, read_error=read_error)
        return _from_events(response)


def _asks_for_events(content: dict[str, Any]) -> bool:
    fields = content.get("json") or content.get("data") or {}
    return fields.get("stream") in (True, "true")


def _is_dalle(model: str) -> bool:
    return model.startswith("dall-e")


def _pop_input_refs(params: JsonObject) -> list[str]:
    """Every input image reference, in ``INPUT_FIELDS`` order (removed from ``params``)."""
    refs: list[str] = []
    for field in INPUT_FIELDS:
        value = params.pop(field, None)
        values = value if isinstance(value, list) else [value]
        refs.extend(item for item in values if isinstance(item, str) and item)
    return refs


def _dalle_params(params: JsonObject, *, served_by: str) -> JsonObject:
    """A DALL·E job's parameters for the model that serves it."""
    if _is_dalle(served_by):
        return {**params, "response_format": "b64_json"}  # bytes now, not a URL that expires in 60 min
    mapped = {key: value for key, value in params.items() if key != "style"}
    quality = mapped.get("quality", "standard")
    mapped["quality"] = _DALLE_QUALITY.get(quality, quality) if isinstance(quality, str) else quality
    size = mapped.get("size", "1024x1024")
    mapped["size"] = _DALLE_SIZE.get(size, size) if isinstance(size, str) else size
    return mapped


def _request(model_type: type[R], model: str, params: JsonObject) -> R:
    """The upstream request; a parameter it does not know is refused (naming it) rather than dropped."""
    unknown = sorted(set(params) - set(model_type.model_fields))
    if unknown:
        raise UpstreamRejectedError(f"OpenAI does not take the parameter '{unknown[0]}' here", provider=NAME)
    try:
        return model_type.model_validate({**params, "model": model})
    except ValidationError as exc:
        param = ".".join(str(part) for part in exc.errors()[0]["loc"])
        raise UpstreamRejectedError(f"OpenAI: invalid value for '{param}'", provider=NAME) from None


def _upload(image: InputImage, field: str, index: int, *, png_only: bool = False) -> Upload:
    """One multipart file: PNG, JPEG and WebP as given (a mask only as PNG); anything else converted to PNG."""
    data, mime = image.data, image.mime_type
    if mime != "image/png" and (png_only or mime not in _UPLOAD_EXTENSIONS):
        data, mime = _to_png(data), "image/png"
    stem = field.removesuffix("[]")
    return field, (f"{stem}-{index}.{_UPLOAD_EXTENSIONS[mime]}", data, mime)


def _to_png(data: bytes) -> bytes:
    try:
        with Image.open(io.BytesIO(data)) as picture:
            buffer = io.BytesIO()
            picture.convert("RGBA").save(buffer, "PNG")
            return buffer.getvalue()
    except (UnidentifiedImageError, OSError, ValueError):
        raise InputImageError("an input image could not be converted to PNG", provider="input") from None


class StreamEvent(BaseModel):
    """One ``image_generation.*`` / ``image_edit.*`` event.

    https://platform.openai.com/docs/api-reference/images-streaming
    """

    type: str
    b64_json: str
    created_at: int | None = None
    background: str | None = None
    output_format: str | None = None
    quality: str | None = None
    size: str | None = None
    usage: dict[str, Any] | None = None


def _from_events(response: httpx.Response) -> ImagesResponse:
    """A streamed answer as one ``ImagesResponse``: completed events are the images (their usage summed),
    partial events the partials; an ``error`` event is mapped as an error answer with its status would be."""
    answer = ImagesResponse(created=0)
    usages: list[dict[str, Any]] = []
    for sse in EventSource(response).iter_sse():
        if not sse.data or sse.data.startswith("[DONE]"):
            continue
        data = _json_event(sse.data)
        if isinstance(data, dict) and "error" in data:
            error = parse_data(OpenAIErrorBody, data, provider=NAME, phase=Phase.SUBMIT).error
            raise UpstreamRejectedError(_describe(response.status_code, error), provider=NAME)
        event = parse_data(StreamEvent, data, provider=NAME, phase=Phase.SUBMIT)
        if event.type.endswith(".partial_image"):
            answer.partials.append(OpenAIImage(b64_json=event.b64_json))
        elif event.type.endswith(".completed"):
            answer.data.append(OpenAIImage(b64_json=event.b64_json))
            answer.created = event.created_at or answer.created
            for name in ("background", "output_format", "quality", "size"):
                setattr(answer, name, getattr(event, name) or getattr(answer, name))
            if event.usage:
                usages.append(event.usage)
    if usages:
        answer.usage = _sum_usage(usages)
    return answer


def _json_event(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise UnexpectedResponseError("OpenAI streamed an event that is not JSON", provider=NAME) from None


def _sum_usage(usages: list[dict[str, Any]]) -> dict[str, Any]:
    """Every completed event's usage added up, key by key (details too)."""
    total: dict[str, Any] = {}
    for usage in usages:
        for key, value in usage.items():
            if isinstance(value, dict):
                total[key] = _sum_usage([total.get(key, {}), value])
            elif isinstance(value, int) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
    return total


def _to_result_image(image: OpenAIImage) -> ResultImage:
    if image.b64_json is not None:
        return ResultImage(data=decode_base64(image.b64_json, provider=NAME, label="OpenAI"))
    if image.url is not None:
        return ResultImage(url=image.url)
    raise UnexpectedResponseError("OpenAI answered an image with neither b64_json nor url", provider=NAME)


def read_error(response: httpx.Response) -> ErrorReading:
    """OpenAI's error envelope (https://platform.openai.com/docs/guides/error-codes): the class its
    ``code``/``type`` names, on top of the status."""
    body = error_body(response, OpenAIErrorBody)
    if body is None:
        return ErrorReading(f"OpenAI {response.status_code}: {reason_or_body(response)}")
    error = body.error
    if not error.message:
        error = error.model_copy(update={"message": reason_or_body(response)})
    return ErrorReading(_describe(response.status_code, error), kind=_kind_of(response.status_code, error))


def _kind_of(status: int, error: OpenAIError) -> type[ProviderError] | None:
    if error.code in _QUOTA_CODES or error.type in _QUOTA_CODES:
        return QuotaExceededError
    if error.code in _MODERATION_CODES:
        return ContentPolicyError
    if status == 409:
        return TransientProviderError  # a conflict the official SDK retries (https://github.com/openai/openai-python#retries)
    return None


def _describe(status: int, error: OpenAIError) -> str:
    """``OpenAI <status>: <message>`` plus what else the error names (code, param, moderation details)."""
    notes = [f"code: {error.code or error.type}"] if error.code or error.type else []
    if error.param:
        notes.append(f"param: {error.param}")
    if (details := error.moderation_details) is not None:
        notes.append(f"moderation stage: {details.moderation_stage or 'unknown'}")
        notes.append(f"categories: {', '.join(details.categories) or 'unspecified'}")
    return f"OpenAI {status}: {error.message}" + (f" ({'; '.join(notes)})" if notes else "")
