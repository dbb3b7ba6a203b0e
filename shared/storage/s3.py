"""Objects in an S3 bucket (AWS S3, MinIO, Cloudflare R2, other S3 APIs) through obstore.

obstore (https://developmentseed.org/obstore/) wraps the Rust ``object_store`` crate: typed, small, and it signs
requests and presigned URLs itself (SigV4), so nothing here hand-writes signing. A PUT of one object is atomic
(https://docs.aws.amazon.com/AmazonS3/latest/userguide/Welcome.html#ConsistencyModel): a retried write of the same key
replaces the whole object, never a part of it.
"""

from __future__ import annotations

from datetime import timedelta

import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

from shared.config import StorageSettings
from shared.errors import StorageUnavailableError
from shared.storage.keys import checked_key, content_type_of


class S3Storage:
    def __init__(self, settings: StorageSettings) -> None:
        self._store = _store(settings, endpoint_url=settings.endpoint_url)
        # signing is offline: a second client only decides which host the presigned URLs name
        public = settings.presign_endpoint_url
        self._signer = self._store if public is None else _store(settings, endpoint_url=public)

    def put(self, key: str, data: bytes) -> None:
        """With the ``Content-Type`` of the key's extension, which presigned downloads answer with."""
        try:
            obstore.put(
                self._store,
                checked_key(key),
                data,
                attributes={"Content-Type": content_type_of(key)},
                use_multipart=False,
            )
        except BaseError as exc:
            raise StorageUnavailableError(f"storing {key} failed: {_short(exc)}") from None

    def get(self, key: str) -> bytes:
        try:
            return bytes(obstore.get(self._store, checked_key(key)).bytes())
        except FileNotFoundError:
            raise
        except BaseError as exc:
            raise StorageUnavailableError(f"reading {key} failed: {_short(exc)}") from None

    def exists(self, key: str) -> bool:
        try:
            obstore.head(self._store, checked_key(key))
        except FileNotFoundError:
            return False
        except BaseError as exc:
            raise StorageUnavailableError(f"looking up {key} failed: {_short(exc)}") from None
        return True

    def delete_prefix(self, prefix: str) -> None:
        """Delete every object under ``prefix`` (deleting what is already gone is no error)."""
        try:
            for batch in obstore.list(self._store, prefix=prefix, chunk_size=1000):
                paths = [meta["path"] for meta in batch]
                if paths:
                    obstore.delete(self._store, paths)
        except BaseError as exc:
            raise StorageUnavailableError(f"deleting {prefix} failed: {_short(exc)}") from None

    def presigned_url(self, key: str, *, ttl_s: int) -> str | None:
        return obstore.sign(self._signer, "GET", checked_key(key), timedelta(seconds=ttl_s))


def _store(settings: StorageSettings, *, endpoint_url: str | None) -> S3Store:
    assert settings.url is not None and settings.is_s3()
    bucket, _, prefix = settings.url.removeprefix("s3://").partition("/")
    credentials: dict[str, str] = {}
    if settings.access_key_id is not None and settings.secret_access_key is not None:
        credentials = {
            "access_key_id": settings.access_key_id.get_secret_value(),
            "secret_access_key": settings.secret_access_key.get_secret_value(),
        }
    endpoint = {"endpoint": endpoint_url} if endpoint_url else {}
    timeout = timedelta(seconds=settings.timeout_s)
    return S3Store(
        bucket,
        prefix=prefix or None,
        region=settings.region,
        virtual_hosted_style_request=settings.virtual_hosted_style,
        client_options={
            "allow_http": bool(endpoint_url and endpoint_url.startswith("http://")),
            "timeout": timeout,
            "connect_timeout": timedelta(seconds=min(5.0, settings.timeout_s)),
        },
        # a short outage is ridden out here; a longer one surfaces as StorageUnavailableError
        retry_config={
            "max_retries": 3,
            "retry_timeout": timeout,
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=2),
                "base": 2,
            },
        },
        **endpoint,  # type: ignore[arg-type]
        **credentials,  # type: ignore[arg-type]
    )


def _short(exc: Exception) -> str:
    """The first line of obstore's message (the rest is a debug dump that may be long)."""
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
