"""Kling image APIs (legacy ``/v1``): async tasks, AK/SK → HS256 JWT.

The job's operation chooses the endpoint (``ENDPOINTS``): text2img / img2img → ``/v1/images/generations``,
multi-img → ``/v1/images/multi-image2image``, expand → ``/v1/images/editing/expand``, try-on →
``/v1/images/kolors-virtual-try-on``, omni → ``/v1/images/omni-image``. All five share the envelope, statuses
and result location (omni series results: ``task_result.series_images``).

Upstream ids: a Kling task is queried under the path of the endpoint that created it, so the id we hand back
(the job's ``upstream_task_id``) names the endpoint: ``"<endpoint key>:<task_id>"``, e.g.
``"omni-image:8623…"``. Generations tasks keep the bare task id (as before other endpoints existed, so ids of
jobs already running stay valid): an id without a known ``<key>:`` prefix is a generations task id.

Our job id is sent as ``external_task_id``, so a submit that may already have reached Kling is first
looked up by that id (under the operation's endpoint) instead of being repeated. When upstream callbacks are
on, our ``/internal/callbacks/kling/…`` URL goes as ``callback_url``: Kling calls it on every status change.

Input images go to Kling as it takes them: URLs as they are, data URIs as raw base64 (no ``data:`` prefix).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

import httpx
import jwt
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from shared.config import KlingSettings
from shared.errors import (
    ContentPolicyError,
    PermanentProviderError,
    ProviderAuthError,
    ProviderError,
    QuotaExceededError,
    RateLimitedError,
    TransientProviderError,
    UnexpectedResponseError,
    UpstreamRejectedError,
)
from worker.inputs import ImageLoader
from worker.providers._http import (
    ErrorReading,
    Phase,
    answer_error,
    error_body,
    make_client,
    parse_answer,
    parse_data,
    plain_reading,
    send,
    upstream_reason,
)
from worker.providers._images import raw_base64
from worker.providers.base import (
    Accepted,
    JobSpec,
    PollResult,
    ProviderFacts,
    ResultImage,
    Submission,
    UpstreamState,
)

NAME = "kling"
#: the most slots one upstream task can take (an omni series of ``"auto"`` images)
MAX_SLOTS_PER_TASK: Final = 9


def slots_needed(spec: JobSpec) -> int:
    """Kling counts images in flight: an image task holds ``n`` slots, an omni series its ``series_amount``
    (``"auto"`` or unset: up to 9, so 9), a virtual try-on 1."""
    if spec.operation == "try-on":
        return 1
    if spec.operation == "omni" and spec.params.get("result_type") == "series":
        amount = spec.params.get("series_amount")
        return amount if isinstance(amount, int) and amount > 0 else MAX_SLOTS_PER_TASK
    return max(spec.image_count, 1)


def requests_needed(spec: JobSpec) -> float:
    """A re-submit first looks the job up by ``external_task_id``: two requests."""
    return 2.0 if spec.attempt > 1 else 1.0


FACTS: Final = ProviderFacts(
    name=NAME, asynchronous=True, calls_back=True, slots=slots_needed, requests=requests_needed
)
TOKEN_TTL_S = 1800
TOKEN_REFRESH_MARGIN_S = 300
_POLICY_WORDS = ("risk", "policy", "sensitive", "moderat", "security")
#: job parameters (upstream names) holding input images that the adapter moves into the endpoint's own field
_IMAGE_PARAMS = ("image", "image_urls", "images")


#: an input image as Kling takes it: a URL or raw base64 (a data URI loses its ``data:`` prefix)
ImageRef = Annotated[str, AfterValidator(raw_base64)]


# -- request models -----------------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    external_task_id: str
    #: our callback URL: Kling POSTs the task to it on every status change (reference §4.7)
    callback_url: str | None = None


class GenerationRequest(_Body):
    """``POST /v1/images/generations``."""

    model_name: str
    prompt: str
    negative_prompt: str | None = None
    image: ImageRef | None = None
    image_reference: str | None = None
    image_fidelity: float | None = None
    human_fidelity: float | None = None
    resolution: str | None = None
    n: int | None = None
    aspect_ratio: str | None = None


class SubjectImage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject_image: ImageRef


class MultiImageRequest(_Body):
    """``POST /v1/images/multi-image2image``."""

    model_name: str
    prompt: str | None = None
    subject_image_list: list[SubjectImage]
    scene_image: ImageRef | None = None
    style_image: ImageRef | None = None
    n: int | None = None
    aspect_ratio: str | None = None


class ExpandRequest(_Body):
    """``POST /v1/images/editing/expand`` (the four ratios are required upstream; absent ones are 0)."""

    image: ImageRef
    up_expansion_ratio: float = 0.0
    down_expansion_ratio: float = 0.0
    left_expansion_ratio: float = 0.0
    right_expansion_ratio: float = 0.0
    prompt: str | None = None
    n: int | None = None


class TryOnRequest(_Body):
    """``POST /v1/images/kolors-virtual-try-on``."""

    model_name: str
    human_image: ImageRef
    cloth_image: ImageRef


class OmniImage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: ImageRef


class OmniElement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    element_id: int


class OmniRequest(_Body):
    """``POST /v1/images/omni-image``."""

    model_name: str
    prompt: str
    image_list: list[OmniImage] | None = None
    element_list: list[OmniElement] | None = None
    resolution: str | None = None
    result_type: str | None = None
    n: int | None = None
    series_amount: int | str | None = None
    aspect_ratio: str | None = None


# -- response models ----------------------------------------------------------------------------------------


class KlingImage(BaseModel):
    index: int = 0
    url: str


class KlingTaskResult(BaseModel):
    images: list[KlingImage] | None = None
    #: omni-image with ``result_type="series"``
    series_images: list[KlingImage] | None = None

    def delivered(self) -> list[KlingImage]:
        """The result images by index (a series' ``series_images`` when present)."""
        return sorted(self.series_images or self.images or [], key=lambda image: image.index)


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


# -- endpoints ----------------------------------------------------------------------------------------------


def _split_images(spec: JobSpec) -> tuple[dict[str, Any], list[str]]:
    """The job's parameters without the loose input images (``image``, ``image_urls``, ``images``), and those."""
    params = dict(spec.params)
    images: list[str] = []
    for name in _IMAGE_PARAMS:
        value = params.pop(name, None)
        if isinstance(value, str):
            images.append(value)
        elif isinstance(value, list):
            images.extend(value)
    return params, images


#: Kling's aspect ratios as width / height, for mapping an OpenAI-style ``size``
_ASPECT_RATIOS = {
    "16:9": 16 / 9,
    "9:16": 9 / 16,
    "1:1": 1.0,
    "4:3": 4 / 3,
    "3:4": 3 / 4,
    "3:2": 1.5,
    "2:3": 2 / 3,
    "21:9": 7 / 3,
}


def _apply_size(params: dict[str, Any]) -> dict[str, Any]:
    """``size`` (``WxH``, checked by the catalog) → the nearest Kling ``aspect_ratio``, unless one was given."""
    size = params.pop("size", None)
    if isinstance(size, str) and "x" in size and "aspect_ratio" not in params:
        width, height = (int(side) for side in size.split("x", 1))
        target = math.log(width / height)
        params["aspect_ratio"] = min(_ASPECT_RATIOS, key=lambda ratio: abs(math.log(_ASPECT_RATIOS[ratio]) - target))
    return params


def _generation(spec: JobSpec) -> dict[str, Any]:
    params, images = _split_images(spec)
    params = _apply_size(params)
    return {"model_name": spec.upstream_model, **params, "image": images[0] if images else None}


def _multi_image(spec: JobSpec) -> dict[str, Any]:
    params, images = _split_images(spec)
    params = _apply_size(params)
    subjects = [*params.pop("subject_image_list", []), *({"subject_image": image} for image in images)]
    return {"model_name": spec.upstream_model, **params, "subject_image_list": subjects}


def _expand(spec: JobSpec) -> dict[str, Any]:
    params, images = _split_images(spec)
    return {**params, "image": images[0] if images else None}


def _try_on(spec: JobSpec) -> dict[str, Any]:
    return {"model_name": spec.upstream_model, **spec.params}


def _omni(spec: JobSpec) -> dict[str, Any]:
    params, images = _split_images(spec)
    params = _apply_size(params)
    references = [*params.pop("image_list", []), *({"image": image} for image in images)]
    return {"model_name": spec.upstream_model, **params, "image_list": references or None}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One Kling task API: the key naming it in upstream ids, its path, and how a job becomes its body."""

    key: str
    path: str
    request: type[_Body]
    #: the job's parameters arranged in the endpoint's fields (``model_name`` from the job's upstream model,
    #: unless a parameter maps onto it)
    arrange: Callable[[JobSpec], dict[str, Any]]

    def body(self, spec: JobSpec) -> dict[str, Any]:
        """The request body; a parameter the endpoint does not take is refused, naming it."""
        fields = {key: value for key, value in self.arrange(spec).items() if value is not None}
        try:
            request = self.request.model_validate(
                {**fields, "external_task_id": spec.job_id, "callback_url": spec.callback_url}
            )
        except ValidationError as exc:
            names = sorted({".".join(map(str, error["loc"])) for error in exc.errors()})
            raise UpstreamRejectedError(
                f"Kling {self.path} cannot take the job's parameters: {', '.join(names)}", provider=NAME
            ) from None
        return request.model_dump(exclude_none=True)


GENERATIONS = Endpoint("generations", "/v1/images/generations", GenerationRequest, _generation)
MULTI_IMAGE = Endpoint("multi-image2image", "/v1/images/multi-image2image", MultiImageRequest, _multi_image)
EXPAND = Endpoint("expand", "/v1/images/editing/expand", ExpandRequest, _expand)
TRY_ON = Endpoint("kolors-virtual-try-on", "/v1/images/kolors-virtual-try-on", TryOnRequest, _try_on)
OMNI = Endpoint("omni-image", "/v1/images/omni-image", OmniRequest, _omni)

#: catalog operation → endpoint
ENDPOINTS: Final[Mapping[str, Endpoint]] = {
    "text2img": GENERATIONS,
    "img2img": GENERATIONS,
    "multi-img": MULTI_IMAGE,
    "expand": EXPAND,
    "try-on": TRY_ON,
    "omni": OMNI,
}
_BY_KEY: Final[Mapping[str, Endpoint]] = {endpoint.key: endpoint for endpoint in ENDPOINTS.values()}


def encode_upstream_id(endpoint: Endpoint, task_id: str) -> str:
    """``"<key>:<task_id>"``; generations tasks: the bare task id."""
    return task_id if endpoint is GENERATIONS else f"{endpoint.key}:{task_id}"


def decode_upstream_id(upstream_id: str) -> tuple[Endpoint, str]:
    """The endpoint and Kling task id of an upstream id (an id without a known prefix is a generations task)."""
    key, separator, task_id = upstream_id.partition(":")
    endpoint = _BY_KEY.get(key) if separator and task_id else None
    return (endpoint, task_id) if endpoint is not None else (GENERATIONS, upstream_id)


def endpoint_for(operation: str) -> Endpoint:
    endpoint = ENDPOINTS.get(operation)
    if endpoint is None:
        raise PermanentProviderError(f"Kling has no endpoint for operation {operation!r}", provider=NAME)
    return endpoint


# -- the adapter --------------------------------------------------------------------------------------------


class KlingProvider:
    """Kling image generation, multi-image, outpainting, virtual try-on and omni-image."""

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
        endpoint = endpoint_for(spec.operation)
        if spec.attempt > 1 and (existing := self._find_by_external_id(endpoint, spec.job_id)) is not None:
            return Accepted(upstream_id=encode_upstream_id(endpoint, existing.task_id))
        envelope = self._request("POST", endpoint.path, Phase.SUBMIT, json=endpoint.body(spec))
        task = parse_data(KlingTask, envelope.data, provider=NAME, phase=Phase.SUBMIT)
        return Accepted(upstream_id=encode_upstream_id(endpoint, task.task_id))

    def poll(self, upstream_id: str) -> PollResult:
        endpoint, task_id = decode_upstream_id(upstream_id)
        envelope = self._request("GET", f"{endpoint.path}/{task_id}", Phase.POLL)
        return _to_poll_result(parse_data(KlingTask, envelope.data, provider=NAME, phase=Phase.POLL))

    def close(self) -> None:
        self._http.close()

    def _find_by_external_id(self, endpoint: Endpoint, job_id: str) -> KlingTask | None:
        """The task an earlier attempt may have created (a lookup: an unreadable answer is transient, and the
        submit is tried again rather than repeated blind)."""
        try:
            envelope = self._request("GET", f"{endpoint.path}/{job_id}", Phase.POLL)
        except UpstreamRejectedError:
            return None  # 404 / 1203: it never reached Kling
        return parse_data(KlingTask, envelope.data, provider=NAME, phase=Phase.POLL)

    def _request(self, method: str, path: str, phase: Phase, *, json: dict[str, Any] | None = None) -> KlingEnvelope:
        """Status first: any status but 200 is an error whatever the body; a 200 must carry ``code: 0``."""
        headers = {"Authorization": f"Bearer {self._bearer_token()}"}
        response = send(self._http, method, path, provider=NAME, json=json, headers=headers)
        if response.status_code != 200:
            raise answer_error(response, provider=NAME, phase=phase, read_error=read_error)
        envelope = parse_answer(response, KlingEnvelope, provider=NAME, phase=phase)
        if envelope.code != 0:
            raise answer_error(response, provider=NAME, phase=phase, read_error=read_error)
        return envelope

    def _bearer_token(self) -> str:
        now = time.time()
        with self._token_lock:
            if now > self._token_expires - TOKEN_REFRESH_MARGIN_S:
                payload = {"iss": self._access_key, "exp": int(now) + TOKEN_TTL_S, "nbf": int(now) - 5}
                self._token = jwt.encode(payload, self._secret_key, algorithm="HS256", headers={"typ": "JWT"})
                self._token_expires = now + TOKEN_TTL_S
            return self._token


def _to_poll_result(task: KlingTask) -> PollResult:
    if task.task_status in ("submitted", "processing"):
        return PollResult(state=UpstreamState.PENDING)
    if task.task_status == "succeed":
        images = task.task_result.delivered() if task.task_result else []
        if not images:
            error = UnexpectedResponseError("Kling reported success without images", provider=NAME)
            return PollResult(state=UpstreamState.FAILED, error=error)
        return PollResult(state=UpstreamState.SUCCEEDED, images=tuple(ResultImage(url=image.url) for image in images))
    message = task.task_status_msg or "Kling reported the task as failed"
    if any(word in message.lower() for word in _POLICY_WORDS):
        return PollResult(state=UpstreamState.FAILED, error=ContentPolicyError(message, provider=NAME))
    return PollResult(state=UpstreamState.FAILED, error=ProviderError(message, provider=NAME))


#: Kling's service codes (the error-code table of https://app.klingai.com/global/dev/document-api)
_AUTH_CODES = frozenset({1000, 1001, 1002, 1003, 1004, 1103, 1304})
#: account exception, in arrears, resource pack depleted or expired: no allowance left, waiting will not help
_QUOTA_CODES = frozenset({1100, 1101, 1102})
#: too fast, or more parallel tasks than the resource pack allows: throttling, which waiting cures
_RATE_CODES = frozenset({1302, 1303})
_POLICY_CODES = frozenset({1300, 1301})


def kind_of_code(code: int) -> type[ProviderError] | None:
    """The class a Kling service code names; None: the HTTP status decides."""
    if code in _AUTH_CODES:
        return ProviderAuthError
    if code in _QUOTA_CODES:
        return QuotaExceededError
    if code in _RATE_CODES:
        return RateLimitedError
    if code in _POLICY_CODES:
        return ContentPolicyError
    if code >= 5000:
        return TransientProviderError
    if 1200 <= code < 1300:
        return UpstreamRejectedError
    return None


def read_error(response: httpx.Response) -> ErrorReading:
    """Kling's envelope ``{code, message, data}`` when the body is one; otherwise the status decides alone."""
    envelope = error_body(response, KlingEnvelope)
    if envelope is None:
        return plain_reading("Kling", response)
    task = envelope.data if isinstance(envelope.data, dict) else {}
    status_msg = task.get("task_status_msg") if isinstance(task.get("task_status_msg"), str) else None
    said = envelope.message or status_msg or upstream_reason(response) or "no message"
    if status_msg and status_msg not in said:
        said = f"{said} ({status_msg})"  # a task body on an error status: the task's own reason too
    return ErrorReading(f"Kling {envelope.code}: {said}", kind=kind_of_code(envelope.code))
