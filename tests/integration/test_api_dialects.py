"""The Kling-task and apimodels dialects and ``POST /v1/images/edits``: the API in-process against the real
private Redis and a real SQLite file (no worker: a test moves a job along itself, as a worker would).

Each dialect answers in its own envelope (success and errors), creates the same durable job as the OpenAI
dialect, and shows a job of another key as not found. Edits take what the openai SDK sends (multipart files)
and JSON, and refuse oversized or non-image uploads naming the field, with nothing written.
"""

from __future__ import annotations

import base64
import io
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from redis import Redis
from sqlmodel import Session

from producer.http.app import create_app
from shared.db import jobs_repo
from shared.db.tables import Job, JobEvent, JobImage, utcnow
from shared.jobs import JobStatus
from shared.queue import QueueName
from shared.storage import LocalStorage, image_key
from tests.conftest import make_settings
from tests.integration.harness import Rows
from tests.support import API_KEY, OTHER_API_KEY, queued_count

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {API_KEY}"}
OTHER_AUTH = {"Authorization": f"Bearer {OTHER_API_KEY}"}
KLING = "/kling/v1/images/generations"
APIMODELS = "/api/v1/images/generations"
EDITS = "/v1/images/edits"
PROMPT = "a lighthouse at dusk, marker-5d1e8b"
#: the Kling-task gateway's example body: a prompt and nothing else
SEED_002_BODY = {"prompt": PROMPT}
MAX_IMAGE_BYTES = 64 * 1024


@dataclass
class Api:
    client: TestClient
    redis: Redis
    rows: Rows
    storage: LocalStorage

    def submit_queue_length(self) -> int:
        return queued_count(self.redis, QueueName.SUBMIT.value)

    def assert_nothing_written(self) -> None:
        assert self.rows.count(Job) == 0
        assert self.rows.count(JobEvent) == 0
        assert self.submit_queue_length() == 0

    def advance(self, job_id: str, *, to: JobStatus, images: int = 0, error: str | None = None) -> None:
        """Move a job forward as a worker would (claimed, running upstream, ended), its images stored first."""
        path = [JobStatus.QUEUED, JobStatus.SUBMITTING, JobStatus.RUNNING, to]
        with Session(self.rows.engine) as session:
            current = JobStatus(self.rows.job(job_id).status)
            for src, dst in itertools.pairwise(path):
                if path.index(src) < path.index(current) or src == dst:
                    continue
                if dst in (JobStatus.SUBMITTING, JobStatus.RUNNING):
                    assert jobs_repo.transition(session=session, job_id=job_id, from_=src, to=dst)
                    continue
                self._store_images(session, job_id, images)
                won, _ = jobs_repo.end_job(
                    session=session,
                    job_id=job_id,
                    from_=src,
                    to=dst,
                    now=utcnow() + timedelta(milliseconds=250),
                    error_code="content_policy_violation" if error is not None else None,
                    error_message=error,
                )
                assert won
            session.commit()

    def _store_images(self, session: Session, job_id: str, count: int) -> None:
        keys = [image_key(job_id, index, "png") for index in range(count)]
        for key in keys:
            self.storage.put(key, png(48, "navy"))
        rows = [
            JobImage(job_id=job_id, index=index, storage_key=key, content_type="image/png", byte_size=1)
            for index, key in enumerate(keys)
        ]
        jobs_repo.add_images(session=session, images=rows)


@pytest.fixture
def api(isolated_redis_url: str, sqlite_url: str, tmp_path: Path) -> Iterator[Api]:
    # a short sync wait: a sync edit (no worker runs here) answers its task with 202 after one second
    files = tmp_path / "files"
    settings = make_settings(
        redis_url=isolated_redis_url,
        database_url=sqlite_url,
        files_dir=files,
        sync_timeout_s=1,
        max_image_bytes=MAX_IMAGE_BYTES,
    )
    redis = Redis.from_url(isolated_redis_url)
    rows = Rows(sqlite_url)
    try:
        with TestClient(create_app(settings)) as client:
            yield Api(client=client, redis=redis, rows=rows, storage=LocalStorage(files))
    finally:
        rows.close()
        redis.close()


