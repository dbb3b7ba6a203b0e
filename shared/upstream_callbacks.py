"""Our callback URL for an upstream task (Kling ``callback_url``, BFL ``webhook_url``) and the token inside it.

``{base}/internal/callbacks/{provider}/{job_id}?token=…``: the token is an HMAC of the provider and job id under
a key derived from ``signing_key``, so the URL opens only that job's callback and only for whoever we handed it
to. A callback is a hint, never a result: it only makes a worker poll the upstream at once (see
``producer/http/callbacks_routes.py``); the worker (``_spec_of``) and the API both import from here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Final

from shared.config import Settings

#: upstreams that accept a callback URL on submit
CALLBACK_PROVIDERS: Final = frozenset({"kling", "bfl"})
ROUTE_PREFIX: Final = "/internal/callbacks"
_KEY_LABEL: Final = b"imagejobs upstream callback token v1"


def callbacks_enabled(settings: Settings, provider: str) -> bool:
    """Whether jobs of ``provider`` give the upstream our callback URL (and are then polled sparsely)."""
    section = settings.callbacks
    return section.enabled and provider in CALLBACK_PROVIDERS and provider in section.providers


def callback_url(settings: Settings, provider: str, job_id: str) -> str | None:
    """The URL the upstream should call when ``job_id``'s task changes, or None when callbacks are off for it."""
    if not callbacks_enabled(settings, provider):
        return None
    base = (settings.callbacks.base_url or settings.public_base_url).rstrip("/")
    return f"{base}{ROUTE_PREFIX}/{provider}/{job_id}?token={callback_token(settings, provider, job_id)}"


def callback_token(settings: Settings, provider: str, job_id: str) -> str:
    """URL-safe HMAC-SHA256 of ``provider:job_id`` under a key derived from ``signing_key`` (43 characters)."""
    key = hmac.new(settings.signing_key.get_secret_value().encode(), _KEY_LABEL, hashlib.sha256).digest()
    digest = hmac.new(key, f"{provider}:{job_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def token_is_valid(settings: Settings, provider: str, job_id: str, token: str) -> bool:
    """Constant-time check of a callback's token (whatever the callbacks setting is now: jobs outlive it)."""
    if provider not in CALLBACK_PROVIDERS:
        return False
    return hmac.compare_digest(token.encode(), callback_token(settings, provider, job_id).encode())
