"""``POST /v1/images/kolors-virtual-try-on``: a person wearing a garment.

Kling's API: https://app.klingai.com/global/dev/document-api.

``human_image`` and ``cloth_image`` are required; there is no prompt and no ``n`` (one image per task). A task
holds one slot of the separate try-on resource pack and deducts 1 unit. Having no prompt, its magic markers
are read from its image URLs (e.g. ``https://example.com/person.png?[fail]``).
"""

from __future__ import annotations

from typing import Any

from emulator.kling.params import KlingImageRequest, KlingParamError, check_image, choice, string

ENDPOINT = "kolors-virtual-try-on"
MODELS = ("kolors-virtual-try-on-v1", "kolors-virtual-try-on-v1-5")
DEFAULT_MODEL = "kolors-virtual-try-on-v1"
UNITS_PER_IMAGE = 1
_PORTRAIT = (3.0, 4.0)  # the result's shape when the person's image is a URL (never fetched)


def parse_try_on(body: dict[str, Any]) -> KlingImageRequest:
    """Validate a virtual try-on body (already decoded into a JSON object)."""
    model_name = choice(body, "model_name", MODELS) or DEFAULT_MODEL
    images: dict[str, str] = {}
    sizes: dict[str, tuple[int, int] | None] = {}
    for key in ("human_image", "cloth_image"):
        image = string(body, key)
        if not image:
            raise KlingParamError(f"{key} is required")
        images[key], sizes[key] = image, check_image(image, key)
    human = sizes["human_image"]
    return KlingImageRequest(
        model_name=model_name,
        scenario=" ".join(image for image in images.values() if image.startswith(("http://", "https://"))),
        n=1,
        shape=(float(human[0]), float(human[1])) if human else _PORTRAIT,
        units_per_image=UNITS_PER_IMAGE,
        external_task_id=string(body, "external_task_id") or None,
        callback_url=string(body, "callback_url"),
        endpoint=ENDPOINT,
        pool="try-on",
    )
