"""Object storage on a real S3 API server (moto's, on loopback): the store itself, the pipeline's finish over it,
and a storage outage during finish (transient: the job is neither failed nor billed twice)."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import httpx
import pytest
from PIL import Image

from shared.config import Settings
from shared.errors import StorageUnavailableError
from shared.files import ResultUrls
from shared.jobs import JobStatus
from shared.storage import image_key, input_key, open_storage
from shared.storage.s3 import S3Storage
from tests.conftest import make_settings
from tests.fakes import accepted, completed, png_bytes, succeeded
from tests.s3 import S3Bucket
from tests.support import REPO, base_env, celery_worker_command, free_port
from tests.unit.conftest import OPENAI_REQUEST, HarnessFactory
from worker.finishing import STORAGE_RETRY_S
from worker.pipeline import poll_job, submit_job

pytestmark = pytest.mark.integration


def _s3(bucket: S3Bucket, **overrides: object) -> Settings:
    return make_settings(storage=bucket.settings(**overrides))


def _dead_store() -> dict[str, object]:
    """Storage settings of an S3 endpoint where nothing listens (an outage)."""
    return {"endpoint_url": f"http://127.0.0.1:{free_port()}", "timeout_s": 1}


# -- the store -----------------------------------------------------------------------------------------


def test_s3_url_picks_the_s3_backend_and_file_url_the_directory(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    assert isinstance(open_storage(_s3(s3_bucket)), S3Storage)
    local = make_settings(storage={"url": f"file://{tmp_path}"})
    assert not isinstance(open_storage(local), S3Storage)
    assert make_settings(files_dir=tmp_path).storage.url == f"file://{tmp_path}"


def test_put_sets_the_content_type_and_a_rewrite_replaces_the_object(s3_bucket: S3Bucket) -> None:
    storage = open_storage(_s3(s3_bucket))
    key = image_key("job1", 0, "png")
    first, second = png_bytes(color="red"), png_bytes(color="blue")

    storage.put(key, first)
    storage.put(key, second)  # a retried finish writes the same key again

    assert s3_bucket.keys() == [key]  # one object, under the configured prefix
    assert s3_bucket.head(key)["ContentType"] == "image/png"
    assert storage.get(key) == second
    assert storage.exists(key) and not storage.exists(image_key("job1", 1, "png"))
    with pytest.raises(FileNotFoundError):
        storage.get(image_key("job1", 1, "png"))


def test_delete_prefix_removes_one_jobs_objects_and_is_idempotent(s3_bucket: S3Bucket) -> None:
    storage = open_storage(_s3(s3_bucket))
    for key in (image_key("a", 0, "png"), image_key("a", 1, "png"), input_key("a", 0, "png"), image_key("b", 0, "png")):
        storage.put(key, png_bytes())

    storage.delete_prefix("jobs/a/")
    storage.delete_prefix("jobs/a/")  # nothing left there: no error

    assert s3_bucket.keys() == [input_key("a", 0, "png"), image_key("b", 0, "png")]


def test_presigned_url_downloads_the_image_and_expires_like_a_files_url(s3_bucket: S3Bucket) -> None:
    settings = make_settings(storage=s3_bucket.settings(), file_url_ttl_s=3600)
    storage = open_storage(settings)
    key = image_key("job2", 0, "png")
    storage.put(key, png_bytes(16, 8))

    url = ResultUrls(settings, storage).signer()(key)

    assert url.startswith(f"{s3_bucket.endpoint_url}/{s3_bucket.name}/results/{key}?")
    parsed = httpx.URL(url)
    assert parsed.params["X-Amz-Expires"] == "3600"
    assert parsed.params["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as picture:
        assert picture.size == (16, 8)


def test_presigned_urls_name_the_public_endpoint_when_one_is_set(s3_bucket: S3Bucket) -> None:
    # the same server under another name: what a proxy in front of the store looks like to a caller
    public = s3_bucket.endpoint_url.replace("127.0.0.1", "localhost")
    settings = make_settings(storage=s3_bucket.settings(presign_endpoint_url=public))
    storage = open_storage(settings)
    key = image_key("job3", 0, "png")
    storage.put(key, png_bytes())

    url = ResultUrls(settings, storage).signer()(key)

    assert url.startswith(f"{public}/{s3_bucket.name}/results/{key}?")
    assert httpx.get(url).content == png_bytes()


def test_without_presign_results_get_api_signed_files_urls(s3_bucket: S3Bucket) -> None:
    settings = make_settings(storage=s3_bucket.settings(presign=False), public_base_url="https://img.example.com")
    url = ResultUrls(settings, open_storage(settings)).signer()("jobs/j/0.png")
    assert url.startswith("https://img.example.com/v1/files/jobs/j/0.png?expires=")


def test_an_unreachable_store_is_unavailable_not_a_crash(s3_bucket: S3Bucket) -> None:
    storage = open_storage(_s3(s3_bucket, **_dead_store()))
    with pytest.raises(StorageUnavailableError, match=r"storing jobs/x/0\.png failed"):
        storage.put(image_key("x", 0, "png"), png_bytes())
    with pytest.raises(StorageUnavailableError):
        storage.get(image_key("x", 0, "png"))
    with pytest.raises(StorageUnavailableError):
        storage.delete_prefix("jobs/x/")


# -- the pipeline over S3 ------------------------------------------------------------------------------


def test_a_finished_job_is_stored_in_s3_and_nothing_under_the_files_dir(
    make_harness: HarnessFactory, sqlite_url: str, s3_bucket: S3Bucket
) -> None:
    harness = make_harness(sqlite_url, storage=s3_bucket.settings())
    job_id = harness.enqueue(OPENAI_REQUEST, n=2)
    harness.openai.submissions.append(completed(2))

    submit_job(job_id, rt=harness.rt)

    assert harness.job(job_id).status == JobStatus.SUCCEEDED
    keys = [image.storage_key for image in harness.images(job_id)]
    assert keys == [image_key(job_id, 0, "png"), image_key(job_id, 1, "png")]
    assert s3_bucket.keys() == keys
    assert not harness.files_dir.exists()
    assert len(harness.costs(job_id)) == 1


def test_storage_outage_while_finishing_a_polled_job_polls_again_and_bills_once(
    make_harness: HarnessFactory, sqlite_url: str, s3_bucket: S3Bucket
) -> None:
    harness = make_harness(sqlite_url, storage=s3_bucket.settings())
    job_id = harness.enqueue()
    harness.kling.submissions.append(accepted("up-9"))
    submit_job(job_id, rt=harness.rt)
    working = harness.rt.storage

    # the store goes away just as the upstream reports the result
    harness.rt.storage = open_storage(_s3(s3_bucket, **_dead_store()))
    harness.kling.polls.append(succeeded())
    poll_job(job_id, 0, rt=harness.rt)

    job = harness.job(job_id)
    assert job.status == JobStatus.RUNNING and job.error_code is None  # not failed
    assert harness.costs(job_id) == [] and harness.images(job_id) == []
    assert harness.sender.polls[-1][:2] == (job_id, 1)  # the next link is scheduled

    # the store is back: the next poll finishes the job, once
    harness.rt.storage = working
    harness.kling.polls.append(succeeded())
    poll_job(job_id, 1, rt=harness.rt)
    poll_job(job_id, 1, rt=harness.rt)  # a duplicated message changes nothing

    assert harness.job(job_id).status == JobStatus.SUCCEEDED
    assert len(harness.costs(job_id)) == 1
    assert s3_bucket.keys() == [image_key(job_id, 0, "png")]


def test_storage_outage_while_finishing_a_sync_job_requeues_it_without_counting_the_attempt(
    make_harness: HarnessFactory, sqlite_url: str, s3_bucket: S3Bucket
) -> None:
    harness = make_harness(sqlite_url, storage=s3_bucket.settings(**_dead_store()))
    job_id = harness.enqueue(OPENAI_REQUEST)
    harness.openai.submissions.append(completed(1))

    submit_job(job_id, rt=harness.rt)

    job = harness.job(job_id)
    assert job.status == JobStatus.QUEUED and job.error_code is None
    assert job.submit_attempts == 0  # the upstream did its part: not an attempt that failed
    assert harness.costs(job_id) == []
    assert harness.sender.submits == [(job_id, STORAGE_RETRY_S)]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("IMAGEJOBS_STORAGE__URL", "s3://Not_A_Bucket"),
        ("IMAGEJOBS_STORAGE__URL", "ftp://files"),
        ("IMAGEJOBS_STORAGE__ENDPOINT_URL", "127.0.0.1:9000"),
        ("IMAGEJOBS_STORAGE__ACCESS_KEY_ID", "only-half-of-a-pair"),
    ],
)
def test_a_bad_storage_setting_stops_the_worker_with_one_line_naming_it(variable: str, value: str) -> None:
    env = base_env(redis_url="redis://127.0.0.1:9/0", database_url="sqlite://", files_dir=Path("unused"),
                   emulator_url="http://127.0.0.1:9", IMAGEJOBS_STORAGE__URL="s3://bucket1")  # fmt: skip
    env[variable] = value
    started = subprocess.run(celery_worker_command(1), env=env, cwd=REPO, capture_output=True, text=True, timeout=60)

    assert started.returncode != 0
    assert "Traceback" not in started.stderr
    [line] = started.stderr.strip().splitlines()
    assert line.startswith("imagejobs: invalid settings: IMAGEJOBS_STORAGE")
    assert variable.removeprefix("IMAGEJOBS_STORAGE__").split("_")[0] in line
