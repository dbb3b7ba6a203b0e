"""Cheap, deterministic placeholder images (Pillow), so clients handle real image bytes.

Images are drawn in palette mode (few colours, fast PNG encoding): a background colour and a row of
bars derived from a hash of ``label``, plus the label and the size as text. ``render_png_cached`` keeps
a small LRU cache, so re-fetching the same result URL costs nothing.
"""

from __future__ import annotations

import hashlib
import io
from functools import lru_cache
from typing import Literal

from PIL import Image, ImageDraw

ImageFormat = Literal["png", "jpeg", "webp"]

_ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "16:9": (16, 9),
    "9:16": (9, 16),
    "1:1": (1, 1),
    "4:3": (4, 3),
    "3:4": (3, 4),
    "3:2": (3, 2),
    "2:3": (2, 3),
    "21:9": (21, 9),
}
_BARS = 8
_TEXT = 1 + _BARS  # palette index of the text colour
_TRANSPARENT = _TEXT + 1  # palette index used as the transparent background


def size_for_aspect(aspect_ratio: str, long_side: int) -> tuple[int, int]:
    """``(width, height)`` for an ``"W:H"`` ratio whose longer side is ``long_side`` pixels."""
    w, h = _ASPECT_RATIOS.get(aspect_ratio, (1, 1))
    if w >= h:
        return long_side, max(1, round(long_side * h / w))
    return max(1, round(long_side * w / h)), long_side


def _palette(digest: bytes) -> list[int]:
    background = [digest[0] // 2, digest[1] // 2, 64 + digest[2] // 2]
    bars = [channel for i in range(_BARS) for channel in (digest[3 + i], digest[11 + i], digest[19 + i])]
    return background + bars + [255, 255, 255] + [0, 0, 0]


def _draw(label: str, width: int, height: int, transparent: bool) -> Image.Image:
    digest = hashlib.sha256(label.encode()).digest()
    image = Image.new("P", (width, height), _TRANSPARENT if transparent else 0)
    image.putpalette(_palette(digest))
    draw = ImageDraw.Draw(image)
    bar_width = max(1, width // _BARS)
    top, bottom = height // 3, max(height // 3, 2 * height // 3 - 1)
    for i in range(_BARS):
        left = i * bar_width
        draw.rectangle((left, top, min(width - 1, left + bar_width - 1), bottom), fill=1 + i)
    draw.text((4, 4), f"{label[:48]}\n{width}x{height}", fill=_TEXT)
    if transparent:
        image.info["transparency"] = _TRANSPARENT
    return image


def render_image(label: str, width: int, height: int, fmt: ImageFormat = "png", *, transparent: bool = False) -> bytes:
    """Encode a ``width`` x ``height`` placeholder for ``label`` as PNG, JPEG or WebP bytes."""
    image = _draw(label, width, height, transparent and fmt != "jpeg")
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, "PNG", compress_level=1)
    elif fmt == "jpeg":
        image.convert("RGB").save(buffer, "JPEG", quality=80)
    else:
        image.convert("RGBA" if transparent else "RGB").save(buffer, "WEBP", quality=80)
    return buffer.getvalue()


@lru_cache(maxsize=64)
def render_png_cached(label: str, width: int, height: int) -> bytes:
    """``render_image`` as PNG, memoised: for result URLs that clients may fetch more than once."""
    return render_image(label, width, height)
