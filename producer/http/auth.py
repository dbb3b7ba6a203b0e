"""Bearer-token authentication: the dependency that turns a request into its owner (tenant) id."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from producer.http.context import ApiContext, api_context
from producer.http.errors import ApiError


def require_owner(request: Request, context: Annotated[ApiContext, Depends(api_context)]) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "Missing bearer token in the Authorization header.", code="missing_api_key")
    owner = context.keys.owner_of(token.strip())
    if owner is None:
        raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
    return owner


Owner = Annotated[str, Depends(require_owner)]
