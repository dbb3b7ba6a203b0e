"""Ark's checks of one reference image (the ``image`` field): an http(s) URL, or a data URI.

Data URIs must read ``data:image/<format in lower case>;base64,<data>``; the image must be a JPEG, PNG,
WebP, BMP, TIFF or GIF of at most 10 MB, each side above 14 px, at most 6000x6000 pixels in total and an
aspect ratio within [1/16, 16] (Ark's image generation API, https://www.volcengine.com/docs/82379). URLs are
not fetched.
"""

from __future__ import annotations

import binascii
import io
import re

from PIL import Image, UnidentifiedImageError

MAX_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 6000 * 6000
MIN_SIDE = 14
MAX_RATIO = 16
_FORMATS = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG", "webp": "WEBP", "bmp": "BMP", "tiff": "TIFF", "gif": "GIF"}
_DATA_URI = re.compile(r"^data:image/([a-z]+);base64,(.*)$", re.S)


class ArkImageError(ValueError):
    def __init__(self, message: str, *, code: str = "InvalidParameter") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def check_reference_image(image: str) -> None:
    """Raise ``ArkImageError`` (with Ark's error code) if Ark would refuse this reference image."""
    if image.startswith(("http://", "https://")):
        return
    match = _DATA_URI.match(image)
    if match is None:
        raise ArkImageError("each image must be a URL or a data URI data:image/<format>;base64,<data>")
    declared = _FORMATS.get(match.group(1))
    if declared is None:
        raise ArkImageError(f"image format '{match.group(1)}' is not supported",
                            code="InvalidParameter.UnsupportedImageFormat")  # fmt: skip
    try:
        raw = binascii.a2b_base64(match.group(2).encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ArkImageError("the image data is not valid base64") from None
    if len(raw) > MAX_BYTES:
        raise ArkImageError("the image exceeds 10 MB", code="InvalidParameter.OversizedImage")
    _check_picture(raw)


def _check_picture(raw: bytes) -> None:
    try:
        with Image.open(io.BytesIO(raw)) as picture:
            found, (width, height) = picture.format, picture.size
    except (UnidentifiedImageError, OSError):
        raise ArkImageError("the image cannot be decoded", code="InvalidParameter.UnsupportedImageFormat") from None
    if found not in _FORMATS.values():
        raise ArkImageError(f"image format {found} is not supported", code="InvalidParameter.UnsupportedImageFormat")
    if min(width, height) <= MIN_SIDE or width * height > MAX_PIXELS:
        raise ArkImageError(f"image of {width}x{height} px: each side must exceed {MIN_SIDE} px and the total "
                            f"must be at most 6000x6000", code="InvalidParameter.OversizedImage")  # fmt: skip
    if max(width, height) > MAX_RATIO * min(width, height):
        raise ArkImageError(f"image aspect ratio {width}:{height} is outside [1/16, 16]")
