"""HMAC-signed, expiring URLs for stored result images (signed by workers, checked by the API)."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote


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
