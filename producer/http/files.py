"""Signed, expiring downloads of stored result images."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse

from producer.http.context import ApiContext, api_context
from producer.http.errors import ApiError
from shared.files import is_valid_file_signature
from shared.storage import StorageKeyError, content_type_of

router = APIRouter(tags=["Files"])


@router.get("/v1/files/{key:path}", response_class=FileResponse)
def download_file(
    key: str,
    expires: Annotated[int, Query()],
    signature: Annotated[str, Query(min_length=1, max_length=128, pattern=r"^[0-9a-f]+$")],
    context: Annotated[ApiContext, Depends(api_context)],
) -> FileResponse:
    secret = context.settings.signing_key.get_secret_value()
    if not is_valid_file_signature(key=key, expires=expires, signature=signature, secret=secret, now=time.time()):
        raise ApiError(403, "The file URL is invalid or has expired.", code="invalid_signature")
    try:
        path = context.storage.path_of(key)
    except StorageKeyError:
        raise ApiError(404, "No such file.", code="file_not_found") from None
    if not path.is_file():
        raise ApiError(404, "No such file.", code="file_not_found")
    return FileResponse(path, media_type=content_type_of(key), headers={"cache-control": "private, max-age=3600"})
