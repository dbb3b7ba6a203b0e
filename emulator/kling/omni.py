"""``POST /v1/images/omni-image``: text and references (images, library elements) to one image or a series
(https://app.klingai.com/global/dev/document-api).

- ``model_name`` ``kling-image-o1`` (default) or ``kling-v3-omni``; ``prompt`` required (≤ 2500).
- ``image_list`` ``[{"image"}]`` and ``element_list`` ``[{"element_id"}]``: at most 10 together.
- ``resolution`` ``1k`` (default) / ``2k`` / ``4k`` (4k: kling-v3-omni only).
- ``result_type`` ``single`` (default; ``n`` images, 1–9) or ``series`` (kling-v3-omni only; ``series_amount``
  2–9 or ``"auto"`` (default 4) images, listed in ``task_result.series_images``; ``n`` is ignored).
- ``aspect_ratio`` the 8 ratios or ``auto`` (default); an explicit ``auto`` with kling-v3-omni needs a reference.
  ``auto`` follows the first reference image, else square.

Billed 8 units per image (kling-v3-omni at 4k: 16); every image delivered holds one concurrency slot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from emulator.kling.params import (
    ASPECT_RATIOS,
    MAX_PROMPT,
    KlingImageRequest,
    KlingParamError,
    check_image,
    choice,
    count,
    object_list,
    shape_of,
    string,
)

ENDPOINT = "omni-image"
MODELS = ("kling-image-o1", "kling-v3-omni")
DEFAULT_MODEL = "kling-image-o1"
V3_OMNI = "kling-v3-omni"
RESOLUTIONS = ("1k", "2k", "4k")
RESULT_TYPES = ("single", "series")
MAX_REFERENCES = 10
DEFAULT_SERIES_AMOUNT = 4

Sizes = list[tuple[int, int] | None]


def _series_amount(body: dict[str, Any], draw_auto: Callable[[], int]) -> int:
    value = body.get("series_amount", DEFAULT_SERIES_AMOUNT)
    if value == "auto":
        return draw_auto()
    return count({"series_amount": value}, "series_amount", low=2, high=9)


def _references(body: dict[str, Any]) -> tuple[Sizes, int]:
    """The reference images' sizes (``None``: a URL) and the number of elements."""
    images = object_list(body, "image_list")
    sizes: Sizes = []
    for index, item in enumerate(images):
        field = f"image_list[{index}].image"
        image = string(item, "image")
        if not image:
            raise KlingParamError(f"{field} is required")
        sizes.append(check_image(image, field))
    elements = object_list(body, "element_list")
    for index, item in enumerate(elements):
        element_id = item.get("element_id")
        if isinstance(element_id, bool) or not isinstance(element_id, int):
            raise KlingParamError(f"element_list[{index}].element_id must be an integer")
    if len(images) + len(elements) > MAX_REFERENCES:
        raise KlingParamError(
            f"image_list and element_list together must have at most {MAX_REFERENCES} items, "
            f"got {len(images)} + {len(elements)}"
        )
    return sizes, len(elements)


def _shape(
    body: dict[str, Any], model_name: str, sizes: list[tuple[int, int] | None], elements: int
) -> tuple[float, float]:
    aspect_ratio = choice(body, "aspect_ratio", (*ASPECT_RATIOS, "auto"))
    if aspect_ratio == "auto" and model_name == V3_OMNI and not (sizes or elements):
        raise KlingParamError(f"aspect_ratio auto needs image_list or element_list with {V3_OMNI}")
    if aspect_ratio is not None and aspect_ratio != "auto":
        return shape_of(aspect_ratio)
    first = sizes[0] if sizes else None
    return (float(first[0]), float(first[1])) if first else (1.0, 1.0)


def parse_omni(body: dict[str, Any], *, draw_auto_series_amount: Callable[[], int]) -> KlingImageRequest:
    """Validate an omni-image body; ``series_amount="auto"`` delivers ``draw_auto_series_amount()`` images."""
    model_name = choice(body, "model_name", MODELS) or DEFAULT_MODEL
    prompt = string(body, "prompt", max_len=MAX_PROMPT)
    if not prompt:
        raise KlingParamError("prompt is required")
    sizes, elements = _references(body)
    resolution = choice(body, "resolution", RESOLUTIONS) or "1k"
    if resolution == "4k" and model_name != V3_OMNI:
        raise KlingParamError(f"resolution 4k is only supported by {V3_OMNI}")
    result_type = choice(body, "result_type", RESULT_TYPES) or "single"
    if result_type == "series" and model_name != V3_OMNI:
        raise KlingParamError(f"result_type series is only supported by {V3_OMNI}")
    shape = _shape(body, model_name, sizes, elements)
    delivered = _series_amount(body, draw_auto_series_amount) if result_type == "series" else count(body)
    return KlingImageRequest(
        model_name=model_name,
        scenario=prompt,
        n=delivered,
        shape=shape,
        units_per_image=16 if resolution == "4k" else 8,
        external_task_id=string(body, "external_task_id") or None,
        callback_url=string(body, "callback_url"),
        endpoint=ENDPOINT,
        result_type=result_type,
    )
