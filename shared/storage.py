"""Where result images live: the local filesystem under ``var/files`` (written by workers, read by the API)."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from shared.errors import ImageJobsError

_KEY = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+)*\.(png|jpg|jpeg|webp)$")
CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp"}


class StorageKeyError(ImageJobsError):
    """A storage key that is not one of ours (e.g. contains '..')."""


def image_key(job_id: str, index: int, extension: str) -> str:
    return f"jobs/{job_id}/{index}.{extension}"


def content_type_of(key: str) -> str:
    return CONTENT_TYPES[key.rsplit(".", 1)[1]]


class LocalStorage:
    """Atomic writes (temp file + rename) so readers never see half an image."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, key: str) -> Path:
        if not _KEY.fullmatch(key):  # not match(): '$' would accept a trailing newline
            raise StorageKeyError(key)
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        path = self.path_of(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        return self.path_of(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self.path_of(key).is_file()
