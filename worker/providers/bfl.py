"""Black Forest Labs Flux (``POST /v1/{model}``, then ``GET polling_url``): async task, ``x-key`` auth.

The submit answers ``{id, polling_url}``; the polling URL points at the region that took the task and is
what we poll (reference §5.2: do not rebuild it), so it is the job's upstream id. The key is sent to it only
when its host is the configured API host or one under the same domain (``api.us1.bfl.ai`` for
``api.bfl.ai``); otherwise, or when it does not fit the upstream-id column, the id is kept and
``{base_url}/v1/get_result?id=`` is polled. A ``Ready`` task's ``result.sample`` is a signed URL that lives
about 10 minutes: the pipeline downloads it at once. BFL has no idempotency key, so a repeated submit (after a
worker died mid-submit) makes a new task. When upstream callbacks are on, our
``/internal/callbacks/bfl/…`` URL goes as ``webhook_url`` (a hint to poll at once; its payload is not relied on).

Request parameters arrive under the catalog's upstream names and are turned into each endpoint's notion:
``size``/``aspect_ratio`` become ``width``/``height`` or an ``aspect_ratio``; ``input_images`` become
``input_image_2`` …; data URIs lose their prefix; ``image_prompt`` URLs are fetched and sent as base64.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import httpx
from pydantic import BaseModel

from shared.config import BflSettings
from shared.errors import (
    ContentPolicyError,
    PermanentProviderError,
    ProviderError,
    QuotaExceededError,
    UnexpectedResponseError,
    UpstreamRejectedError,
)
from worker.inputs import ImageLoader
from worker.providers._http import ErrorReading, Phase, call, error_body, make_client, reason_or_body
from worker.providers._images import raw_base64
from worker.providers.base import Accepted, JobSpec, PollResult, ProviderFacts, ResultImage, Submission, UpstreamState

NAME = "bfl"
FACTS = ProviderFacts(name=NAME, asynchronous=True, calls_back=True)
GET_RESULT_PATH = "/v1/get_result"
#: the jobs table keeps upstream ids in 128 characters
MAX_UPSTREAM_ID = 128
#: endpoints sized by ``aspect_ratio``; every other endpoint takes ``width``/``height``
ASPECT_RATIO_MODELS = frozenset({"flux-kontext-pro", "flux-kontext-max", "flux-pro-1.1-ultra"})
MAX_INPUT_IMAGES = 8
#: ``aspect_ratio`` → ``width``/``height`` near one megapixel, multiples of 32, sides within 256–1440
DIMENSIONS: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "9:16": (768, 1344),
    "4:3": (1152, 864),
    "3:4": (864, 1152),
    "3:2": (1248, 832),
    "2:3": (832, 1248),
    "5:4": (1120, 896),
    "4:5": (896, 1120),
    "21:9": (1440, 608),
    "9:21": (608, 1440),
}
_ONE_MEGAPIXEL = 1024 * 1024
#: country domains that register names one level down (``example.co.uk``)
_SECOND_LEVEL = frozenset({"ac", "co", "com", "edu", "gov", "net", "org"})
_POLICY_WORDS = ("moderat", "nsfw")
#: an account without credits, whatever the status (BFL's own answer for it is 402 Payment Required)
_CREDIT_WORDS = ("insufficient credit", "out of credit", "add credits", "no credits")

Status = Literal["Task not found", "Pending", "Request Moderated", "Content Moderated", "Ready", "Error"]


class BflSubmitted(BaseModel):
    id: str
    polling_url: str | None = None


class BflSample(BaseModel):
    sample: str | None = None


class BflResult(BaseModel):
    id: str | None = None
    status: Status
    result: BflSample | None = None
    details: Any = None


class BflValidationItem(BaseModel):
    loc: list[str | int] = []
    msg: str = ""


class BflErrorBody(BaseModel):
    """FastAPI's ``{"detail": str | [{loc, msg, type}]}``; some gateways answer ``{error, message}``; a poll may
    answer an error status with the task itself, ``{id, status, details}``."""

    detail: str | list[BflValidationItem] | dict[str, Any] | None = None
    error: str | dict[str, Any] | None = None
    message: str | None = None
    status: str | None = None
    details: Any = None

    def describe(self) -> str | None:
        """The upstream's own reason; None when the body names none."""
        if isinstance(self.detail, list):
            return "; ".join(f"{_field_of(item.loc)}: {item.msg}" for item in self.detail) or "invalid request"
        if self.detail is not None:
            return str(self.detail)
        if self.status is not None:
            return f"{self.status}{_reasons(self.details)}"
        error = self.error.get("message") if isinstance(self.error, dict) else self.error
        return " ".join(str(part) for part in (error, self.message) if part) or None


