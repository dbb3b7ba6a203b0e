"""Validation of Ark's ``POST /api/v3/images/generations`` body, per Seedream model.

The rules are those of Ark's image generation API (https://www.volcengine.com/docs/82379).

Every problem raises ``ArkParamError`` carrying Ark's error ``code`` and the offending ``param``; the route
answers ``{"error": {"code", "message", "param", "type"}}`` (400 ``BadRequest``; 404 ``NotFound`` for an
unknown model). Parameters a model does not support are refused naming them. Unknown keys are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from emulator.ark.images import ArkImageError, check_reference_image

MAX_REFERENCE_IMAGES = 14
MAX_GROUP = 15  # reference images + generated images
MAX_SEED = 2_147_483_647


class ArkParamError(ValueError):
    def __init__(self, message: str, param: str, *, code: str = "InvalidParameter", status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status


@dataclass(frozen=True, slots=True)
class Family:
    """What one Seedream generation accepts."""

    name: str
    #: size tier → the side of its 1:1 image
    tiers: Mapping[str, int]
    #: ``WxH``: total pixels, each side, and the long/short ratio
    pixels: tuple[int, int]
    sides: tuple[int, int]
    max_ratio: float
    default_size: tuple[int, int]
    seed_and_guidance: bool
    reference_images: bool
    sequential: bool
    optimize_modes: tuple[str, ...]
    #: selectable ``output_format`` values; empty: fixed (the upstream's JPEG; the emulator renders PNG)
    output_formats: tuple[str, ...] = ()
    web_search: bool = False


_MP16 = 4096 * 4096
SEEDREAM_3_0 = Family(
    "seedream-3.0-t2i", {}, (512 * 512, 2048 * 2048), (512, 2048), 4.0, (1024, 1024),
    seed_and_guidance=True, reference_images=False, sequential=False, optimize_modes=(),
)  # fmt: skip
SEEDREAM_4_0 = Family(
    "seedream-4.0", {"1K": 1024, "2K": 2048, "4K": 4096}, (1280 * 720, _MP16), (1, _MP16), 16.0, (2048, 2048),
    seed_and_guidance=False, reference_images=True, sequential=True, optimize_modes=("standard", "fast"),
)  # fmt: skip
SEEDREAM_4_5 = Family(
    "seedream-4.5", {"2K": 2048, "4K": 4096}, (2560 * 1440, _MP16), (1, _MP16), 16.0, (2048, 2048),
    seed_and_guidance=False, reference_images=True, sequential=True, optimize_modes=("standard",),
)  # fmt: skip
# 5.0 lite: 2K/3K and at most 3072x3072 pixels per third-party gateway docs (UNVERIFIED: some sources add 4K).
SEEDREAM_5_0 = Family(
    "seedream-5.0-lite", {"2K": 2048, "3K": 3072}, (2560 * 1440, 3072 * 3072), (1, _MP16), 16.0, (2048, 2048),
    seed_and_guidance=False, reference_images=True, sequential=True, optimize_modes=("standard",),
    output_formats=("jpeg", "png"), web_search=True,
)  # fmt: skip

#: model ids on Volcengine (CN, ``doubao-`` prefix) and BytePlus (intl, the same ids without the prefix)
MODELS: dict[str, Family] = {
    "doubao-seedream-3-0-t2i-250415": SEEDREAM_3_0,
    "seedream-3-0-t2i-250415": SEEDREAM_3_0,
    "doubao-seedream-4-0-250828": SEEDREAM_4_0,
    "seedream-4-0-250828": SEEDREAM_4_0,
    "doubao-seedream-4-5-251128": SEEDREAM_4_5,
    "seedream-4-5-251128": SEEDREAM_4_5,
    "doubao-seedream-5-0-260128": SEEDREAM_5_0,
    "doubao-seedream-5-0-lite-260128": SEEDREAM_5_0,
    "seedream-5-0-260128": SEEDREAM_5_0,
}

ResponseFormat = Literal["url", "b64_json"]


@dataclass(frozen=True, slots=True)
class ArkImageRequest:
    model: str
    family: Family
    prompt: str
    width: int
    height: int
    #: images to generate: 1, or the group size of ``sequential_image_generation=auto``
    count: int
    reference_images: int
    response_format: ResponseFormat
    output_format: Literal["png", "jpeg"]
    watermark: bool

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


def _invalid(param: str, why: str) -> ArkParamError:
    return ArkParamError(f"The parameter `{param}` specified in the request is not valid: {why}.", param)


def _unsupported(param: str, model: str) -> ArkParamError:
    return _invalid(param, f"it is not supported by model {model}")


def _string(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise _invalid(key, "expected a string")
    return value


def _choice(body: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str | None:
    value = _string(body, key)
    if value is not None and value not in allowed:
        raise _invalid(key, f"'{value}' is not one of {', '.join(allowed)}")
    return value


def _bool(body: Mapping[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise _invalid(key, "expected a boolean")
    return value


def _number(body: Mapping[str, Any], key: str, low: float, high: float, *, integer: bool) -> None:
    value = body.get(key)
    if value is None:
        return
    kinds = int if integer else int | float
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise _invalid(key, "expected an integer" if integer else "expected a number")
    if not low <= value <= high:
        raise _invalid(key, f"expected a value in [{low:g}, {high:g}], got {value}")


def _model(body: Mapping[str, Any]) -> tuple[str, Family]:
    model = _string(body, "model")
    if not model:
        raise ArkParamError("The request failed because it is missing one or multiple required parameters.",
                            "model", code="MissingParameter")  # fmt: skip
    family = MODELS.get(model)
    if family is None:
        message = f"The model or endpoint {model} does not exist or you do not have access to it."
        raise ArkParamError(message, "model", code="InvalidEndpointOrModel.NotFound", status=404)
    return model, family


def parse_size(raw: str | None, family: Family, model: str) -> tuple[int, int]:
    """``(width, height)`` of the output: a tier (1:1 at the tier's size), ``WxH``, or the default."""
    if raw is None:
        return family.default_size
    if raw in family.tiers:
        return family.tiers[raw], family.tiers[raw]
    width_s, _, height_s = raw.partition("x")
    if not (width_s.isdigit() and height_s.isdigit()):
        forms = f"one of {', '.join(family.tiers)} or WIDTHxHEIGHT" if family.tiers else "WIDTHxHEIGHT"
        raise _invalid("size", f"'{raw}' is not {forms} for model {model}")
    width, height = int(width_s), int(height_s)
    low, high = family.sides
    if not (low <= width <= high and low <= height <= high):
        raise _invalid("size", f"each side must be within [{low}, {high}] for model {model}, got {raw}")
    pixels = width * height
    if not family.pixels[0] <= pixels <= family.pixels[1]:
        raise _invalid("size", f"total pixels must be within [{family.pixels[0]}, {family.pixels[1]}] "
                               f"for model {model}, got {raw} = {pixels}")  # fmt: skip
    if max(width, height) > family.max_ratio * min(width, height):
        raise _invalid("size", f"the aspect ratio must be within [1/{family.max_ratio:g}, {family.max_ratio:g}]")
    return width, height


def _reference_images(body: Mapping[str, Any], family: Family, model: str) -> int:
    value = body.get("image")
    if value is None:
        return 0
    if not family.reference_images:
        raise _unsupported("image", model)
    images = [value] if isinstance(value, str) else value
    if not isinstance(images, list) or not all(isinstance(item, str) for item in images) or not images:
        raise _invalid("image", "expected a string or a non-empty list of strings")
    if len(images) > MAX_REFERENCE_IMAGES:
        message = f"at most {MAX_REFERENCE_IMAGES} reference images are supported, got {len(images)}"
        raise ArkParamError(f"The parameter `image` specified in the request is not valid: {message}.", "image",
                            code="InvalidParameter.UnsupportedImageCount")  # fmt: skip
    for image in images:
        try:
            check_reference_image(image)
        except ArkImageError as exc:
            raise ArkParamError(f"The parameter `image` specified in the request is not valid: {exc.message}.",
                                "image", code=exc.code) from None  # fmt: skip
    return len(images)


def _group_size(body: Mapping[str, Any], family: Family, model: str, references: int) -> int:
    if not family.sequential:
        for key in ("sequential_image_generation", "sequential_image_generation_options"):
            if body.get(key) is not None:
                raise _unsupported(key, model)
        return 1
    mode = _choice(body, "sequential_image_generation", ("auto", "disabled")) or "disabled"
    options = body.get("sequential_image_generation_options")
    max_images = MAX_GROUP
    if options is not None:
        if not isinstance(options, dict):
            raise _invalid("sequential_image_generation_options", "expected an object")
        _number(options, "max_images", 1, MAX_GROUP, integer=True)
        max_images = options.get("max_images", MAX_GROUP)
    if mode == "disabled":
        return 1
    # The model decides how many images a group has, up to max_images and 15 with the references;
    # the emulator always makes the most it may.
    return max(1, min(max_images, MAX_GROUP - references))


def _extras(body: Mapping[str, Any], family: Family, model: str) -> Literal["png", "jpeg"]:
    """The options only some models take; returns the output format to render."""
    if not family.seed_and_guidance:
        for key in ("seed", "guidance_scale"):
            if body.get(key) is not None:
                raise _unsupported(key, model)
    _number(body, "seed", -1, MAX_SEED, integer=True)
    _number(body, "guidance_scale", 1, 10, integer=False)
    options = body.get("optimize_prompt_options")
    if options is not None:
        if not family.optimize_modes:
            raise _unsupported("optimize_prompt_options", model)
        if not isinstance(options, dict) or options.get("mode", "standard") not in family.optimize_modes:
            raise _invalid("optimize_prompt_options", f"mode must be one of {', '.join(family.optimize_modes)}")
    tools = body.get("tools")
    if tools is not None:
        if not family.web_search:
            raise _unsupported("tools", model)
        if not isinstance(tools, list) or any(tool != {"type": "web_search"} for tool in tools):
            raise _invalid("tools", 'only [{"type": "web_search"}] is supported')
    if body.get("output_format") is not None and not family.output_formats:
        raise _unsupported("output_format", model)
    if _bool(body, "stream", False):
        raise _invalid("stream", "the emulator does not stream; send stream=false")
    return "jpeg" if _choice(body, "output_format", family.output_formats) == "jpeg" else "png"


def parse_image_request(body: Mapping[str, Any]) -> ArkImageRequest:
    """Validate a generations body (already decoded into a JSON object)."""
    model, family = _model(body)
    prompt = _string(body, "prompt")
    if not prompt:
        raise ArkParamError("The request failed because it is missing one or multiple required parameters.",
                            "prompt", code="MissingParameter")  # fmt: skip
    width, height = parse_size(_string(body, "size"), family, model)
    references = _reference_images(body, family, model)
    count = _group_size(body, family, model, references)
    output_format = _extras(body, family, model)
    response_format: ResponseFormat = (
        "b64_json" if _choice(body, "response_format", ("url", "b64_json")) == "b64_json" else "url"
    )
    return ArkImageRequest(
        model=model,
        family=family,
        prompt=prompt,
        width=width,
        height=height,
        count=count,
        reference_images=references,
        response_format=response_format,
        output_format=output_format,
        watermark=_bool(body, "watermark", True),
    )
