"""Webhook signing secrets: one per tenant (API key), rotatable.

A key created with ``imagejobs keys create`` has its own random secret in its ``api_key`` row; during a
rotation the previous one keeps signing too until it expires, so receivers see two signatures. A bootstrap
key (``IMAGEJOBS_API_KEYS``) has no row: its secret is derived from ``IMAGEJOBS_WEBHOOKS__SECRET`` and the
tenant id, so each bootstrap tenant still has its own; ``IMAGEJOBS_WEBHOOKS__PREVIOUS_SECRET`` rotates those.
Callers read their current secret at ``GET /v1/webhooks/secret``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import datetime

from sqlmodel import Session

from shared.config import Settings
from shared.db.tables import ApiKey

PREFIX = "whsec_"


def new_webhook_secret() -> str:
    """``whsec_`` + base64 of 32 random bytes (Standard Webhooks)."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def derived_secret(master: str, owner: str) -> str:
    """A bootstrap tenant's secret: HMAC-SHA256 of the tenant id under the master secret's key."""
    key = base64.b64decode(master.removeprefix(PREFIX))
    return PREFIX + base64.b64encode(hmac.new(key, owner.encode(), hashlib.sha256).digest()).decode("ascii")


def signing_secrets(*, session: Session, owner: str, settings: Settings, now: datetime) -> list[str]:
    """The tenant's current secret first, then a previous one still in its rotation window."""
    row = session.get(ApiKey, owner)
    if row is not None:
        current = [row.webhook_secret]
        expires = row.previous_secret_expires_at
        if row.previous_webhook_secret and (expires is None or expires > now):
            current.append(row.previous_webhook_secret)
        return current
    webhooks = settings.webhooks
    found = [derived_secret(webhooks.secret.get_secret_value(), owner)]
    if webhooks.previous_secret is not None:
        found.append(derived_secret(webhooks.previous_secret.get_secret_value(), owner))
    return found
