"""Signed, expiring file URLs and the local image store (safe keys, atomic writes)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from shared.files import is_valid_file_signature, signed_file_url
from shared.storage import LocalStorage, StorageKeyError, content_type_of, image_key

SECRET = "test-signing-key-" + "c" * 16
NOW = 1_900_000_000.0
KEY = "jobs/0123abcd/0.png"


def _parts(url: str) -> tuple[str, int, str]:
    parsed = httpx.URL(url)
    return unquote(parsed.path.removeprefix("/v1/files/")), int(parsed.params["expires"]), parsed.params["signature"]


def _sign(key: str = KEY, *, ttl_s: int = 3600, secret: str = SECRET) -> str:
    return signed_file_url(base_url="https://img.example.com", key=key, secret=secret, ttl_s=ttl_s, now=NOW)


# -- signed URLs -------------------------------------------------------------------------------------


def test_signed_url_round_trip() -> None:
    url = _sign()

    key, expires, signature = _parts(url)

    assert url.startswith(f"https://img.example.com/v1/files/{KEY}?expires=")
    assert (key, expires) == (KEY, int(NOW) + 3600)
    assert len(signature) == 64
    assert is_valid_file_signature(key=key, expires=expires, signature=signature, secret=SECRET, now=NOW + 3599)


def test_signed_url_is_valid_until_the_second_it_expires() -> None:
    key, expires, signature = _parts(_sign())

    assert is_valid_file_signature(key=key, expires=expires, signature=signature, secret=SECRET, now=expires)
    assert not is_valid_file_signature(key=key, expires=expires, signature=signature, secret=SECRET, now=expires + 1)


def test_expired_signed_url_is_rejected() -> None:
    key, expires, signature = _parts(_sign(ttl_s=60))

    assert not is_valid_file_signature(key=key, expires=expires, signature=signature, secret=SECRET, now=NOW + 3600)


@pytest.mark.parametrize(
    ("key", "expires_delta", "signature_edit", "secret"),
    [
        pytest.param("jobs/0123abcd/1.png", 0, None, SECRET, id="other-key"),
        pytest.param(KEY, 86_400, None, SECRET, id="extended-expiry"),
        pytest.param(KEY, 0, "flip", SECRET, id="tampered-signature"),
        pytest.param(KEY, 0, "truncate", SECRET, id="truncated-signature"),
        pytest.param(KEY, 0, None, "another-signing-key-0000000000", id="other-secret"),
    ],
)
def test_tampered_signed_url_is_rejected(key: str, expires_delta: int, signature_edit: str | None, secret: str) -> None:
    _, expires, signature = _parts(_sign())
    if signature_edit == "flip":
        signature = ("0" if signature[0] != "0" else "1") + signature[1:]
    elif signature_edit == "truncate":
        signature = signature[:-2]

    assert not is_valid_file_signature(
        key=key, expires=expires + expires_delta, signature=signature, secret=secret, now=NOW
    )


def test_signed_url_quotes_unusual_keys() -> None:
    url = _sign("jobs/a b/0.png")

    assert "/v1/files/jobs/a%20b/0.png?" in url
    key, expires, signature = _parts(url)
    assert key == "jobs/a b/0.png"
    assert is_valid_file_signature(key=key, expires=expires, signature=signature, secret=SECRET, now=NOW)


# -- LocalStorage ------------------------------------------------------------------------------------


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "files")


def test_storage_writes_and_reads_back(storage: LocalStorage) -> None:
    storage.put(KEY, b"\x89PNG data")

    assert storage.get(KEY) == b"\x89PNG data"
    assert storage.exists(KEY)
    assert (storage.root / KEY).read_bytes() == b"\x89PNG data"


def test_storage_overwrites_an_existing_key(storage: LocalStorage) -> None:
    storage.put(KEY, b"first")
    storage.put(KEY, b"second")

    assert storage.get(KEY) == b"second"


def test_storage_leaves_no_temporary_files(storage: LocalStorage) -> None:
    storage.put(KEY, b"one")
    storage.put("jobs/0123abcd/1.png", b"two")

    assert sorted(path.name for path in (storage.root / "jobs/0123abcd").iterdir()) == ["0.png", "1.png"]


def test_storage_write_is_atomic_when_the_rename_fails(storage: LocalStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an existing image
    storage.put(KEY, b"complete image")

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)

    # When a rewrite fails at the rename
    with pytest.raises(OSError, match="disk full"):
        storage.put(KEY, b"half an ima")

    # Then readers still see the old bytes and the temporary file is gone
    monkeypatch.undo()
    assert storage.get(KEY) == b"complete image"
    assert [path.name for path in (storage.root / "jobs/0123abcd").iterdir()] == ["0.png"]


def test_storage_missing_key_does_not_exist(storage: LocalStorage) -> None:
    assert not storage.exists(KEY)
    with pytest.raises(FileNotFoundError):
        storage.get(KEY)


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("../escape.png", id="parent"),
        pytest.param("jobs/../../escape.png", id="nested-parent"),
        pytest.param("jobs/..png", id="dot-dot-name"),
        pytest.param("/etc/passwd.png", id="absolute"),
        pytest.param("/tmp/x.png", id="absolute-tmp"),
        pytest.param("jobs/./0.png", id="dot-segment"),
        pytest.param("jobs//0.png", id="empty-segment"),
        pytest.param("jobs/0.gif", id="unknown-extension"),
        pytest.param("jobs/0.png\n", id="trailing-newline"),
        pytest.param("jobs\\..\\0.png", id="backslashes"),
        pytest.param("", id="empty"),
    ],
)
def test_storage_rejects_keys_that_are_not_ours(storage: LocalStorage, key: str) -> None:
    with pytest.raises(StorageKeyError):
        storage.put(key, b"x")
    with pytest.raises(StorageKeyError):
        storage.get(key)
    with pytest.raises(StorageKeyError):
        storage.exists(key)
    assert not storage.root.exists()


def test_image_key_is_a_valid_storage_key(storage: LocalStorage) -> None:
    key = image_key("0123abcd", 2, "webp")

    assert key == "jobs/0123abcd/2.webp"
    assert storage.path_of(key) == storage.root / "jobs" / "0123abcd" / "2.webp"


@pytest.mark.parametrize(
    ("key", "content_type"),
    [("a/0.png", "image/png"), ("a/0.jpg", "image/jpeg"), ("a/0.jpeg", "image/jpeg"), ("a/0.webp", "image/webp")],
)
def test_content_type_of_key(key: str, content_type: str) -> None:
    assert content_type_of(key) == content_type
