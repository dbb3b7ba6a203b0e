"""``DELETE /v1/images/generations/{task_id}`` on the real app (Redis, SQLite, the S3 server): an ended task goes
with its images and rows; another key's task is not found; a task that has not ended answers 409."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from producer.http.app import create_app
from shared.db import jobs_repo
from shared.db.engine import make_engine
from shared.db.tables import JobImage, utcnow
from shared.jobs import JobStatus
from shared.storage import image_key, open_storage
from tests.conftest import make_settings
from tests.fakes import png_bytes
from tests.integration.harness import Rows
from tests.s3 import S3Bucket
from tests.support import API_KEY, OTHER_API_KEY

pytestmark = pytest.mark.integration

GENERATIONS = "/v1/images/generations"
GPT = {"model": "gpt-image-1", "prompt": "a lighthouse", "quality": "low", "async": True}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def client(isolated_redis_url: str, sqlite_url: str, s3_bucket: S3Bucket) -> Iterator[TestClient]:
    settings = make_settings(redis_url=isolated_redis_url, database_url=sqlite_url, storage=s3_bucket.settings())
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _finish(sqlite_url: str, storage_settings: dict[str, Any], job_id: str) -> None:
    """End the job as a worker would: its image stored, then → succeeded with the image row."""
    storage = open_storage(make_settings(storage=storage_settings))
    key = image_key(job_id, 0, "png")
    storage.put(key, png_bytes())
    engine = make_engine(sqlite_url)
    with Session(engine) as session:
        now = utcnow()
        assert jobs_repo.transition(
            session=session, job_id=job_id, from_=JobStatus.QUEUED, to=JobStatus.SUBMITTING, now=now
        )
        won, _ = jobs_repo.end_job(
            session=session, job_id=job_id, from_=JobStatus.SUBMITTING, to=JobStatus.SUCCEEDED, now=now
        )
        assert won
        row = JobImage(job_id=job_id, index=0, storage_key=key, content_type="image/png", byte_size=1)
        jobs_repo.add_images(session=session, images=[row])
        session.commit()
    engine.dispose()


def test_an_ended_task_is_erased_with_its_images_and_rows(
    client: TestClient, sqlite_url: str, s3_bucket: S3Bucket
) -> None:
    created = client.post(GENERATIONS, json=GPT, headers=bearer(API_KEY))
    assert created.status_code == 202, created.text
    task_id = created.json()["id"]

    not_ended = client.delete(f"{GENERATIONS}/{task_id}", headers=bearer(API_KEY))
    assert not_ended.status_code == 409
    assert not_ended.json()["error"]["code"] == "task_not_ended"

    _finish(sqlite_url, s3_bucket.settings(), task_id)
    assert s3_bucket.keys() == [image_key(task_id, 0, "png")]

    other = client.delete(f"{GENERATIONS}/{task_id}", headers=bearer(OTHER_API_KEY))
    assert other.status_code == 404
    assert s3_bucket.keys() == [image_key(task_id, 0, "png")]

    deleted = client.delete(f"{GENERATIONS}/{task_id}", headers=bearer(API_KEY))
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"id": task_id, "object": "image.generation.task.deleted", "deleted": True}
    assert s3_bucket.keys() == []
    rows = Rows(sqlite_url)
    try:
        assert rows.jobs([task_id]) == []
        assert rows.events(task_id) == [] and rows.images(task_id) == []
    finally:
        rows.close()
    assert client.get(f"{GENERATIONS}/{task_id}", headers=bearer(API_KEY)).status_code == 404
    assert client.delete(f"{GENERATIONS}/{task_id}", headers=bearer(API_KEY)).status_code == 404
