"""Input images given by the caller (URL, data URI or raw base64), turned into bytes for the upstreams
that need inline data (Gemini) or files (OpenAI edits).

The loader is the only place the worker fetches a caller-supplied URL, so the SSRF guard plugs in here
(its ``http`` client).
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from typing import Protocol

import httpx
from PIL import Image, UnidentifiedImageError

from shared.egress import EgressRefusedError
from shared.errors import ErrorCode, PermanentProviderError, TransientProviderError

_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


class InputImageError(PermanentProviderError):
    """An input image could not be read (bad base64, not an image, URL answered 4xx, too large)."""

    code = ErrorCode.INVALID_INPUT_IMAGE


@dataclass(frozen=True, slots=True)
class InputImage:
    data: bytes
    mime_type: str

    def base64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")

    def data_uri(self) -> str:
        return f"data:{self.mime_type};base64,{self.base64()}"


class ImageLoader(Protocol):
    def load(self, ref: str) -> InputImage: ...


class HttpImageLoader:
    """Reads data URIs and raw base64 in place; downloads http(s) URLs with a size cap."""

    def __init__(self, http: httpx.Client, *, max_bytes: int) -> None:
        self._http = http
        self._max_bytes = max_bytes

    def load(self, ref: str) -> InputImage:
        if ref.startswith(("http://", "https://")):
            data = self._download(ref)
        else:
            encoded = ref.split(",", 1)[1] if ref.startswith("data:") else ref
            try:
                data = base64.b64decode("".join(encoded.split()), validate=True)
            except (binascii.Error, ValueError):
                raise InputImageError("an input image is not valid base64", provider="input") from None
        return InputImage(data=data, mime_type=sniff_mime_type(data))

    def _download(self, url: str) -> bytes:
        try:
            with self._http.stream("GET", url) as response:
                if response.status_code >= 500:
                    raise TransientProviderError(f"input image URL answered {response.status_code}", provider="input")
                if response.status_code != 200:
                    raise InputImageError(f"input image URL answered {response.status_code}", provider="input")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body.extend(chunk)
                    if len(body) > self._max_bytes:
                        raise InputImageError(f"input image larger than {self._max_bytes} bytes", provider="input")
                return bytes(body)
        except EgressRefusedError as exc:
            raise InputImageError(f"input image URL refused: {exc}", provider="input") from None
        except httpx.InvalidURL as exc:
            raise InputImageError(f"input image URL is not valid: {exc}", provider="input") from None
        except httpx.HTTPError as exc:
            raise TransientProviderError(
                f"input image download failed: {type(exc).__name__}", provider="input"
            ) from exc


def sniff_mime_type(data: bytes) -> str:
    try:
        with Image.open(io.BytesIO(data)) as picture:
            mime = _MIME.get(picture.format or "")
    except (UnidentifiedImageError, OSError):
        mime = None
    if mime is None:
        raise InputImageError("an input image is not a PNG, JPEG, WebP or GIF image", provider="input")
    return mime
