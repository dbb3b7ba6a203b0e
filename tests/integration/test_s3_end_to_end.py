"""The API and a worker as real processes over S3: images are served from the bucket (presigned, or streamed by the
API), and nothing is written under the files directory."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.integration.harness import Emulator, ProcessesFactory
from tests.s3 import S3Bucket
from tests.support import API_KEY, free_port, wait_until

pytestmark = pytest.mark.integration

GENERATIONS = "/v1/images/generations"
JOBS: list[dict[str, Any]] = [
    {"model": "kling-image", "model_name": "kling-v2-1", "prompt": "a red fox", "n": 2},
    {"model": "gpt-image-1", "prompt": "a blue whale", "quality": "low", "size": "1024x1024"},
]


def _wait_terminal(api: httpx.Client, task_id: str, *, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        task: dict[str, Any] = api.get(f"{GENERATIONS}/{task_id}").json()
        if task["status"] in ("succeeded", "failed", "timed_out", "cancelled"):
            return task
        time.sleep(0.2)
    raise TimeoutError(f"task {task_id} did not end in {timeout_s}s")


@pytest.mark.parametrize("presign", [True, False], ids=["presigned", "streamed"])
def test_images_are_served_from_s3_and_nothing_is_written_under_the_files_dir(
    presign: bool,
    sqlite_url: str,
    processes: ProcessesFactory,
    s3_bucket: S3Bucket,
    files_dir: Path,
    emulator: Emulator,
) -> None:
    port = free_port()
    stack = processes(
        sqlite_url,
        IMAGEJOBS_API_PORT=str(port),
        IMAGEJOBS_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        **s3_bucket.env(presign=str(presign).lower()),
    )
    stack.worker()
    base_url = stack.api()
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as api:
        task_ids = []
        for body in JOBS:
            created = api.post(GENERATIONS, json={**body, "async": True})
            assert created.status_code == 202, created.text
            task_ids.append(created.json()["id"])

        tasks = [_wait_terminal(api, task_id, timeout_s=40) for task_id in task_ids]

    assert [task["status"] for task in tasks] == ["succeeded", "succeeded"]
    urls = [image["url"] for task in tasks for image in task["data"]]
    assert len(urls) == 3
    for task in tasks:
        assert task["expires_at"] == task["finished_at"] + 30 * 24 * 3600
    for url in urls:
        # presigned: the bucket answers; streamed: the API's signed /v1/files URL, read from the bucket
        assert url.startswith(s3_bucket.endpoint_url if presign else f"{base_url}/v1/files/jobs/")
        response = httpx.get(url, timeout=10)
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        with Image.open(io.BytesIO(response.content)) as picture:
            picture.load()
    assert len(s3_bucket.keys()) == 3
    assert list(files_dir.rglob("*")) == []


def test_the_beat_task_deletes_expired_images_from_the_bucket(
    sqlite_url: str, processes: ProcessesFactory, s3_bucket: S3Bucket, emulator: Emulator
) -> None:
    stack = processes(
        sqlite_url,
        IMAGEJOBS_RETENTION__RESULTS_S="5",
        IMAGEJOBS_RETENTION__INPUTS_S="5",
        IMAGEJOBS_RETENTION__INTERVAL_S="1",
        **s3_bucket.env(),
    )
    stack.worker()
    stack.beat()
    base_url = stack.api()
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as api:
        created = api.post(GENERATIONS, json={**JOBS[1], "async": True})
        assert created.status_code == 202, created.text
        task = _wait_terminal(api, created.json()["id"], timeout_s=30)
        assert task["status"] == "succeeded" and len(task["data"]) == 1
        assert task["expires_at"] == task["finished_at"] + 5
        assert len(s3_bucket.keys()) == 1

        wait_until(lambda: s3_bucket.keys() == [], timeout_s=30, what="the purge to delete the image")
        after = api.get(f"{GENERATIONS}/{task['id']}").json()

    assert after["status"] == "succeeded" and after["data"] == []
    assert after["cost"] == task["cost"]  # the bill stays with the row
