"""Signed, expiring downloads of stored result images (``/v1/files``): from the local directory, or streamed from
the object store when S3 URLs are not presigned (``IMAGEJOBS_STORAGE__PRESIGN=false``)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response

from producer.http.context import ApiContext, api_context
from producer.http.errors import ApiError
from shared.errors import StorageUnavailableError
from shared.files import is_valid_file_signature
from shared.storage import LocalStorage, StorageKeyError, content_type_of

router = APIRouter(tags=["Files"])

_CACHE = {"cache-control": "private, max-age=3600"}


@router.get("/v1/files/{key:path}", response_class=FileResponse)
async def download_file(
    key: str,
    expires: Annotated[int, Query()],
    signature: Annotated[str, Query(min_length=1, max_length=128, pattern=r"^[0-9a-f]+$")],
    context: Annotated[ApiContext, Depends(api_context)],
) -> Response:
    secret = context.settings.signing_key.get_secret_value()
    if not is_valid_file_signature(key=key, expires=expires, signature=signature, secret=secret, now=time.time()):
        raise ApiError(403, "The file URL is invalid or has expired.", code="invalid_signature")
    storage = context.storage
    try:
        if isinstance(storage, LocalStorage):
            path = storage.path_of(key)
            if not path.is_file():
                raise FileNotFoundError(key)
            return FileResponse(path, media_type=content_type_of(key), headers=_CACHE)
        data = await run_in_threadpool(storage.get, key)
    except (StorageKeyError, FileNotFoundError):
        raise ApiError(404, "No such file.", code="file_not_found") from None
    except StorageUnavailableError:
        raise ApiError(503, "The file store is unavailable; try again.", code="storage_unavailable") from None
    return Response(data, media_type=content_type_of(key), headers=_CACHE)
