"""``POST /v1/images/editing/expand``: outpainting (https://app.klingai.com/global/dev/document-api).

``image`` and the four ``*_expansion_ratio`` (each in [0, 2]; up/down are multiples of the height, left/right of
the width) are required, and the new image may be at most 3× the original:
``(1 + up + down) * (1 + left + right) <= 3``. Billed 8 units per image; the prompt is optional.
"""

from __future__ import annotations

from typing import Any

from emulator.kling.params import (
    MAX_PROMPT,
    KlingImageRequest,
    KlingParamError,
    check_image,
    count,
    number,
    string,
)

ENDPOINT = "expand"
SIDES = ("up", "down", "left", "right")
MAX_RATIO = 2.0
MAX_AREA = 3.0
UNITS_PER_IMAGE = 8
_TOLERANCE = 1e-9  # the official helper's ratios (e.g. 0.1495/0.6547) land a hair under 3


def parse_expand(body: dict[str, Any]) -> KlingImageRequest:
    """Validate an outpainting body (already decoded into a JSON object)."""
    image = string(body, "image")
    if not image:
        raise KlingParamError("image is required")
    size = check_image(image, "image")
    ratios: dict[str, float] = {}
    for side in SIDES:
        key = f"{side}_expansion_ratio"
        value = number(body, key, 0.0, MAX_RATIO)
        if value is None:
            raise KlingParamError(f"{key} is required")
        ratios[side] = value
    tall = 1 + ratios["up"] + ratios["down"]
    wide = 1 + ratios["left"] + ratios["right"]
    if tall * wide > MAX_AREA + _TOLERANCE:
        raise KlingParamError(
            f"the expanded image would be {tall * wide:.4g} times the original: (1 + up_expansion_ratio + "
            "down_expansion_ratio) * (1 + left_expansion_ratio + right_expansion_ratio) must not exceed 3"
        )
    width, height = size or (1, 1)
    return KlingImageRequest(
        model_name=None,
        scenario=string(body, "prompt", max_len=MAX_PROMPT) or "",
        n=count(body),
        shape=(width * wide, height * tall),
        units_per_image=UNITS_PER_IMAGE,
        external_task_id=string(body, "external_task_id") or None,
        callback_url=string(body, "callback_url"),
        endpoint=ENDPOINT,
    )
