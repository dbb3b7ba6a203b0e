"""Cross-field rules a catalog entry can name in ``checks``: each raises ``InvalidRequestError``."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from shared.errors import InvalidRequestError
from shared.jobs import JsonObject

Check = Callable[[JsonObject], None]


def expansion_area(params: JsonObject) -> None:
    """Kling outpainting: ``(1 + up + down) · (1 + left + right) ≤ 3`` (the new image ≤ 3× the original)."""
    up, down, left, right = (
        float(params.get(f"{side}_expansion_ratio", 0)) for side in ("up", "down", "left", "right")
    )
    area = (1 + up + down) * (1 + left + right)
    if area > 3:
        raise InvalidRequestError(
            f"The expanded image would be {area:.2f}× the original; (1 + up_expansion_ratio + down_expansion_ratio)"
            " · (1 + left_expansion_ratio + right_expansion_ratio) must be ≤ 3.",
            param="up_expansion_ratio",
        )


@dataclass(frozen=True, slots=True)
class SeedreamSize:
    """A Seedream model's ``size`` (Ark's rules): a tier (``2K``…), or ``WxH`` within its pixel, side and
    ratio bounds; ``aspect_ratio`` goes with a tier or alone (the adapter maps it to ``WxH``), not with ``WxH``."""

    tiers: tuple[str, ...]
    pixels: tuple[int, int]
    sides: tuple[int, int] = (1, 16384)
    max_ratio: float = 16.0

    def __call__(self, params: JsonObject) -> None:
        size = params.get("size")
        if not isinstance(size, str) or size.upper() in self.tiers:
            return
        width_s, _, height_s = size.lower().partition("x")
        if not (width_s.isdigit() and height_s.isdigit()):
            forms = f"one of {', '.join(self.tiers)} or WIDTHxHEIGHT" if self.tiers else "WIDTHxHEIGHT"
            raise InvalidRequestError(f"Invalid value for 'size': '{size}' is not {forms}.", param="size")
        if params.get("aspect_ratio") is not None:
            raise InvalidRequestError(
                "'aspect_ratio' cannot be combined with a WIDTHxHEIGHT 'size'; use a size tier or leave one out.",
                param="aspect_ratio",
            )
        width, height = int(width_s), int(height_s)
        (low, high), (least, most) = self.sides, self.pixels
        if not (low <= width <= high and low <= height <= high):
            why = f"each side must be within [{low}, {high}]"
        elif not least <= width * height <= most:
            why = f"width x height must be within [{least}, {most}] pixels, got {width * height}"
        elif max(width, height) > self.max_ratio * min(width, height):
            why = f"the aspect ratio must be within 1:{self.max_ratio:g} and {self.max_ratio:g}:1"
        else:
            return
        raise InvalidRequestError(f"Invalid value for 'size': '{size}': {why}.", param="size")


SEEDREAM_IMAGE_FIELDS = ("image", "image_url", "image_urls", "images")


def seedream_images(params: JsonObject) -> None:
    """Seedream 4.x/5.0: at most 14 reference images in all, and reference images + ``n`` ≤ 15."""
    present = [name for name in SEEDREAM_IMAGE_FIELDS if name in params]
    count = sum(len(value) if isinstance(value := params[name], list) else 1 for name in present)
    if count > 14:
        raise InvalidRequestError(f"At most 14 reference images in all, got {count}.", param=present[-1])
    n = params.get("n", 1)
    if isinstance(n, int) and count + n > 15:
        raise InvalidRequestError(f"Reference images + 'n' must be at most 15, got {count} + {n}.", param="n")


# -- Kling image models (worker/providers/kling.py picks the endpoint from the operation) -----------------------

KLING_EXPANSION_RATIOS = tuple(f"{side}_expansion_ratio" for side in ("up", "down", "left", "right"))
KLING_IMAGE_SOURCES = ("image", "image_url", "image_urls", "images", "subject_image_list")
_KLING_GENERATION_ONLY = ("negative_prompt", "image_reference", "image_fidelity", "human_fidelity", "resolution")
_KLING_NOT_WITH_EXPAND = (*_KLING_GENERATION_ONLY, "aspect_ratio", "scene_image", "style_image")
_KLING_IMAGE = re.compile(r"^(https?://|data:image/)|^[A-Za-z0-9+/=\s]{16,}$")  # as validation._looks_like_image


def _refuse(params: JsonObject, names: tuple[str, ...], what: str) -> None:
    for name in names:
        if name in params:
            raise InvalidRequestError(f"The parameter '{name}' is not supported for {what}.", param=name)


def kling_endpoint_fields(params: JsonObject) -> None:
    """Kling image models: the fields choose the endpoint as the catalog's operations do — any ``*_expansion_ratio``:
    outpainting; ``subject_image_list`` or ≥ 2 ``image_urls``/``images``: multi-image; else generations — and each
    endpoint takes only its own fields: one image source; generations need a prompt, and refuse
    ``negative_prompt`` with an input image and ``image_reference`` without one; outpainting needs ``image``."""
    sources = [name for name in KLING_IMAGE_SOURCES if name in params]
    if len(sources) > 1:
        raise InvalidRequestError(
            f"Give the input images in one parameter: '{sources[0]}' or '{sources[1]}', not both.", param=sources[1]
        )
    source = sources[0] if sources else None
    if any(name in params for name in KLING_EXPANSION_RATIOS):
        if source not in ("image", "image_url"):
            where = f", not in '{source}'" if source else ""
            raise InvalidRequestError(
                f"Outpainting (*_expansion_ratio) takes its input image in 'image' (or 'image_url'){where}.",
                param=source or "image",
            )
        _refuse(params, _KLING_NOT_WITH_EXPAND, "outpainting (*_expansion_ratio)")
        return
    listed = params.get(source) if source in ("image_urls", "images") else None
    if source == "subject_image_list" or (isinstance(listed, list) and len(listed) >= 2):
        _refuse(params, _KLING_GENERATION_ONLY, "multi-image generation (subject images)")
        return
    if not params.get("prompt"):
        raise InvalidRequestError(
            "The parameter 'prompt' is required for text/image-to-image generation.", param="prompt"
        )
    for name in ("scene_image", "style_image"):
        if name in params:
            raise InvalidRequestError(
                f"The parameter '{name}' needs subject images ('subject_image_list' or several 'image_urls').",
                param=name,
            )
    if source is None and "image_reference" in params:
        raise InvalidRequestError(
            "The parameter 'image_reference' needs an input image ('image').", param="image_reference"
        )
    if source is not None and "negative_prompt" in params:
        raise InvalidRequestError(
            "The parameter 'negative_prompt' is not supported together with an input image.", param="negative_prompt"
        )


def input_image_required(params: JsonObject) -> None:
    """Image-to-image-only models (e.g. Kling's style transfer): an input image is required."""
    if not any(name in params for name in ("image", "image_url", "image_urls", "images")):
        raise InvalidRequestError("The parameter 'image' (or 'image_url') is required for this model.", param="image")


def kling_image_lists(params: JsonObject) -> None:
    """Items of image lists: ``image_urls``/``images`` hold images, ``subject_image_list`` ``{"subject_image"}``,
    ``image_list`` ``{"image"}`` (images: http(s) URL, data URI or base64), ``element_list`` ``{"element_id"}``."""
    for name in ("image_urls", "images"):
        for index, item in enumerate(params.get(name) or ()):
            if not (isinstance(item, str) and _KLING_IMAGE.match(item)):
                raise InvalidRequestError(
                    f"Invalid value for '{name}': item {index} is not an http(s) URL, a data URI or base64 image data.",
                    param=name,
                )
    for name, key in (("subject_image_list", "subject_image"), ("image_list", "image"), ("element_list", "element_id")):
        for index, item in enumerate(params.get(name) or ()):
            value = item.get(key) if isinstance(item, dict) else None
            if key == "element_id":
                valid = (isinstance(value, int) and not isinstance(value, bool)) or (
                    isinstance(value, str) and value.isdigit()
                )
            else:
                valid = isinstance(value, str) and bool(_KLING_IMAGE.match(value))
            if not valid or set(item) != {key}:
                raise InvalidRequestError(
                    f"Invalid value for '{name}': item {index} must be {{\"{key}\": …}} with "
                    + ("an integer id." if key == "element_id" else "an http(s) URL, a data URI or base64 image data."),
                    param=name,
                )


def kling_omni_references(params: JsonObject) -> None:
    """Kling omni-image: reference images (``image_list`` and ``image``/``image_url``/``image_urls``/``images``) and
    ``element_list`` elements, at most 10 together."""
    present = [
        name for name in ("image_list", "image", "image_url", "image_urls", "images", "element_list") if name in params
    ]
    total = sum(len(value) if isinstance(value := params[name], list) else 1 for name in present)
    if total > 10:
        raise InvalidRequestError(
            f"At most 10 reference images and elements together ({' + '.join(present)}), got {total}.",
            param=present[-1],
        )


_WXH = re.compile(r"^(\d{2,5})x(\d{2,5})$")


def size_wxh(params: JsonObject) -> None:
    """``size`` as OpenAI clients send it: ``WIDTHxHEIGHT`` (or ``auto``); the adapter maps it upstream."""
    size = params.get("size")
    if size is None or size == "auto":
        return
    match = _WXH.match(str(size))
    if match is None or not all(64 <= int(side) <= 8192 for side in match.groups()):
        raise InvalidRequestError(
            f"Invalid value for 'size': '{size}' is not WIDTHxHEIGHT (each side 64–8192) or auto.", param="size"
        )


# -- OpenAI GPT image models ------------------------------------------------------------------------------------

#: gpt-image-2's custom sizes (https://platform.openai.com/docs/guides/image-generation): both edges multiples
#: of 16, the longer at most 3840 and at most 3× the shorter, 655,360 to 8,294,400 pixels in all
GPT_IMAGE_2_FIXED_SIZES = ("auto", "1024x1024", "1536x1024", "1024x1536")
_GPT_IMAGE_2_PIXELS = (655_360, 8_294_400)


def gpt_image_2_size(params: JsonObject) -> None:
    """gpt-image-2: ``size`` is ``auto``, a fixed size, or a custom ``WIDTHxHEIGHT`` within its limits."""
    size = params.get("size")
    if size is None or size in GPT_IMAGE_2_FIXED_SIZES:
        return
    match = _WXH.match(str(size))
    if match is None:
        raise InvalidRequestError(f"Invalid value for 'size': '{size}' is not auto or WIDTHxHEIGHT.", param="size")
    width, height = int(match[1]), int(match[2])
    long, short = max(width, height), min(width, height)
    least, most = _GPT_IMAGE_2_PIXELS
    if width % 16 or height % 16:
        why = "both edges must be multiples of 16"
    elif long > 3840:
        why = "the longer edge must be at most 3840"
    elif long > 3 * short:
        why = "the aspect ratio must be within 1:3 and 3:1"
    elif not least <= width * height <= most:
        why = f"width x height must be within [{least}, {most}] pixels, got {width * height}"
    else:
        return
    raise InvalidRequestError(f"Invalid value for 'size': '{size}': {why}.", param="size")


def transparent_background(params: JsonObject) -> None:
    """GPT image models: a transparent background needs an output format with alpha (png or webp)."""
    if params.get("background") == "transparent" and params.get("output_format") == "jpeg":
        raise InvalidRequestError(
            "A transparent 'background' needs 'output_format' png or webp, not jpeg.", param="background"
        )


CHECKS: dict[str, Check] = {
    "gpt_image_2_size": gpt_image_2_size,
    "transparent_background": transparent_background,
    "size_wxh": size_wxh,
    "expansion_area": expansion_area,
    "kling_endpoint_fields": kling_endpoint_fields,
    "kling_image_lists": kling_image_lists,
    "kling_omni_references": kling_omni_references,
    "input_image_required": input_image_required,
    "seedream_3_0_size": SeedreamSize(tiers=(), pixels=(512 * 512, 2048 * 2048), sides=(512, 2048)),
    "seedream_4_0_size": SeedreamSize(tiers=("1K", "2K", "4K"), pixels=(1280 * 720, 4096 * 4096)),
    "seedream_4_5_size": SeedreamSize(tiers=("2K", "4K"), pixels=(2560 * 1440, 4096 * 4096)),
    "seedream_5_0_size": SeedreamSize(tiers=("2K", "3K"), pixels=(2560 * 1440, 3072 * 3072)),
    "seedream_images": seedream_images,
}
