"""Kling image generation (legacy ``/v1/images/generations``): async task, AK/SK → HS256 JWT.

Our job id is sent as ``external_task_id``, so a submit that may already have reached Kling is first
looked up by that id instead of being repeated.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Literal

import httpx
import jwt
from pydantic import BaseModel

from shared.config import KlingSettings
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
from worker.providers.base import Accepted, JobSpec, PollResult, ResultImage, Submission, UpstreamState

NAME = "kling"
GENERATIONS_PATH = "/v1/images/generations"
TOKEN_TTL_S = 1800
TOKEN_REFRESH_MARGIN_S = 300
_POLICY_WORDS = ("risk", "policy", "sensitive", "moderat", "security")


class KlingImage(BaseModel):
    index: int = 0
    url: str


class KlingTaskResult(BaseModel):
    images: list[KlingImage] = []


class KlingTask(BaseModel):
    task_id: str
    task_status: Literal["submitted", "processing", "succeed", "failed"]
    task_status_msg: str | None = None
    task_result: KlingTaskResult | None = None


class KlingEnvelope(BaseModel):
    code: int
    message: str = ""
    request_id: str | None = None
    data: Any = None


class KlingProvider:
    """Kling text/image-to-image generation."""

    name = NAME

    def __init__(
        self, settings: KlingSettings, *, http: httpx.Client | None = None, images: ImageLoader | None = None
    ) -> None:
        assert settings.base_url and settings.access_key and settings.secret_key  # filled by Settings
        self._images = images
        self._access_key = settings.access_key.get_secret_value()
        self._secret_key = settings.secret_key.get_secret_value()
        self._http = http or make_client(base_url=settings.base_url, timeout_s=settings.timeout_s)
        self._token_lock = threading.Lock()
        self._token = ""
        self._token_expires = 0.0

    def submit(self, spec: JobSpec) -> Submission:
        if spec.attempt > 1 and (existing := self._find_by_external_id(spec.job_id)) is not None:
            return Accepted(upstream_id=existing.task_id)
        body: dict[str, Any] = {"model_name": spec.upstream_model, **spec.params, "external_task_id": spec.job_id}
        if isinstance(image := body.get("image"), str):
            body["image"] = _raw_base64(image)
        envelope = self._request("POST", GENERATIONS_PATH, json=body)
        return Accepted(upstream_id=parse_model(KlingTask, envelope.data, provider=NAME).task_id)

    def poll(self, upstream_id: str) -> PollResult:
        envelope = self._request("GET", f"{GENERATIONS_PATH}/{upstream_id}")
        return _to_poll_result(parse_model(KlingTask, envelope.data, provider=NAME))

    def close(self) -> None:
        self._http.close()

    def _find_by_external_id(self, job_id: str) -> KlingTask | None:
        try:
            envelope = self._request("GET", f"{GENERATIONS_PATH}/{job_id}")
        except UpstreamRejectedError:
            return None  # 404 / 1203: it never reached Kling
        return parse_model(KlingTask, envelope.data, provider=NAME)

    def _request(self, method: str, path: str, *, json: dict[str, Any] | None = None) -> KlingEnvelope:
        headers = {"Authorization": f"Bearer {self._bearer_token()}"}
        with map_transport_errors(NAME):
            response = self._http.request(method, path, json=json, headers=headers)
        data = json_body(response, provider=NAME)
        envelope = parse_model(KlingEnvelope, data, provider=NAME)
        if response.status_code == 200 and envelope.code == 0:
            return envelope
        raise _error_for(response, envelope)

    def _bearer_token(self) -> str:
        now = time.time()
        with self._token_lock:
            if now > self._token_expires - TOKEN_REFRESH_MARGIN_S:
                payload = {"iss": self._access_key, "exp": int(now) + TOKEN_TTL_S, "nbf": int(now) - 5}
                self._token = jwt.encode(payload, self._secret_key, algorithm="HS256", headers={"typ": "JWT"})
                self._token_expires = now + TOKEN_TTL_S
            return self._token


def _raw_base64(image: str) -> str:
    """Kling takes URLs or raw base64 without the ``data:`` prefix."""
    if image.startswith("data:") and "," in image:
        return image.split(",", 1)[1]
    return image


def _to_poll_result(task: KlingTask) -> PollResult:
    if task.task_status in ("submitted", "processing"):
        return PollResult(state=UpstreamState.PENDING)
    if task.task_status == "succeed":
        images = sorted(task.task_result.images if task.task_result else [], key=lambda image: image.index)
        if not images:
            error = UnexpectedResponseError("Kling reported success without images", provider=NAME)
            return PollResult(state=UpstreamState.FAILED, error=error)
        return PollResult(state=UpstreamState.SUCCEEDED, images=tuple(ResultImage(url=image.url) for image in images))
    message = task.task_status_msg or "Kling reported the task as failed"
    if any(word in message.lower() for word in _POLICY_WORDS):
        return PollResult(state=UpstreamState.FAILED, error=ContentPolicyError(message, provider=NAME))
    return PollResult(state=UpstreamState.FAILED, error=ProviderError(message, provider=NAME))


def _error_for(response: httpx.Response, envelope: KlingEnvelope) -> ProviderError:
    """Kling's service codes (reference §4.6) mapped onto our error tree."""
    code, message = envelope.code, f"Kling {envelope.code}: {envelope.message}"
    if code in (1000, 1001, 1002, 1003, 1004, 1103, 1304) or response.status_code in (401, 403):
        return ProviderAuthError(message, provider=NAME)
    if code in (1100, 1101, 1102):
        return QuotaExceededError(message, provider=NAME)
    if code in (1302, 1303) or response.status_code == 429:
        return RateLimitedError(message, provider=NAME, retry_after_s=retry_after_s(response))
    if code in (1300, 1301):
        return ContentPolicyError(message, provider=NAME)
    if code >= 5000 or response.status_code >= 500:
        return TransientProviderError(message, provider=NAME)
    return UpstreamRejectedError(message, provider=NAME)
