"""OpenAI Images (``POST /v1/images/generations``): synchronous; GPT image models answer ``b64_json``."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import httpx
from pydantic import BaseModel

from shared.config import OpenAISettings
from shared.errors import (
    ContentPolicyError,
    ProviderAuthError,
    ProviderError,
    QuotaExceededError,
    RateLimitedError,
    TransientProviderError,
    UnexpectedResponseError,
    UpstreamRejectedError,
)
from worker.inputs import ImageLoader
from worker.providers._http import json_body, make_client, map_transport_errors, parse_model, retry_after_s
from worker.providers.base import Completed, JobSpec, PollResult, ResultImage, Submission

NAME = "openai"
_MODERATION_CODES = ("moderation_blocked", "content_policy_violation")


class OpenAIImage(BaseModel):
    b64_json: str | None = None
    url: str | None = None


class ImagesResponse(BaseModel):
    created: int
    data: list[OpenAIImage] = []


class OpenAIError(BaseModel):
    message: str = ""
    type: str | None = None
    code: str | None = None


class OpenAIErrorBody(BaseModel):
    error: OpenAIError


class OpenAIImagesProvider:
    """GPT image and DALL·E generations."""

    name = NAME

    def __init__(
        self, settings: OpenAISettings, *, http: httpx.Client | None = None, images: ImageLoader | None = None
    ) -> None:
        assert settings.base_url and settings.api_key  # filled by Settings
        self._images = images
        self._http = http or make_client(base_url=settings.base_url, timeout_s=settings.timeout_s)
        self._auth = {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"}

    def submit(self, spec: JobSpec) -> Submission:
        body: dict[str, Any] = {"model": spec.upstream_model, **spec.params}
        if not spec.upstream_model.startswith("dall-e"):
            body.pop("response_format", None)  # GPT image models always answer base64
        with map_transport_errors(NAME):
            response = self._http.post("/v1/images/generations", json=body, headers=self._auth)
        if response.status_code != 200:
            raise _error_for(response)
        parsed = parse_model(ImagesResponse, json_body(response, provider=NAME), provider=NAME)
        images = tuple(_to_result_image(image) for image in parsed.data)
        if not images:
            raise UnexpectedResponseError("OpenAI answered without images", provider=NAME)
        return Completed(images=images)

    def poll(self, upstream_id: str) -> PollResult:
        raise NotImplementedError(f"OpenAI Images is synchronous; nothing to poll for {upstream_id}")

    def close(self) -> None:
        self._http.close()


def _to_result_image(image: OpenAIImage) -> ResultImage:
    if image.b64_json is not None:
        try:
            return ResultImage(data=base64.b64decode(image.b64_json, validate=True))
        except binascii.Error:
            raise UnexpectedResponseError("OpenAI answered invalid base64 image data", provider=NAME) from None
    if image.url is not None:
        return ResultImage(url=image.url)
    raise UnexpectedResponseError("OpenAI answered an image with neither b64_json nor url", provider=NAME)


def _error_for(response: httpx.Response) -> ProviderError:
    status = response.status_code
    try:
        error = OpenAIErrorBody.model_validate(response.json()).error
    except ValueError:
        error = OpenAIError(message=response.text[:200])
    message = f"OpenAI {status}: {error.message}"
    if status in (401, 403):
        return ProviderAuthError(message, provider=NAME)
    if status == 429 and error.code == "insufficient_quota":
        return QuotaExceededError(message, provider=NAME)
    if status == 429:
        return RateLimitedError(message, provider=NAME, retry_after_s=retry_after_s(response))
    if status >= 500 or status == 408:
        return TransientProviderError(message, provider=NAME)
    if error.code in _MODERATION_CODES:
        return ContentPolicyError(message, provider=NAME)
    return UpstreamRejectedError(message, provider=NAME)
