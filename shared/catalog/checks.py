"""Cross-field rules a catalog entry can name in ``checks``: each raises ``InvalidRequestError``."""

from __future__ import annotations

from collections.abc import Callable

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
            f"The expanded image would be {area:.2f}× the original; (1+up+down)·(1+left+right) must be ≤ 3.",
            param="up_expansion_ratio",
        )


CHECKS: dict[str, Check] = {
    "expansion_area": expansion_area,
}
