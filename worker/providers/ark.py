"""ByteDance Ark (Seedream) images: synchronous ``POST /api/v3/images/generations``, ``Authorization: Bearer``.

Our fields become Ark's (reference §3.3): ``aspect_ratio`` (alone, or with a size tier) → Seedream's
recommended ``WxH`` for that ratio; ``n`` > 1 → ``sequential_image_generation="auto"`` with ``max_images=n``
(Seedream has no ``n``; the model may deliver fewer); every reference image (``image``, ``image_url``,
``image_urls``, ``images``) → Ark's ``image``, as a URL or a ``data:image/<fmt>;base64,`` URI. We always ask
for ``b64_json`` and ``watermark=false``; other parameters (``seed``, ``guidance_scale``, ``output_format``)
pass through unchanged. Within a group, an image that failed moderation is reported in its slot and the
others are kept.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict

from shared.config import ArkSettings
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
from worker.inputs import ImageLoader, InputImageError
from worker.providers._http import ErrorReading, Phase, call, error_body, make_client, reason_or_body
from worker.providers._images import decode_base64
from worker.providers.base import Completed, JobSpec, ProviderFacts, ResultImage, Submission

NAME = "ark"
FACTS = ProviderFacts(name=NAME, asynchronous=False)
GENERATIONS_PATH = "/api/v3/images/generations"
IMAGE_FIELDS = ("image", "image_url", "image_urls", "images")
#: our fields that are translated rather than passed through
_TRANSLATED = frozenset({"prompt", "n", "size", "aspect_ratio", *IMAGE_FIELDS})
#: no allowance left (https://www.volcengine.com/docs/82379/1299023): the account is in arrears, its free
#: quota for the model is used up, or the owner's own spending cap is reached. Waiting cures none of them.
_QUOTA_CODES = ("AccountOverdueError", "QuotaExceeded", "SetLimitExceeded")
#: per-minute throttling (endpoint or account RPM/TPM/IPM) and load shedding: waiting cures them
_RATE_CODES = ("ServerOverloaded",)
_ACCESS_CODES = ("AuthenticationError", "AccessDenied", "ModelNotOpen", "InvalidEndpointOrModel.ModelIDAccessDisabled")
_MODERATION_CODES = ("OutputImageRiskDetection", "ContentSecurityDetectionError")

# Seedream's recommended WxH per size tier and aspect ratio: 1K is Seedream 3.0's table, 2K Ark's table for 4.0
# (reference §3.3); 3K and 4K follow the BytePlus gateways' tables, kept within each tier's pixel limit.
_RATIOS = ("1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3", "21:9")
_SIZES: dict[str, dict[str, str]] = {
    tier: dict(zip(_RATIOS, sizes.split(), strict=True))
    for tier, sizes in {
        "1K": "1024x1024 1152x864 864x1152 1280x720 720x1280 1248x832 832x1248 1512x648",
        "2K": "2048x2048 2304x1728 1728x2304 2560x1440 1440x2560 2496x1664 1664x2496 3024x1296",
        "3K": "3072x3072 3456x2592 2592x3456 4096x2304 2304x4096 3744x2496 2496x3744 4620x1980",
        "4K": "4096x4096 4704x3520 3520x4704 5504x3040 3040x5504 4992x3328 3328x4992 6240x2656",
    }.items()
}


class SequentialOptions(BaseModel):
    max_images: int


class ArkImagesRequest(BaseModel):
    """The request body; extra fields are the pass-through parameters."""

    model_config = ConfigDict(extra="allow")

    model: str
    prompt: str
    size: str | None = None
    image: str | list[str] | None = None
    sequential_image_generation: Literal["auto", "disabled"] | None = None
    sequential_image_generation_options: SequentialOptions | None = None
    response_format: Literal["url", "b64_json"] = "b64_json"
    watermark: bool = False


_REQUEST_FIELDS = frozenset(ArkImagesRequest.model_fields)


class ArkError(BaseModel):
    code: str = ""
    message: str = ""
    param: str | None = None
    type: str | None = None


class ArkImage(BaseModel):
    url: str | None = None
    b64_json: str | None = None
    size: str | None = None
    #: this slot of a group failed (e.g. output moderation); the others are kept
    error: ArkError | None = None


class ArkUsage(BaseModel):
    generated_images: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


class ArkImagesResponse(BaseModel):
    model: str | None = None
    created: int | None = None
    data: list[ArkImage] = []
    usage: ArkUsage | None = None
    error: ArkError | None = None


class ArkErrorBody(BaseModel):
    error: ArkError


class ArkProvider:
    """Seedream text-to-image, reference images and image groups."""

    name = NAME

    def __init__(
        self, settings: ArkSettings, *, http: httpx.Client | None = None, images: ImageLoader | None = None
    ) -> None:
        assert settings.base_url and settings.api_key  # filled by Settings
        self._images = images
        self._http = http or make_client(base_url=settings.base_url, timeout_s=settings.timeout_s)
        self._auth = {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"}

    def submit(self, spec: JobSpec) -> Submission:
        body = self._request(spec).model_dump(exclude_none=True)
        parsed = call(
            self._http,
            "POST",
            GENERATIONS_PATH,
            ArkImagesResponse,
            provider=NAME,
            phase=Phase.SUBMIT,
            read_error=read_error,
            json=body,
            headers=self._auth,
        )
        served = parsed.model if parsed.model and parsed.model != spec.upstream_model else None
        return Completed(images=_result_images(parsed), served_model=served)

    def close(self) -> None:
        self._http.close()

    def _request(self, spec: JobSpec) -> ArkImagesRequest:
        params = spec.params
        n = params.get("n", 1)
        group = isinstance(n, int) and n > 1
        references = [self._reference(ref) for name in IMAGE_FIELDS for ref in _as_list(params.get(name))]
        passthrough = {
            key: value for key, value in params.items() if key not in _TRANSLATED and key not in _REQUEST_FIELDS
        }
        return ArkImagesRequest(
            model=spec.upstream_model,
            prompt=str(params.get("prompt", "")),
            size=_upstream_size(params.get("size"), params.get("aspect_ratio"), spec.upstream_model),
            image=(references[0] if len(references) == 1 else references) or None,
            sequential_image_generation="auto" if group else None,
            sequential_image_generation_options=SequentialOptions(max_images=n) if group else None,
            **passthrough,
        )

    def _reference(self, ref: str) -> str:
        """Ark takes URLs (it fetches them) or data URIs with the real, lower-case format."""
        if ref.startswith(("http://", "https://")):
            return ref
        if self._images is None:
            raise InputImageError("a base64 input image needs an image loader", provider=NAME)
        return self._images.load(ref).data_uri()


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(item) for item in value] if isinstance(value, list) else [str(value)]


def _upstream_size(size: Any, aspect_ratio: Any, model: str) -> str | None:
    """A tier (``2K``), ``WxH``, or the recommended ``WxH`` of ``aspect_ratio`` at the tier or model default."""
    tier = size.upper() if isinstance(size, str) and size.upper() in _SIZES else None
    if isinstance(aspect_ratio, str):
        default_tier = "1K" if "seedream-3-0" in model else "2K"  # 3.0 takes WxH up to 2048 only
        mapped = _SIZES[tier or default_tier].get(aspect_ratio)
        if mapped is None:
            raise UpstreamRejectedError(f"Ark has no size for aspect_ratio '{aspect_ratio}'", provider=NAME)
        return mapped
    if tier is not None:
        return tier
    return size.lower() if isinstance(size, str) else None


def _result_images(parsed: ArkImagesResponse) -> tuple[ResultImage, ...]:
    images: list[ResultImage] = []
    failed: list[ArkError] = []
    for item in parsed.data:
        if item.b64_json is not None:
            images.append(ResultImage(data=decode_base64(item.b64_json, provider=NAME, label="Ark")))
        elif item.url is not None:
            images.append(ResultImage(url=item.url))
        elif item.error is not None:
            failed.append(item.error)
        else:
            raise UnexpectedResponseError("Ark answered an image with neither b64_json nor url", provider=NAME)
    if images:
        return tuple(images)
    error = parsed.error or (failed[0] if failed else None)
    if error is not None:
        # a failed slot of a 200 answer: what its code names, else worth another try
        kind = kind_of_code(error.code) or TransientProviderError
        raise kind(_describe(200, error), provider=NAME)
    raise UnexpectedResponseError("Ark answered without images", provider=NAME)


def kind_of_code(code: str) -> type[ProviderError] | None:
    """The class an Ark error code names (https://www.volcengine.com/docs/82379/1299023); None: the HTTP status
    decides."""
    if code in _QUOTA_CODES:
        return QuotaExceededError
    if code in _ACCESS_CODES:
        return ProviderAuthError
    if code.startswith("RateLimitExceeded") or code.endswith("RateLimitExceeded") or code in _RATE_CODES:
        return RateLimitedError
    if "SensitiveContentDetected" in code or code in _MODERATION_CODES:
        return ContentPolicyError
    return None


def read_error(response: httpx.Response) -> ErrorReading:
    """Ark's ``{"error": {code, message, param}}`` on top of the HTTP status."""
    body = error_body(response, ArkErrorBody)
    if body is None:
        return ErrorReading(f"Ark {response.status_code}: {reason_or_body(response)}")
    error = body.error
    if not error.message:
        error = error.model_copy(update={"message": reason_or_body(response)})
    return ErrorReading(_describe(response.status_code, error), kind=kind_of_code(error.code))


def _describe(status: int, error: ArkError) -> str:
    if error.param:
        return f"Ark rejected the parameter '{error.param}' ({error.code or 'error'}): {error.message}"
    return f"Ark {status} {error.code or 'error'}: {error.message}".rstrip(": ")
