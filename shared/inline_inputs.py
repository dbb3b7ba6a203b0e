"""Large inline input images (data URIs, raw base64) move to storage at accept time; the job row keeps a short
reference and stays small. The worker puts the original inline form back before the upstream call.

A reference is ``imagejobs-stored:inputs/<job id>/<n>.<ext>#data:<mime>`` (it was a data URI) or ``…#base64``
(it was raw base64). Strings that are not images are left as they are.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

from PIL import Image, UnidentifiedImageError

from shared.storage import EXTENSIONS, ObjectStorage, input_key

STORED = "imagejobs-stored:"
_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


class InlineInputs:
    def __init__(self, storage: ObjectStorage, *, max_chars: int) -> None:
        self._storage = storage
        self._max_chars = max_chars

    def would_store(self, params: dict[str, Any]) -> bool:
        """Whether ``offload`` may write anything (a string longer than ``max_chars`` somewhere in ``params``):
        the accept path only leaves its event loop for storage I/O when there is some."""

        def large(value: Any) -> bool:
            if isinstance(value, dict):
                return any(large(item) for item in value.values())
            if isinstance(value, list):
                return any(large(item) for item in value)
            return isinstance(value, str) and len(value) > self._max_chars

        return large(params)

    def offload(self, job_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` with every inline image longer than ``max_chars`` written to storage and replaced by its
        reference (raises ``StorageUnavailableError`` when the store is down: nothing is accepted then)."""
        stored: list[str] = []

        def visit(value: Any) -> Any:
            if isinstance(value, dict):
                return {key: visit(item) for key, item in value.items()}
            if isinstance(value, list):
                return [visit(item) for item in value]
            if isinstance(value, str) and len(value) > self._max_chars:
                reference = self._store(job_id, len(stored), value)
                if reference is not None:
                    stored.append(reference)
                    return reference
            return value

        result: dict[str, Any] = visit(params)
        return result

    def restore(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` as the caller sent them (raises ``StorageUnavailableError`` when the store is down)."""

        def visit(value: Any) -> Any:
            if isinstance(value, dict):
                return {key: visit(item) for key, item in value.items()}
            if isinstance(value, list):
                return [visit(item) for item in value]
            if isinstance(value, str) and value.startswith(STORED):
                return self._load(value)
            return value

        result: dict[str, Any] = visit(params)
        return result

    def _store(self, job_id: str, index: int, value: str) -> str | None:
        header, encoded = value.split(",", 1) if value.startswith("data:") else ("", value)
        if header and not header.endswith(";base64"):
            return None
        try:
            data = base64.b64decode("".join(encoded.split()), validate=True)
        except (binascii.Error, ValueError):
            return None
        mime = _image_type(data)
        if mime is None:
            return None
        key = input_key(job_id, index, EXTENSIONS[mime])
        self._storage.put(key, data)
        form = header.removesuffix(";base64") if header else "base64"
        return f"{STORED}{key}#{form}"

    def _load(self, reference: str) -> str:
        key, _, form = reference.removeprefix(STORED).partition("#")
        encoded = base64.b64encode(self._storage.get(key)).decode("ascii")
        return encoded if form == "base64" else f"{form};base64,{encoded}"


def _image_type(data: bytes) -> str | None:
    try:
        with Image.open(io.BytesIO(data)) as picture:
            return _FORMATS.get(picture.format or "")
    except (UnidentifiedImageError, OSError):
        return None
