"""Validation of Kling's ``POST /v1/images/generations`` body (legacy /v1 API).

Every problem raises ``KlingParamError`` with a message naming the field; the route answers it as
HTTP 400, service code 1201. Unknown keys are ignored, as the upstream does.
"""

from __future__ import annotations

import binascii
import math
from dataclasses import dataclass
from typing import Any

MODELS = ("kling-v1", "kling-v1-5", "kling-v2", "kling-v2-new", "kling-v2-1", "kling-v3")
ASPECT_RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3", "21:9")
RESOLUTIONS = ("1k", "2k")
IMAGE_REFERENCES = ("subject", "face")
MAX_PROMPT = 2500
MAX_IMAGE_BYTES = 10 * 1024 * 1024

# Units per image (text-to-image, image-to-image), from Kling's pricing page.
_UNITS: dict[str, tuple[int, int]] = {
    "kling-v1": (1, 1),
    "kling-v1-5": (4, 8),
    "kling-v2": (4, 8),
    "kling-v2-new": (8, 8),
    "kling-v2-1": (4, 8),
    "kling-v3": (8, 8),
}


class KlingParamError(ValueError):
    """An invalid request parameter (HTTP 400, code 1201)."""


@dataclass(frozen=True, slots=True)
class KlingImageRequest:
    model_name: str
    prompt: str
    n: int
    aspect_ratio: str
    resolution: str
    has_image: bool
    external_task_id: str | None
    callback_url: str | None

    @property
    def units(self) -> int:
        """What the task will deduct when it succeeds (``final_unit_deduction``)."""
        text_to_image, image_to_image = _UNITS[self.model_name]
        return self.n * (image_to_image if self.has_image else text_to_image)


def _string(body: dict[str, Any], key: str, *, max_len: int | None = None) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise KlingParamError(f"{key} must be a string")
    if max_len is not None and len(value) > max_len:
        raise KlingParamError(f"{key} must be at most {max_len} characters")
    return value


def _choice(body: dict[str, Any], key: str, allowed: tuple[str, ...]) -> str | None:
    value = _string(body, key)
    if value is None:
        return None
    if value not in allowed:
        raise KlingParamError(f"{key} is invalid: {value!r} is not one of {', '.join(allowed)}")
    return value


def _fraction(body: dict[str, Any], key: str) -> None:
    value = body.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise KlingParamError(f"{key} must be a number")
    if not 0.0 <= value <= 1.0:
        raise KlingParamError(f"{key} must be within [0, 1]")


def _count(body: dict[str, Any]) -> int:
    value = body.get("n", 1)
    if isinstance(value, bool) or not isinstance(value, int):
        raise KlingParamError("n must be an integer")
    if not 1 <= value <= 9:
        raise KlingParamError("n must be within [1, 9]")
    return value


def _check_image(image: str) -> None:
    if image.startswith(("http://", "https://")):
        return
    if image.startswith("data:"):
        raise KlingParamError("image must be raw base64 without a data: prefix, or a URL")
    try:
        raw = binascii.a2b_base64(image.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        raise KlingParamError("image is neither a URL nor valid base64") from None
    if len(raw) > MAX_IMAGE_BYTES:
        raise KlingParamError("image must be at most 10MB")


def parse_submit(body: dict[str, Any]) -> KlingImageRequest:
    """Validate a submit body (already decoded into a JSON object)."""
    # `model` is the field's legacy name, still accepted.
    model_name = _choice(body, "model_name", MODELS) or _choice(body, "model", MODELS) or "kling-v1"
    prompt = _string(body, "prompt", max_len=MAX_PROMPT)
    if not prompt:
        raise KlingParamError("prompt is required")
    negative_prompt = _string(body, "negative_prompt", max_len=MAX_PROMPT)
    image = _string(body, "image")
    if image:
        _check_image(image)
    if image and negative_prompt:
        raise KlingParamError("negative_prompt is not supported when image is set")
    if _choice(body, "image_reference", IMAGE_REFERENCES) and not image:
        raise KlingParamError("image is required when image_reference is set")
    _fraction(body, "image_fidelity")
    _fraction(body, "human_fidelity")
    resolution = _choice(body, "resolution", RESOLUTIONS) or "1k"
    aspect_ratio = _choice(body, "aspect_ratio", ASPECT_RATIOS) or "16:9"
    if model_name == "kling-v1" and aspect_ratio == "21:9":
        raise KlingParamError("aspect_ratio 21:9 is not supported by kling-v1")
    if model_name == "kling-v2-new" and (not image or resolution != "1k"):
        raise KlingParamError("model_name kling-v2-new needs image and supports resolution 1k only")
    external_task_id = _string(body, "external_task_id")
    return KlingImageRequest(
        model_name=model_name,
        prompt=prompt,
        n=_count(body),
        aspect_ratio=aspect_ratio,
        resolution=resolution,
        has_image=bool(image),
        external_task_id=external_task_id or None,
        callback_url=_string(body, "callback_url"),
    )
