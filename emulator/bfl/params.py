"""Validation of BFL submit bodies (``POST /v1/{model}``), per endpoint, with FastAPI's 422 error items.

Each endpoint is either sized by ``width``/``height`` (multiples of 32 for FLUX.1, 16 for FLUX.2) or by an
``aspect_ratio`` between 21:9 and 9:21 (Kontext ~1 MP, Ultra ~4 MP). Input images are URLs (never fetched)
or raw base64 of a PNG/JPEG/WebP; a data URI is refused (the adapter must strip it). Unknown keys are ignored,
as pydantic request models do by default. Source: BFL's API reference, https://docs.bfl.ai/.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from PIL import Image, UnidentifiedImageError

from emulator.render import ImageFormat

Sizing = Literal["dimensions", "aspect_ratio"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What one ``/v1/{model}`` endpoint accepts."""

    sizing: Sizing
    multiple: int = 32
    min_side: int = 256
    max_side: int = 1440
    default_size: tuple[int, int] = (1024, 768)
    default_ratio: str = "1:1"
    megapixels: float = 1.0
    prompt_required: bool = True
    input_images: int = 0  # input_image, input_image_2 … input_image_N
    image_prompt: bool = False
    max_safety: int = 6
    reports_cost: bool = False  # FLUX.2 answers cost / input_mp / output_mp


_FLUX1 = Endpoint(sizing="dimensions", prompt_required=False, image_prompt=True)
_FLUX2 = Endpoint(
    sizing="dimensions",
    multiple=16,
    max_side=2048,
    default_size=(1024, 1024),
    input_images=8,
    max_safety=5,
    reports_cost=True,
)
_KONTEXT = Endpoint(sizing="aspect_ratio", input_images=1)

ENDPOINTS: dict[str, Endpoint] = {
    "flux-pro-1.1": _FLUX1,
    "flux-pro": _FLUX1,
    "flux-dev": _FLUX1,
    "flux-pro-1.1-ultra": Endpoint(sizing="aspect_ratio", default_ratio="16:9", megapixels=4.0, image_prompt=True),
    "flux-kontext-pro": _KONTEXT,
    "flux-kontext-max": _KONTEXT,
    "flux-2-pro": _FLUX2,
    "flux-2-pro-preview": _FLUX2,
    "flux-2-max": _FLUX2,
    "flux-2-flex": replace(_FLUX2, input_images=10),
}
_RATIO_LIMIT = 21 / 9


class BflParamError(ValueError):
    """One FastAPI validation item: ``{"type", "loc": ["body", field], "msg", "input"}``."""

    def __init__(self, field: str, message: str, value: Any, *, kind: str = "value_error") -> None:
        super().__init__(message)
        self.item = {"type": kind, "loc": ["body", field], "msg": message, "input": value}


@dataclass(frozen=True, slots=True)
class BflRequest:
    model: str
    prompt: str
    width: int
    height: int
    seed: int | None
    output_format: ImageFormat
    input_images: int

    @property
    def output_megapixels(self) -> float:
        return self.width * self.height / 1_000_000


def _int(body: Mapping[str, Any], key: str, low: int, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BflParamError(key, "Input should be a valid integer", value, kind="int_type")
    if not low <= value <= high:
        raise BflParamError(key, f"Input should be between {low} and {high}", value, kind="value_error")
    return value


def _ratio(body: Mapping[str, Any], endpoint: Endpoint) -> tuple[int, int]:
    value = body.get("aspect_ratio")
    raw = endpoint.default_ratio if value is None else value
    if not isinstance(raw, str):
        raise BflParamError("aspect_ratio", "Input should be a valid string", value, kind="string_type")
    w, sep, h = raw.partition(":")
    if not (sep and w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
        raise BflParamError("aspect_ratio", "Aspect ratio must be in the format 'W:H'", value)
    if not 1 / _RATIO_LIMIT - 1e-9 <= int(w) / int(h) <= _RATIO_LIMIT + 1e-9:
        raise BflParamError("aspect_ratio", "Aspect ratio must be between 21:9 and 9:21", value)
    return int(w), int(h)


def _size_for_ratio(w: int, h: int, megapixels: float) -> tuple[int, int]:
    """The output size of an aspect-ratio endpoint: about ``megapixels`` MP in multiples of 32."""
    ratio = w / h
    pixels = megapixels * 1024 * 1024
    width = max(32, round(math.sqrt(pixels * ratio) / 32) * 32)
    return width, max(32, round(width / ratio / 32) * 32)


def _dimensions(body: Mapping[str, Any], endpoint: Endpoint) -> tuple[int, int]:
    sides = []
    for key, default in zip(("width", "height"), endpoint.default_size, strict=True):
        value = _int(body, key, endpoint.min_side, endpoint.max_side)
        value = default if value is None else value
        if value % endpoint.multiple:
            raise BflParamError(key, f"Input should be a multiple of {endpoint.multiple}", value)
        sides.append(value)
    return sides[0], sides[1]


def _check_image(key: str, value: Any) -> None:
    if not isinstance(value, str):
        raise BflParamError(key, "Input should be a valid string", value, kind="string_type")
    if value.startswith(("http://", "https://")):
        return
    try:
        raw = base64.b64decode(value, validate=True)
        with Image.open(io.BytesIO(raw)) as picture:
            ok = picture.format in ("PNG", "JPEG", "WEBP")
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError):
        ok = False
    if not ok:
        raise BflParamError(key, "Input should be a URL or a base64-encoded PNG, JPEG or WebP image", value[:64])


def _input_images(body: Mapping[str, Any], endpoint: Endpoint) -> int:
    count = 0
    names = ["input_image", *(f"input_image_{i}" for i in range(2, endpoint.input_images + 1))]
    for key in names[: endpoint.input_images]:
        if body.get(key) is not None:
            _check_image(key, body[key])
            count += 1
    if endpoint.image_prompt and body.get("image_prompt") is not None:
        _check_image("image_prompt", body["image_prompt"])
        count += 1
    return count


def parse_submit(model: str, endpoint: Endpoint, body: Mapping[str, Any]) -> BflRequest:
    """Validate ``body`` for ``endpoint``; raises ``BflParamError`` for the first bad field."""
    prompt = body.get("prompt")
    if prompt is None and endpoint.prompt_required:
        raise BflParamError("prompt", "Field required", None, kind="missing")
    if prompt is not None and not isinstance(prompt, str):
        raise BflParamError("prompt", "Input should be a valid string", prompt, kind="string_type")
    if endpoint.sizing == "dimensions":
        width, height = _dimensions(body, endpoint)
    else:
        width, height = _size_for_ratio(*_ratio(body, endpoint), endpoint.megapixels)
    seed = _int(body, "seed", -(2**63), 2**63 - 1)
    _int(body, "safety_tolerance", 0, endpoint.max_safety)
    output_format = body.get("output_format")
    output_format = "jpeg" if output_format is None else output_format
    if output_format not in ("jpeg", "png"):
        raise BflParamError("output_format", "Input should be 'jpeg' or 'png'", output_format, kind="enum")
    for flag in ("prompt_upsampling", "raw"):
        if body.get(flag) is not None and not isinstance(body[flag], bool):
            raise BflParamError(flag, "Input should be a valid boolean", body[flag], kind="bool_type")
    return BflRequest(
        model=model,
        prompt=prompt or "",
        width=width,
        height=height,
        seed=seed,
        output_format="png" if output_format == "png" else "jpeg",
        input_images=_input_images(body, endpoint),
    )
