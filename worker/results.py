"""Turning upstream results into stored images: download (if a URL), check it is an image, store it."""

from __future__ import annotations

import io
from collections.abc import Sequence

import httpx
from PIL import Image, UnidentifiedImageError

from shared.db.tables import JobImage
from shared.errors import TransientProviderError, UnexpectedResponseError
from shared.storage import CONTENT_TYPES, ObjectStorage, image_key
from worker.providers.base import ResultImage

_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}


def store_results(
    *,
    job_id: str,
    provider: str,
    images: Sequence[ResultImage],
    storage: ObjectStorage,
    downloads: httpx.Client,
    max_bytes: int,
) -> list[JobImage]:
    """Store every image under a key derived from the job id (a repeated finish overwrites the same objects).

    Raises ``StorageUnavailableError`` when the store is down: the caller keeps the job going and tries again.
    """
    stored = []
    for index, image in enumerate(images):
        data = image.data if image.data is not None else _download(image.url or "", provider, downloads, max_bytes)
        extension, width, height = _inspect(data, provider)
        key = image_key(job_id, index, extension)
        storage.put(key, data)
        stored.append(
            JobImage(
                job_id=job_id,
                index=index,
                storage_key=key,
                content_type=CONTENT_TYPES[extension],
                byte_size=len(data),
                width=width,
                height=height,
            )
        )
    return stored


def _download(url: str, provider: str, downloads: httpx.Client, max_bytes: int) -> bytes:
    try:
        with downloads.stream("GET", url) as response:
            if response.status_code != 200:
                raise TransientProviderError(f"result download answered HTTP {response.status_code}", provider=provider)
            body = bytearray()
            for chunk in response.iter_bytes():
                body.extend(chunk)
                if len(body) > max_bytes:
                    raise UnexpectedResponseError(f"result image larger than {max_bytes} bytes", provider=provider)
            return bytes(body)
    except httpx.HTTPError as exc:
        raise TransientProviderError(f"result download failed: {type(exc).__name__}", provider=provider) from exc


def _inspect(data: bytes, provider: str) -> tuple[str, int, int]:
    try:
        with Image.open(io.BytesIO(data)) as picture:
            extension = _EXTENSIONS.get(picture.format or "")
            width, height = picture.size
    except (UnidentifiedImageError, OSError):
        extension = None
    if extension is None:
        raise UnexpectedResponseError("result is not a PNG, JPEG or WebP image", provider=provider)
    return extension, width, height
