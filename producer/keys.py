"""API keys → tenant ids. Jobs belong to the key that created them; the key itself is never stored."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable


def owner_id(api_key: str) -> str:
    """A stable, non-reversible id for the key (what ``job.owner`` holds)."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:32]


class KeyRing:
    """The API keys allowed in; compares digests in constant time."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [hashlib.sha256(key.encode()).digest() for key in keys]

    def owner_of(self, presented: str) -> str | None:
        digest = hashlib.sha256(presented.encode()).digest()
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(digest, known)
        return owner_id(presented) if matched else None
