"""A real S3 API server for tests: moto's standalone server (``moto[server]``) as a process on a free loopback port.

Each test gets its own bucket, created with boto3 (moto's own client) and emptied and removed afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from tests.support import Process, free_port, http_ok, python_command, wait_until

#: moto accepts any credentials; these only have to be the same on both sides
ACCESS_KEY_ID = "test-s3-access-key"
SECRET_ACCESS_KEY = "test-s3-secret-access-key"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Bucket:
    endpoint_url: str
    name: str
    prefix: str

    @property
    def url(self) -> str:
        return f"s3://{self.name}/{self.prefix}"

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """The ``storage`` section of ``Settings`` for this bucket."""
        return {
            "url": self.url,
            "endpoint_url": self.endpoint_url,
            "region": REGION,
            "access_key_id": ACCESS_KEY_ID,
            "secret_access_key": SECRET_ACCESS_KEY,
            "timeout_s": 5,
            **overrides,
        }

    def env(self, **overrides: str) -> dict[str, str]:
        """The same as ``IMAGEJOBS_STORAGE__*`` variables for a process."""
        return {f"IMAGEJOBS_STORAGE__{key.upper()}": str(value) for key, value in self.settings(**overrides).items()}

    def keys(self) -> list[str]:
        """Every key under the prefix, relative to it."""
        found: list[str] = []
        for page in (
            client(self.endpoint_url)
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.name, Prefix=f"{self.prefix}/")
        ):
            found.extend(item["Key"].removeprefix(f"{self.prefix}/") for item in page.get("Contents", []))
        return sorted(found)

    def head(self, key: str) -> dict[str, Any]:
        result: dict[str, Any] = client(self.endpoint_url).head_object(Bucket=self.name, Key=f"{self.prefix}/{key}")
        return result


def client(endpoint_url: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )


@contextmanager
def s3_server(log_dir: Path) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1:<free port>; yields its endpoint URL."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    process = Process("moto-s3", python_command("-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)), env=env,
                      log_dir=log_dir)  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_ok(f"{endpoint}/moto-api/"), timeout_s=30, what="the S3 server")
        yield endpoint
    finally:
        process.stop()


@contextmanager
def fresh_bucket(endpoint_url: str) -> Iterator[S3Bucket]:
    bucket = S3Bucket(endpoint_url=endpoint_url, name=f"imagejobs-{uuid.uuid4().hex[:16]}", prefix="results")
    s3 = client(endpoint_url)
    s3.create_bucket(Bucket=bucket.name)
    try:
        yield bucket
    finally:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket.name):
            for item in page.get("Contents", []):
                s3.delete_object(Bucket=bucket.name, Key=item["Key"])
        s3.delete_bucket(Bucket=bucket.name)