def png(size: int = 32, color: str = "teal") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def noisy_png(size: int) -> bytes:
    """A PNG that does not compress (about 3 bytes per pixel)."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (size, size), os.urandom(size * size * 3)).save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def is_ms(value: Any) -> bool:
    return isinstance(value, int) and 1_600_000_000_000 < value < 4_000_000_000_000


# ============================================================================================ Kling-task


def test_seed_002s_body_creates_a_kling_task_in_klings_envelope(api: Api) -> None:
    response = api.client.post(KLING, json=SEED_002_BODY, headers=AUTH)

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"code", "message", "request_id", "data"}
    assert body["code"] == 0 and body["message"] and body["request_id"]
    data = body["data"]
    assert set(data) == {"task_id", "task_status", "created_at", "updated_at"}
    assert data["task_status"] == "submitted"
    assert is_ms(data["created_at"]) and is_ms(data["updated_at"])
    job = api.rows.job(data["task_id"])
    assert (job.model, job.variant, job.status) == ("kling-image", "kling-v1", "queued")
    assert api.submit_queue_length() == 1


def test_a_kling_task_is_read_back_through_every_status(api: Api) -> None:
    created = api.client.post(KLING, json={**SEED_002_BODY, "n": 2, "aspect_ratio": "16:9"}, headers=AUTH)
    task_id = created.json()["data"]["task_id"]

    def read() -> dict[str, Any]:
        response = api.client.get(f"{KLING}/{task_id}", headers=AUTH)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["code"] == 0 and body["request_id"]
        data: dict[str, Any] = body["data"]
        return data

    queued = read()
    assert queued["task_status"] == "submitted"
    assert queued["task_status_msg"] == ""
    assert queued["task_result"] == {"images": []}
    assert queued["created_at"] == created.json()["data"]["created_at"]

    api.advance(task_id, to=JobStatus.RUNNING)
    assert read()["task_status"] == "processing"

    api.advance(task_id, to=JobStatus.SUCCEEDED, images=2)
    succeeded = read()
    assert succeeded["task_status"] == "succeed"
    assert succeeded["updated_at"] >= succeeded["created_at"]
    images = succeeded["task_result"]["images"]
    assert [image["index"] for image in images] == [0, 1]
    for image in images:
        download = api.client.get(image["url"])
        assert download.status_code == 200
        assert download.content.startswith(b"\x89PNG")


def test_a_failed_kling_task_says_why(api: Api) -> None:
    task_id = api.client.post(KLING, json=SEED_002_BODY, headers=AUTH).json()["data"]["task_id"]
    api.advance(task_id, to=JobStatus.FAILED, error="Content policy violation")

    data = api.client.get(f"{KLING}/{task_id}", headers=AUTH).json()["data"]

    assert data["task_status"] == "failed"
    assert data["task_status_msg"] == "Content policy violation"
    assert data["task_result"] == {"images": []}


@pytest.mark.parametrize(
    ("body", "model", "model_name"),
    [
        pytest.param({"model": "kling-image", "model_name": "kling-v2-1"}, "kling-image", "kling-v2-1", id="explicit"),
        pytest.param({"model_name": "kling-v3"}, "kling-image", "kling-v3", id="model-name-only"),
        pytest.param({"model": "kling-v1-5"}, "kling-image", "kling-v1-5", id="klings-legacy-model-field"),
        pytest.param({"model": "kling-v2-1"}, "kling-v2-1", None, id="a-seed-003-model"),
        pytest.param({"model": "gpt-image-1"}, "gpt-image-1", None, id="another-catalog-model"),
    ],
)
def test_a_kling_body_may_name_its_model(api: Api, body: dict[str, Any], model: str, model_name: str | None) -> None:
    response = api.client.post(KLING, json={**SEED_002_BODY, **body}, headers=AUTH)

    assert response.status_code == 200, response.text
    job = api.rows.job(response.json()["data"]["task_id"])
    assert (job.model, job.variant) == (model, model_name)


KLING_BAD_REQUESTS = [
    pytest.param({"n": 10}, "'n'", id="n-over-9"),
    pytest.param({"n": 0}, "'n'", id="n-under-1"),
    pytest.param({"image_fidelity": 1.5}, "'image_fidelity'", id="fidelity-over-1"),
    pytest.param({"aspect_ratio": "5:4"}, "'aspect_ratio'", id="bad-aspect-ratio"),
    pytest.param({"prompt": "x" * 2501}, "'prompt'", id="prompt-over-2500"),
    pytest.param({"prompt": None}, "'prompt'", id="no-prompt"),
    pytest.param({"model_name": "kling-v9"}, "'kling-v9'", id="unknown-model-name"),
    pytest.param({"model": "kling-v99"}, "'kling-v99'", id="unknown-model"),
    pytest.param({"colour": "red"}, "colour", id="unknown-field"),
    pytest.param({"async": True}, "'async'", id="async-is-not-a-kling-field"),
    pytest.param({"callback_url": "ftp://example.com/hook"}, "'callback_url'", id="bad-callback-url"),
]


@pytest.mark.parametrize(("change", "named"), KLING_BAD_REQUESTS)
def test_a_bad_kling_body_is_refused_in_klings_envelope(api: Api, change: dict[str, Any], named: str) -> None:
    body = {key: value for key, value in {**SEED_002_BODY, **change}.items() if value is not None}

    response = api.client.post(KLING, json=body, headers=AUTH)

    assert response.status_code == 400, response.text
    error = response.json()
    assert set(error) == {"code", "message", "request_id"}
    assert error["code"] == 1201
    assert named in error["message"]
    assert PROMPT not in error["message"]
    api.assert_nothing_written()


def test_a_kling_body_that_is_not_json_is_refused_with_1200(api: Api) -> None:
    response = api.client.post(KLING, content=b'{"prompt": ', headers={**AUTH, "content-type": "application/json"})

    assert response.status_code == 400
    assert response.json()["code"] == 1200
    api.assert_nothing_written()


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        pytest.param({}, 1001, id="no-header"),
        pytest.param({"Authorization": "Bearer sk-test-" + "z" * 24}, 1002, id="unknown-key"),
    ],
)
def test_a_kling_request_without_a_valid_key_is_refused_with_401(api: Api, headers: dict[str, str], code: int) -> None:
    created = api.client.post(KLING, json=SEED_002_BODY, headers=headers)
    read = api.client.get(f"{KLING}/anything", headers=headers)

    for response in (created, read):
        assert response.status_code == 401
        assert response.json()["code"] == code
        assert set(response.json()) == {"code", "message", "request_id"}
    api.assert_nothing_written()


def test_a_kling_task_of_another_key_is_not_found(api: Api) -> None:
    task_id = api.client.post(KLING, json=SEED_002_BODY, headers=AUTH).json()["data"]["task_id"]

    for path in (f"{KLING}/{task_id}", f"{KLING}/no-such-task"):
        response = api.client.get(path, headers=OTHER_AUTH if task_id in path else AUTH)
        assert response.status_code == 404
        assert response.json()["code"] == 1203


def test_external_task_id_makes_a_kling_task_idempotent_and_readable_by_it(api: Api) -> None:
    body = {**SEED_002_BODY, "external_task_id": "order-42"}

    first = api.client.post(KLING, json=body, headers=AUTH).json()["data"]
    again = api.client.post(KLING, json=body, headers=AUTH).json()["data"]
    by_external = api.client.get(f"{KLING}/order-42", headers=AUTH)

    assert again["task_id"] == first["task_id"]
    assert first["task_info"] == {"external_task_id": "order-42"}
    assert api.rows.count(Job) == 1 and api.submit_queue_length() == 1
    assert by_external.status_code == 200 and by_external.json()["data"]["task_id"] == first["task_id"]
    assert api.client.get(f"{KLING}/order-42", headers=OTHER_AUTH).status_code == 404


# ============================================================================================ apimodels

#: the apimodels public models with a valid body each (and the ``data.model`` apimodels shows, where it shows one)
SEED_003_BODIES: list[Any] = [
    pytest.param({"model": "kling-v2", "prompt": PROMPT}, None, id="kling-v2"),
    pytest.param(
        {"model": "kling-v2-new", "prompt": PROMPT, "image_url": "https://example.com/in.png"}, None, id="kling-v2-new"
    ),
    pytest.param({"model": "kling-v2-1", "prompt": PROMPT, "n": 2}, None, id="kling-v2-1"),
    pytest.param(
        {"model": "kling-v3-image", "prompt": PROMPT, "aspect_ratio": "16:9", "resolution": "2k", "n": 1},
        "kling-image-gen/kling-v3",
        id="kling-v3-image",
    ),
    pytest.param(
        {
            "model": "kling-multi-image",
            "prompt": PROMPT,
            "subject_image_list": [{"subject_image": "https://example.com/s1.png"}],
        },
        None,
        id="kling-multi-image",
    ),
    pytest.param(
        {
            "model": "kling-multi-image",
            "multi_model_name": "kling-v2",
            "subject_image_list": [{"subject_image": f"https://example.com/s{index}.png"} for index in range(4)],
            "scene_image": "https://example.com/scene.png",
            "n": 9,
        },
        None,
        id="kling-multi-image-v2-four-subjects",
    ),
    pytest.param(
        {
            "model": "kling-expand",
            "image_url": "https://example.com/in.png",
            "up_expansion_ratio": 0.2,
            "down_expansion_ratio": 0.2,
            "left_expansion_ratio": 0.3,
            "right_expansion_ratio": 0.3,
        },
        None,
        id="kling-expand",
    ),
    pytest.param({"model": "kling-image-o1", "prompt": PROMPT}, None, id="kling-image-o1"),
]


@pytest.mark.parametrize(("body", "label"), SEED_003_BODIES)
def test_seed_003s_models_create_apimodels_tasks(api: Api, body: dict[str, Any], label: str | None) -> None:
    response = api.client.post(APIMODELS, json=body, headers=AUTH)

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["code"] == 200 and answer["msg"] == "success"
    data = answer["data"]
    assert set(data) == {"taskId", "state", "model"}
    assert data["state"] == "pending"
    job = api.rows.job(data["taskId"])
    assert job.model == body["model"]
    assert data["model"] == (label or f"{job.provider}-image-gen/{job.upstream_model}")
    assert api.submit_queue_length() == 1


def test_an_apimodels_task_is_read_back_through_every_state(api: Api) -> None:
    body = {"model": "kling-image", "model_name": "kling-v3", "prompt": PROMPT, "n": 2}
    created = api.client.post(APIMODELS, json=body, headers=AUTH).json()["data"]
    task_id = created["taskId"]
    assert created["model"] == "kling-image-gen/kling-v3"

    def read() -> dict[str, Any]:
        response = api.client.get(APIMODELS, params={"task_id": task_id}, headers=AUTH)
        assert response.status_code == 200, response.text
        assert response.json()["code"] == 200 and response.json()["msg"] == "success"
        data: dict[str, Any] = response.json()["data"]
        return data

    pending = read()
    assert pending == {"taskId": task_id, "state": "pending", "model": created["model"], "createTime": ANY_MS}
    api.advance(task_id, to=JobStatus.SUCCEEDED, images=2)
    completed = read()
    assert completed["state"] == "completed"
    assert completed["completeTime"] >= completed["createTime"]
    assert len(completed["resultUrls"]) == 2
    for url in completed["resultUrls"]:
        assert api.client.get(url).content.startswith(b"\x89PNG")


def test_a_failed_apimodels_task_has_its_reason(api: Api) -> None:
    body = {"model": "gpt-image-1", "prompt": PROMPT}
    task_id = api.client.post(APIMODELS, json=body, headers=AUTH).json()["data"]["taskId"]
    api.advance(task_id, to=JobStatus.RUNNING)
    processing = api.client.get(APIMODELS, params={"task_id": task_id}, headers=AUTH).json()["data"]
    api.advance(task_id, to=JobStatus.FAILED, error="Content policy violation")
    failed = api.client.get(APIMODELS, params={"task_id": task_id}, headers=AUTH).json()["data"]

    assert processing["state"] == "processing" and processing["model"] == "openai-image-gen/gpt-image-1"
    assert failed["state"] == "failed"
    assert failed["failMsg"] == "Content policy violation"
    assert "resultUrls" not in failed and is_ms(failed["completeTime"])


APIMODELS_BAD_REQUESTS = [
    pytest.param({"prompt": PROMPT}, "'model'", id="no-model"),
    pytest.param({"model": "kling-v9-image", "prompt": PROMPT}, "'kling-v9-image'", id="unknown-model"),
    pytest.param({"model": "kling-image", "model_name": "kling-v3", "prompt": PROMPT, "n": 10}, "'n'", id="n-over-9"),
    pytest.param({"model": "kling-image", "model_name": "kling-v3"}, "'prompt'", id="no-prompt"),
    pytest.param({"model": "gpt-image-1", "prompt": PROMPT, "response_format": "url"}, "'response_format'", id="rf"),
    pytest.param({"model": "kling-v3-image", "prompt": "x" * 2501}, "'prompt'", id="prompt-over-2500"),
    pytest.param({"model": "kling-v3-image", "prompt": PROMPT, "resolution": "4k"}, "'resolution'", id="resolution"),
    pytest.param(
        {"model": "kling-multi-image", "subject_image_list": [{"subject_image": "https://example.com/s.png"}] * 5},
        "'subject_image_list'",
        id="five-subject-images",
    ),
    pytest.param(
        {"model": "kling-multi-image", "subject_image_list": [], "multi_model_name": "kling-v3"},
        "'multi_model_name'",
        id="unknown-multi-model-name",
    ),
    pytest.param(
        {
            "model": "kling-expand",
            "image_url": "https://example.com/in.png",
            **{f"{side}_expansion_ratio": 1.0 for side in ("up", "down", "left", "right")},
        },
        "≤ 3",
        id="expansion-over-3x",
    ),
]


@pytest.mark.parametrize(("body", "named"), APIMODELS_BAD_REQUESTS)
def test_a_bad_apimodels_body_is_refused_in_its_envelope(api: Api, body: dict[str, Any], named: str) -> None:
    response = api.client.post(APIMODELS, json=body, headers=AUTH)

    assert response.status_code == 400, response.text
    error = response.json()
    assert set(error) == {"code", "msg", "data"}
    assert error["code"] == 400 and error["data"] is None
    assert named in error["msg"]
    api.assert_nothing_written()


def test_apimodels_auth_and_lookup_errors_use_its_envelope(api: Api) -> None:
    task_id = api.client.post(APIMODELS, json={"model": "gpt-image-1", "prompt": PROMPT}, headers=AUTH).json()["data"]
    answers = {
        401: api.client.post(APIMODELS, json={"model": "gpt-image-1", "prompt": PROMPT}),
        404: api.client.get(APIMODELS, params={"task_id": task_id["taskId"]}, headers=OTHER_AUTH),
        400: api.client.get(APIMODELS, headers=AUTH),
    }

    for status, response in answers.items():
        assert response.status_code == status, response.text
        assert response.json()["code"] == status and response.json()["data"] is None
    assert "task_id" in answers[400].json()["msg"]
    assert api.rows.count(Job) == 1


# ============================================================================================ edits


@pytest.fixture
def sdk(api: Api) -> openai.OpenAI:
    """The official openai client over the in-process API (the ``TestClient`` is the SDK's own httpx2 client)."""
    return openai.OpenAI(base_url="http://testserver/v1", api_key=API_KEY, http_client=api.client, max_retries=0)


def test_the_openai_sdk_edits_an_image_as_an_async_task(api: Api, sdk: openai.OpenAI) -> None:
    source = png(64, "teal")

    raw = sdk.images.with_raw_response.edit(
        model="gpt-image-1", image=("in.png", source, "image/png"), prompt=PROMPT, n=2, extra_body={"async": True}
    )

    assert raw.http_response.status_code == 202
    task = raw.http_response.json()
    assert task["status"] == "queued" and task["model"] == "gpt-image-1"
    assert raw.parse().created == task["created"]
    job = api.rows.job(task["id"])
    assert (job.operation, job.image_count) == ("edit", 2)
    assert job.upstream_params["image"] == data_uri(source)
    assert api.submit_queue_length() == 1


def test_the_openai_sdk_sends_several_images_and_a_mask(api: Api, sdk: openai.OpenAI) -> None:
    first, second, mask = png(40, "red"), png(40, "blue"), png(40, "white")

    raw = sdk.images.with_raw_response.edit(
        model="gpt-image-1",
        image=[("a.png", first, "image/png"), ("b.png", second, "image/png")],
        mask=("mask.png", mask, "image/png"),
        prompt=PROMPT,
        extra_body={"async": True},
    )

    assert raw.http_response.status_code == 202
    job = api.rows.job(raw.http_response.json()["id"])
    assert job.upstream_params["images"] == [data_uri(first), data_uri(second)]
    assert job.upstream_params["mask"] == data_uri(mask)


def test_a_sync_edit_answers_its_task_when_the_wait_runs_out(api: Api, sdk: openai.OpenAI) -> None:
    raw = sdk.images.with_raw_response.edit(model="gpt-image-1", image=("in.png", png(), "image/png"), prompt=PROMPT)

    assert raw.http_response.status_code == 202  # no worker runs in this test: the 1 s wait ends first
    assert api.rows.job(raw.http_response.json()["id"]).status == "queued"


@pytest.mark.parametrize(
    "image",
    [
        pytest.param("https://example.com/in.png", id="url"),
        pytest.param(data_uri(png()), id="data-uri"),
        pytest.param(base64.b64encode(png()).decode(), id="raw-base64"),
    ],
)
def test_a_json_edit_takes_its_image_as_url_data_uri_or_base64(api: Api, image: str) -> None:
    body = {"model": "gpt-image-1", "prompt": PROMPT, "image": image, "async": True}

    response = api.client.post(EDITS, json=body, headers=AUTH)

    assert response.status_code == 202, response.text
    job = api.rows.job(response.json()["id"])
    assert job.operation == "edit" and job.upstream_params["image"] == image


def test_an_edit_of_a_kling_model_takes_its_own_fields_as_form_fields(api: Api) -> None:
    response = api.client.post(
        EDITS,
        data={"model": "kling-image", "model_name": "kling-v2-1", "prompt": PROMPT, "n": "3", "async": "true"},
        files={"image": ("in.png", png(), "image/png")},
        headers=AUTH,
    )

    assert response.status_code == 202, response.text
    job = api.rows.job(response.json()["id"])
    assert (job.model, job.variant, job.operation, job.image_count) == ("kling-image", "kling-v2-1", "img2img", 3)


EDIT_REFUSALS = [
    pytest.param({"files": {"image": ("big.png", noisy_png(200), "image/png")}}, 413, "image", id="file-too-large"),
    pytest.param({"files": {"image": ("in.txt", b"hello", "text/plain")}}, 400, "image", id="not-an-image-type"),
    pytest.param(
        {"files": {"image": ("in.png", b"not a png at all", "image/png")}}, 400, "image", id="not-image-bytes"
    ),
    pytest.param(
        {"files": {"image": ("in.png", png(), "image/png"), "mask": ("m.jpg", b"\xff\xd8\xff" + b"\0" * 64, None)}},
        400,
        "mask",
        id="mask-not-png",
    ),
    pytest.param({"files": {"prompt": ("p.png", png(), "image/png")}}, 400, "prompt", id="file-for-a-text-field"),
    pytest.param({"data": {"colour": "red"}}, 400, "colour", id="unknown-form-field"),
    pytest.param({"data": {"n": "two"}}, 400, "n", id="n-not-a-number"),
    pytest.param({"data": {"model": "dall-e-3"}}, 400, "image", id="model-without-edits"),
]


@pytest.mark.parametrize(("extra", "status", "param"), EDIT_REFUSALS)
def test_a_bad_multipart_edit_is_refused_naming_the_field(
    api: Api, extra: dict[str, Any], status: int, param: str
) -> None:
    files = extra.get("files", {"image": ("in.png", png(), "image/png")})
    data = {"model": "gpt-image-1", "prompt": PROMPT, "async": "true", **extra.get("data", {})}

    response = api.client.post(EDITS, data=data, files=files, headers=AUTH)

    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    api.assert_nothing_written()


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        pytest.param({"image": data_uri(noisy_png(200))}, 413, "image", id="inline-image-too-large"),
        pytest.param({}, 400, "image", id="no-input-image"),
        pytest.param({"image": "not an image"}, 400, "image", id="not-an-image-reference"),
    ],
)
def test_a_bad_json_edit_is_refused_naming_the_field(api: Api, body: dict[str, Any], status: int, param: str) -> None:
    response = api.client.post(EDITS, json={"model": "gpt-image-1", "prompt": PROMPT, **body}, headers=AUTH)

    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param
    api.assert_nothing_written()


def test_an_edit_body_over_the_limit_is_refused_before_it_is_read(api: Api) -> None:
    headers = {**AUTH, "content-type": "multipart/form-data; boundary=x"}

    response = api.client.post(EDITS, content=b"x" * (4 * 1024 * 1024), headers=headers)

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    api.assert_nothing_written()


def test_an_edit_needs_a_key_and_a_known_body_type(api: Api) -> None:
    unauthenticated = api.client.post(EDITS, files={"image": ("in.png", png(), "image/png")}, data={"prompt": "p"})
    plain_text = api.client.post(EDITS, content=b"hello", headers={**AUTH, "content-type": "text/plain"})

    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"]["type"] == "authentication_error"
    assert plain_text.status_code == 400
    assert plain_text.json()["error"]["code"] == "unsupported_content_type"
    api.assert_nothing_written()


class _AnyMs:
    def __eq__(self, other: object) -> bool:
        return is_ms(other)

    def __hash__(self) -> int:
        return 0


ANY_MS: Any = _AnyMs()
