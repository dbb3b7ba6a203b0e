"""Kling request bodies (legacy /v1 API): the task request every endpoint parses into, the field checks they
share, and ``POST /v1/images/generations``.

Every problem raises ``KlingParamError`` with a message naming the field; the route answers it as
HTTP 400, service code 1201. Unknown keys are ignored, as the upstream does. The other endpoints' bodies are
parsed in ``kling_multi_image``, ``kling_expand``, ``kling_try_on`` and ``kling_omni``.
"""

from __future__ import annotations

import binascii
import io
import math
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

MODELS = ("kling-v1", "kling-v1-5", "kling-v2", "kling-v2-new", "kling-v2-1", "kling-v3")
ASPECT_RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3", "21:9")
RESOLUTIONS = ("1k", "2k")
IMAGE_REFERENCES = ("subject", "face")
MAX_PROMPT = 2500
MAX_IMAGE_BYTES = 10 * 1024 * 1024
MIN_IMAGE_SIDE = 300
MAX_IMAGE_RATIO = 2.5

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
    """What one task was asked for, whatever its endpoint: its images, their shape, cost and concurrency."""

    model_name: str | None
    #: the text magic markers are read from: the prompt (try-on, which has none: its image URLs)
    scenario: str
    #: images the task delivers
    n: int
    #: result shape as (width, height) in any unit
    shape: tuple[float, float]
    units_per_image: int
    external_task_id: str | None
    callback_url: str | None
    #: which endpoint created the task (its tasks are queried under that path only)
    endpoint: str = "generations"
    #: the resource pack whose concurrency the task holds: "image" or "try-on"
    pool: str = "image"
    #: omni-image: "series" results are listed in ``task_result.series_images``
    result_type: str = "single"

    @property
    def units(self) -> int:
        """What the task deducts when it succeeds (``final_unit_deduction``)."""
        return self.n * self.units_per_image

    @property
    def slots(self) -> int:
        """Concurrency held while running: one per image (try-on: one per task)."""
        return 1 if self.pool == "try-on" else self.n


def string(body: dict[str, Any], key: str, *, max_len: int | None = None) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise KlingParamError(f"{key} must be a string")
    if max_len is not None and len(value) > max_len:
        raise KlingParamError(f"{key} must be at most {max_len} characters")
    return value


def choice(body: dict[str, Any], key: str, allowed: tuple[str, ...]) -> str | None:
    value = string(body, key)
    if value is None:
        return None
    if value not in allowed:
        raise KlingParamError(f"{key} is invalid: {value!r} is not one of {', '.join(allowed)}")
    return value


def number(body: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise KlingParamError(f"{key} must be a number")
    if not low <= value <= high:
        raise KlingParamError(f"{key} must be within [{low:g}, {high:g}]")
    return float(value)


def count(body: dict[str, Any], key: str = "n", *, low: int = 1, high: int = 9, default: int = 1) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise KlingParamError(f"{key} must be an integer")
    if not low <= value <= high:
        raise KlingParamError(f"{key} must be within [{low}, {high}]")
    return value


def object_list(body: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """An optional array of objects (``[]`` when absent)."""
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise KlingParamError(f"{key} must be an array of objects")
    return value


def check_image(image: str, field: str) -> tuple[int, int] | None:
    """Check an input image (URL or raw base64); its ``(width, height)`` when the bytes are a readable image.

    URLs are not fetched. Base64 that decodes to a readable image must be ≥ 300 px a side with an aspect
    ratio within 1:2.5–2.5:1, as Kling requires; bytes Pillow cannot read are taken as they are.
    """
    if image.startswith(("http://", "https://")):
        return None
    if image.startswith("data:"):
        raise KlingParamError(f"{field} must be raw base64 without a data: prefix, or a URL")
    try:
        raw = binascii.a2b_base64(image.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        raise KlingParamError(f"{field} is neither a URL nor valid base64") from None
    if len(raw) > MAX_IMAGE_BYTES:
        raise KlingParamError(f"{field} must be at most 10MB")
    try:
        with Image.open(io.BytesIO(raw)) as picture:
            width, height = picture.size
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    if min(width, height) < MIN_IMAGE_SIDE:
        raise KlingParamError(
            f"{field} must be at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels, got {width}x{height}"
        )
    if max(width, height) > MAX_IMAGE_RATIO * min(width, height):
        raise KlingParamError(f"{field} aspect ratio must be within 1:2.5 and 2.5:1, got {width}x{height}")
    return width, height


def shape_of(aspect_ratio: str) -> tuple[float, float]:
    width, _, height = aspect_ratio.partition(":")
    return float(width), float(height)


def parse_submit(body: dict[str, Any]) -> KlingImageRequest:
    """Validate a ``POST /v1/images/generations`` body (already decoded into a JSON object)."""
    # `model` is the field's legacy name, still accepted.
    model_name = choice(body, "model_name", MODELS) or choice(body, "model", MODELS) or "kling-v1"
    prompt = string(body, "prompt", max_len=MAX_PROMPT)
    if not prompt:
        raise KlingParamError("prompt is required")
    negative_prompt = string(body, "negative_prompt", max_len=MAX_PROMPT)
    image = string(body, "image")
    if image:
        check_image(image, "image")
    if image and negative_prompt:
        raise KlingParamError("negative_prompt is not supported when image is set")
    if choice(body, "image_reference", IMAGE_REFERENCES) and not image:
        raise KlingParamError("image is required when image_reference is set")
    number(body, "image_fidelity", 0.0, 1.0)
    number(body, "human_fidelity", 0.0, 1.0)
    resolution = choice(body, "resolution", RESOLUTIONS) or "1k"
    aspect_ratio = choice(body, "aspect_ratio", ASPECT_RATIOS) or "16:9"
    if model_name == "kling-v1" and aspect_ratio == "21:9":
        raise KlingParamError("aspect_ratio 21:9 is not supported by kling-v1")
    if model_name == "kling-v2-new" and (not image or resolution != "1k"):
        raise KlingParamError("model_name kling-v2-new needs image and supports resolution 1k only")
    text_to_image, image_to_image = _UNITS[model_name]
    return KlingImageRequest(
        model_name=model_name,
        scenario=prompt,
        n=count(body),
        shape=shape_of(aspect_ratio),
        units_per_image=image_to_image if image else text_to_image,
        external_task_id=string(body, "external_task_id") or None,
        callback_url=string(body, "callback_url"),
    )
