"""Where result and input images live: a directory (``file://``) or an S3 bucket (``s3://``), one interface.

Workers write, the API reads or hands out URLs, retention deletes. ``open_storage`` picks the backend from
``IMAGEJOBS_STORAGE__URL``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from shared.config import Settings
from shared.storage.keys import (
    CONTENT_TYPES,
    EXTENSIONS,
    StorageKeyError,
    content_type_of,
    image_key,
    input_key,
    input_prefix,
    result_prefix,
)
from shared.storage.local import LocalStorage

__all__ = [
    "CONTENT_TYPES",
    "EXTENSIONS",
    "LocalStorage",
    "ObjectStorage",
    "StorageKeyError",
    "content_type_of",
    "image_key",
    "input_key",
    "input_prefix",
    "open_storage",
    "result_prefix",
]


class ObjectStorage(Protocol):
    """Every method raises ``StorageUnavailableError`` when the store cannot be reached (a transient condition)."""

    def put(self, key: str, data: bytes) -> None:
        """Write the whole object with the content type of its extension (the same key again replaces it
        atomically: a retried write never duplicates or half-writes an image)."""

    def get(self, key: str) -> bytes:
        """The object's bytes; ``FileNotFoundError`` when there is none."""

    def exists(self, key: str) -> bool: ...

    def delete_prefix(self, prefix: str) -> None:
        """Delete every object under ``prefix``; nothing there is no error."""

    def presigned_url(self, key: str, *, ttl_s: int) -> str | None:
        """A URL of the store itself that downloads ``key`` for ``ttl_s`` seconds (None: the API serves it)."""


def open_storage(settings: Settings) -> ObjectStorage:
    storage = settings.storage
    assert storage.url is not None  # Settings fills it from files_dir
    if storage.is_s3():
        from shared.storage.s3 import S3Storage  # obstore is only loaded where S3 is used

        return S3Storage(storage)
    return LocalStorage(Path(storage.url.removeprefix("file://")))
