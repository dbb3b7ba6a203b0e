"""``POST /v1/images/multi-image2image``: 1–4 subject images, optional scene and style images.

Kling's API: https://app.klingai.com/global/dev/document-api.

Billed 16 units per generated image; the prompt is optional.
"""

from __future__ import annotations

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

ENDPOINT = "multi-image2image"
MODELS = ("kling-v2", "kling-v2-1")
DEFAULT_MODEL = "kling-v2-1"
MAX_SUBJECTS = 4
UNITS_PER_IMAGE = 16


def parse_multi_image(body: dict[str, Any]) -> KlingImageRequest:
    """Validate a multi-image body (already decoded into a JSON object)."""
    model_name = choice(body, "model_name", MODELS) or DEFAULT_MODEL
    prompt = string(body, "prompt", max_len=MAX_PROMPT) or ""
    subjects = object_list(body, "subject_image_list")
    if not subjects:
        raise KlingParamError("subject_image_list is required (1 to 4 items of {subject_image})")
    if len(subjects) > MAX_SUBJECTS:
        raise KlingParamError(f"subject_image_list must have at most {MAX_SUBJECTS} items, got {len(subjects)}")
    for index, item in enumerate(subjects):
        field = f"subject_image_list[{index}].subject_image"
        image = string(item, "subject_image")
        if not image:
            raise KlingParamError(f"{field} is required")
        check_image(image, field)
    for key in ("scene_image", "style_image"):
        if image := string(body, key):
            check_image(image, key)
    aspect_ratio = choice(body, "aspect_ratio", ASPECT_RATIOS) or "16:9"
    return KlingImageRequest(
        model_name=model_name,
        scenario=prompt,
        n=count(body),
        shape=shape_of(aspect_ratio),
        units_per_image=UNITS_PER_IMAGE,
        external_task_id=string(body, "external_task_id") or None,
        callback_url=string(body, "callback_url"),
        endpoint=ENDPOINT,
    )