class BflProvider:
    """FLUX1.1 [pro] / Ultra, FLUX.1 Kontext and FLUX.2 generation and editing."""

    name = NAME

    def __init__(
        self, settings: BflSettings, *, http: httpx.Client | None = None, images: ImageLoader | None = None
    ) -> None:
        assert settings.base_url and settings.api_key  # filled by Settings
        self._images = images
        self._http = http or make_client(base_url=settings.base_url, timeout_s=settings.timeout_s)
        self._auth = {"x-key": settings.api_key.get_secret_value()}

    def submit(self, spec: JobSpec) -> Submission:
        body = self._body(spec)
        if spec.callback_url is not None:
            body["webhook_url"] = spec.callback_url  # BFL calls it when the task ends (payload UNVERIFIED)
        submitted = call(
            self._http,
            "POST",
            f"/v1/{spec.upstream_model}",
            BflSubmitted,
            provider=NAME,
            phase=Phase.SUBMIT,
            read_error=read_error,
            json=body,
            headers=self._auth,
        )
        polling_url = submitted.polling_url
        if polling_url and len(polling_url) <= MAX_UPSTREAM_ID and self._trusted(polling_url):
            return Accepted(upstream_id=polling_url)
        return Accepted(upstream_id=submitted.id)

    def poll(self, upstream_id: str) -> PollResult:
        if upstream_id.startswith(("http://", "https://")):
            url, params = upstream_id, None
        else:
            url, params = GET_RESULT_PATH, {"id": upstream_id}
        task = call(
            self._http,
            "GET",
            url,
            BflResult,
            provider=NAME,
            phase=Phase.POLL,
            read_error=read_error,
            params=params,
            headers=self._auth,
        )
        return _to_poll_result(task)

    def close(self) -> None:
        self._http.close()

    # -- request -----------------------------------------------------------------------------------

    def _body(self, spec: JobSpec) -> dict[str, Any]:
        params = dict(spec.params)
        size, aspect_ratio = params.pop("size", None), params.pop("aspect_ratio", None)
        references = params.pop("input_images", None)
        body: dict[str, Any] = params
        if spec.upstream_model in ASPECT_RATIO_MODELS:
            if aspect_ratio is None and isinstance(size, str):
                aspect_ratio = _ratio_of(size)
            if aspect_ratio is not None:
                body["aspect_ratio"] = aspect_ratio
        elif "width" not in body and "height" not in body:
            if isinstance(size, str):
                body["width"], body["height"] = _parse_size(size)
            elif isinstance(aspect_ratio, str):
                body["width"], body["height"] = _dimensions_for(aspect_ratio)
        body.update(_input_images(body.pop("input_image", None), references))
        if isinstance(image_prompt := body.get("image_prompt"), str):
            body["image_prompt"] = self._base64(image_prompt)
        return body

    def _base64(self, image: str) -> str:
        """Raw base64 for fields that take no URLs (a URL is fetched through the input-image loader)."""
        if image.startswith(("http://", "https://")) and self._images is not None:
            return self._images.load(image).base64()
        return raw_base64(image)

    def _trusted(self, url: str) -> bool:
        """Whether our key may be sent to ``url``: the API's own host, or one under the same domain."""
        try:
            target = httpx.URL(url)
        except httpx.InvalidURL:
            return False
        base = self._http.base_url
        if target.scheme != base.scheme and not (base.scheme == "http" and target.scheme == "https"):
            return False
        return target.host == base.host or target.host.endswith("." + _domain_of(base.host))


def _domain_of(host: str) -> str:
    """The registrable domain of a DNS name (``api.bfl.ai`` → ``bfl.ai``); an IP address or a bare name stays whole."""
    labels = host.split(".")
    if len(labels) < 3 or all(label.isdigit() for label in labels):
        return host
    keep = 3 if labels[-2] in _SECOND_LEVEL and len(labels[-1]) == 2 else 2
    return ".".join(labels[-keep:])


