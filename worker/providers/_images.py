"""Image data as upstreams send it and take it: base64 answers decoded, data URIs stripped to raw base64."""

from __future__ import annotations

import base64
import binascii

from shared.errors import UnexpectedResponseError


def decode_base64(data: str, *, provider: str, label: str, lenient: bool = False) -> bytes:
    """An answer's base64 image data; invalid data is an ``UnexpectedResponseError`` (``"<label> answered …"``).

    ``lenient``: whitespace is ignored and the URL-safe alphabet is taken too (Gemini sends either).
    """
    altchars: bytes | None = None
    if lenient:
        data = "".join(data.split())
        altchars = b"-_" if ("-" in data or "_" in data) else None
    try:
        return base64.b64decode(data, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII text
        raise UnexpectedResponseError(f"{label} answered invalid base64 image data", provider=provider) from None


def raw_base64(image: str) -> str:
    """A URL or raw base64 as it is; a data URI without its ``data:…;base64,`` prefix."""
    if image.startswith("data:") and "," in image:
        return image.split(",", 1)[1]
    return image
