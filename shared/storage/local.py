"""Objects as files under one directory: for a single host (``make run``) and tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from shared.storage.keys import checked_key


class LocalStorage:
    """Atomic writes (temp file + rename) so readers never see half an image; a rewrite replaces the whole file."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, key: str) -> Path:
        return self.root / checked_key(key)

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

    def delete_prefix(self, prefix: str) -> None:
        directory = self.root / prefix.strip("/")
        if ".." in Path(prefix).parts:
            raise ValueError(f"not a storage prefix: {prefix!r}")
        shutil.rmtree(directory, ignore_errors=True)

    def presigned_url(self, key: str, *, ttl_s: int) -> str | None:  # noqa: ARG002
        """None: files are served by the API's signed ``/v1/files`` URLs."""
        return None
