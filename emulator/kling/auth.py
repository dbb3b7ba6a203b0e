"""Kling's AK/SK authentication: ``Authorization: Bearer <JWT>`` signed HS256 with the secret key.

The token's payload carries ``iss`` (the access key), ``exp`` and usually ``nbf``. Failures map to
Kling's service codes (all HTTP 401): 1001 header missing or empty, 1002 invalid (malformed, bad
signature, unknown ``iss``, missing ``exp``), 1003 not yet valid (``nbf``), 1004 expired (``exp``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import jwt

LEEWAY_S = 5


@dataclass(frozen=True, slots=True)
class AuthFailure:
    code: int
    message: str


def check_kling_auth(header: str | None, *, access_key: str, secret_key: str) -> AuthFailure | None:
    """Return ``None`` when ``header`` carries a valid token for ``access_key``, else the failure."""
    scheme, _, token = (header or "").strip().partition(" ")
    if not scheme or (scheme.lower() == "bearer" and not token.strip()):
        return AuthFailure(1001, "Authorization is empty")
    if scheme.lower() != "bearer":
        return AuthFailure(1002, "Authorization is invalid: expected 'Bearer <token>'")
    token = token.strip()
    try:
        # Look the secret up by `iss` first, as a multi-account server would.
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return AuthFailure(1002, "Authorization is invalid")
    if unverified.get("iss") != access_key:
        return AuthFailure(1002, "Authorization is invalid: unknown access key")
    try:
        with warnings.catch_warnings():
            # Short demo secrets are fine here; PyJWT would warn about the key length.
            warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
            jwt.decode(
                token,
                secret_key,
                algorithms=["HS256"],
                leeway=LEEWAY_S,
                options={"require": ["iss", "exp"]},
            )
    except jwt.ImmatureSignatureError:
        return AuthFailure(1003, "Authorization is not yet valid")
    except jwt.ExpiredSignatureError:
        return AuthFailure(1004, "Authorization is expired")
    except jwt.InvalidTokenError:
        return AuthFailure(1002, "Authorization is invalid")
    return None