def _field_of(loc: list[str | int]) -> str:
    """``["body", "width"]`` → ``width``."""
    parts = [str(part) for part in loc if part not in ("body", "query")]
    return ".".join(parts) or "body"


def _input_images(first: Any, references: Any) -> dict[str, str]:
    """``input_image``, ``input_image_2`` … ``input_image_8`` from the single image and the list."""
    images = ([first] if isinstance(first, str) else []) + (
        [item for item in references if isinstance(item, str)] if isinstance(references, list) else []
    )
    if len(images) > MAX_INPUT_IMAGES:
        raise UpstreamRejectedError(
            f"BFL takes at most {MAX_INPUT_IMAGES} input images (image + image_urls), got {len(images)}",
            provider=NAME,
        )
    names = ["input_image", *(f"input_image_{i}" for i in range(2, MAX_INPUT_IMAGES + 1))]
    return {name: raw_base64(image) for name, image in zip(names, images, strict=False)}


def _parse_size(size: str) -> tuple[int, int]:
    width, sep, height = size.lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit()):
        raise UpstreamRejectedError(f"size must be WIDTHxHEIGHT, got {size!r}", provider=NAME)
    return int(width), int(height)


def _ratio_of(size: str) -> str:
    """``"1344x768"`` → ``"7:4"``."""
    width, height = _parse_size(size)
    divisor = math.gcd(width, height) or 1
    return f"{width // divisor}:{height // divisor}"


def _dimensions_for(aspect_ratio: str) -> tuple[int, int]:
    """``width``/``height`` for a ratio: the table, else at most one megapixel in multiples of 32."""
    if aspect_ratio in DIMENSIONS:
        return DIMENSIONS[aspect_ratio]
    w, sep, h = aspect_ratio.partition(":")
    if not (sep and w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
        raise UpstreamRejectedError(f"aspect_ratio must be W:H, got {aspect_ratio!r}", provider=NAME)
    ratio = int(w) / int(h)
    width = max(256, min(1440, int(math.sqrt(_ONE_MEGAPIXEL * ratio)) // 32 * 32))
    height = max(256, min(1440, round(width / ratio / 32) * 32))
    return width, height


# -- answers -----------------------------------------------------------------------------------------


def _to_poll_result(task: BflResult) -> PollResult:
    if task.status == "Pending":
        return PollResult(state=UpstreamState.PENDING)
    if task.status == "Ready":
        sample = task.result.sample if task.result else None
        if sample:
            return PollResult(state=UpstreamState.SUCCEEDED, images=(ResultImage(url=sample),))
        error: ProviderError = UnexpectedResponseError("BFL reported Ready without result.sample", provider=NAME)
    elif task.status in ("Request Moderated", "Content Moderated"):
        error = ContentPolicyError(f"BFL: {task.status}{_reasons(task.details)}", provider=NAME)
    elif task.status == "Task not found":
        error = PermanentProviderError("BFL: Task not found (unknown or expired task id)", provider=NAME)
    else:
        error = ProviderError(f"BFL: generation failed{_reasons(task.details)}", provider=NAME)
    return PollResult(state=UpstreamState.FAILED, error=error)


def _reasons(details: Any) -> str:
    """``details`` as a short suffix (moderation answers carry ``{"Moderation Reasons": [...]}``)."""
    if isinstance(details, dict):
        reasons = details.get("Moderation Reasons")
        if isinstance(reasons, list) and reasons:
            return f" ({', '.join(map(str, reasons))})"
        text = "; ".join(f"{key}: {value}" for key, value in details.items())
    else:
        text = "" if details is None else str(details)
    return f" ({text[:300]})" if text else ""


def read_error(response: httpx.Response) -> ErrorReading:
    """BFL's error bodies on top of the HTTP status (402 is out of credits)."""
    status = response.status_code
    body = error_body(response, BflErrorBody)
    said = (body.describe() if body is not None else None) or reason_or_body(response)
    message = f"BFL {status}: {said}"
    if body is None:
        return ErrorReading(message)
    if any(words in said.lower() for words in _CREDIT_WORDS):
        return ErrorReading(message, kind=QuotaExceededError)
    if body.status in ("Request Moderated", "Content Moderated"):
        return ErrorReading(message, kind=ContentPolicyError)
    if status != 422 and any(word in said.lower() for word in _POLICY_WORDS):
        return ErrorReading(message, kind=ContentPolicyError)
    return ErrorReading(message)
