"""Expiring download URLs of stored images: HMAC-signed ``/v1/files`` URLs (checked by the API) or presigned
URLs of the object store."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.storage import ObjectStorage

#: storage key → a URL the caller can download (signed, expiring)
UrlSigner = Callable[[str], str]


def _signature(*, key: str, expires: int, secret: str) -> str:
    message = f"{key}\n{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_file_url(*, base_url: str, key: str, secret: str, ttl_s: int, now: float) -> str:
    """``{base_url}/v1/files/{key}?expires=…&signature=…``."""
    expires = int(now) + ttl_s
    signature = _signature(key=key, expires=expires, secret=secret)
    return f"{base_url}/v1/files/{quote(key)}?expires={expires}&signature={signature}"


def is_valid_file_signature(*, key: str, expires: int, signature: str, secret: str, now: float) -> bool:
    if expires < now:
        return False
    expected = _signature(key=key, expires=expires, secret=secret)
    # bytes, not str: compare_digest refuses non-ASCII strings, and a caller controls ``signature``
    return hmac.compare_digest(signature.encode(), expected.encode())


class ResultUrls:
    """The URL a caller downloads a stored image from: the store's presigned URL (S3 with ``presign``) or our
    signed ``/v1/files`` URL, both valid ``IMAGEJOBS_FILE_URL_TTL_S`` seconds."""

    def __init__(self, settings: Settings, storage: ObjectStorage) -> None:
        self._settings = settings
        self._storage = storage

    def signer(self, *, now: float | None = None) -> UrlSigner:
        """One signer for one response (every image of a job gets the same expiry)."""
        at = time.time() if now is None else now
        settings = self._settings
        ttl_s = settings.file_url_ttl_s

        def sign(key: str) -> str:
            presigned = self._storage.presigned_url(key, ttl_s=ttl_s) if settings.storage.presign else None
            if presigned is not None:
                return presigned
            secret = settings.signing_key.get_secret_value()
            return signed_file_url(base_url=settings.public_base_url, key=key, secret=secret, ttl_s=ttl_s, now=at)

        return sign
