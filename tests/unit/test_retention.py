"""Retention over a real database and the local store: what expires goes in bounded, idempotent batches; a job that
has not ended is never touched; large inline inputs are stored at accept time and put back for the upstream."""

from __future__ import annotations

import base64
import io
import os
from typing import Any

from PIL import Image
from sqlmodel import select

from shared.db.tables import Job, JobEvent, WebhookDelivery
from shared.inline_inputs import STORED, InlineInputs
from shared.jobs import JobStatus
from shared.retention import Purged, erase_job
from shared.storage import image_key, input_key
from shared.views import job_view
from tests.fakes import accepted, completed
from tests.unit.conftest import OPENAI_REQUEST, Harness, HarnessFactory
from worker.pipeline import submit_job
from worker.retention import purge

DAY = 24 * 3600.0
CALLBACK = "https://hooks.example.com/imagejobs"


def _retention(**overrides: Any) -> dict[str, Any]:
    return {"results_s": 7 * DAY, "inputs_s": DAY, "jobs_s": 30 * DAY, "batch_size": 100, **overrides}


def _finished(harness: Harness, **fields: Any) -> str:
    job_id = harness.enqueue(OPENAI_REQUEST, **fields)
    harness.openai.submissions.append(completed(2))
    submit_job(job_id, rt=harness.rt)
    assert harness.job(job_id).status == JobStatus.SUCCEEDED
    return job_id


def _noisy_png(size: int = 32) -> bytes:
    """A PNG that does not compress to almost nothing (solid colours do)."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (size, size), os.urandom(size * size * 3)).save(buffer, format="PNG")
    return buffer.getvalue()


def _kept(harness: Harness, job_id: str) -> list[str]:
    return sorted(str(path.relative_to(harness.files_dir)) for path in harness.files_dir.rglob(f"{job_id}/*"))


def test_result_images_expire_after_results_s_and_the_task_object_says_when(
    make_harness: HarnessFactory, database_url: str
) -> None:
    harness = make_harness(database_url, retention=_retention())
    job_id = _finished(harness)
    job = harness.job(job_id)
    view = job_view(job, images=harness.images(job_id), cost=None, sign=str, results_kept_s=7 * DAY)
    assert job.finished_at is not None
    assert view.expires_at == int(job.finished_at.timestamp() + 7 * DAY)

    harness.advance(7 * DAY - 60)
    assert purge(rt=harness.rt) == Purged(inputs=1)  # the inputs' day is over; the results' week not yet
    assert _kept(harness, job_id) == [image_key(job_id, 0, "png"), image_key(job_id, 1, "png")]

    harness.advance(120)
    assert purge(rt=harness.rt) == Purged(results=1)
    assert purge(rt=harness.rt) == Purged()  # idempotent: nothing left to do

    assert _kept(harness, job_id) == []
    assert harness.images(job_id) == []
    job = harness.job(job_id)
    assert job.status == JobStatus.SUCCEEDED and job.results_deleted_at == harness.clock.now
    assert len(harness.costs(job_id)) == 1  # the bill stays with the row


def test_jobs_that_have_not_ended_are_never_touched(make_harness: HarnessFactory, sqlite_url: str) -> None:
    harness = make_harness(sqlite_url, retention=_retention(), storage={"inline_input_max_chars": 64})
    big = "data:image/png;base64," + base64.b64encode(_noisy_png()).decode()
    queued = harness.enqueue(OPENAI_REQUEST, image=big)
    running = harness.enqueue()
    harness.kling.submissions.append(accepted())
    submit_job(running, rt=harness.rt)

    harness.advance(365 * DAY)
    assert purge(rt=harness.rt) == Purged()

    assert harness.job(queued).status == JobStatus.QUEUED
    assert harness.job(running).status == JobStatus.RUNNING
    assert _kept(harness, queued) == [input_key(queued, 0, "png")]
    assert not erase_job(queued, engine=harness.rt.engine, storage=harness.rt.storage)
    assert harness.job(queued).status == JobStatus.QUEUED


def test_each_run_handles_at_most_batch_size_jobs(make_harness: HarnessFactory, sqlite_url: str) -> None:
    harness = make_harness(sqlite_url, retention=_retention(batch_size=2))
    jobs = [_finished(harness) for _ in range(3)]
    harness.advance(8 * DAY)

    assert purge(rt=harness.rt).results == 2
    assert purge(rt=harness.rt).results == 1
    assert purge(rt=harness.rt).results == 0
    assert all(harness.images(job_id) == [] for job_id in jobs)


def test_job_rows_expire_with_their_events_deliveries_and_cost(make_harness: HarnessFactory, database_url: str) -> None:
    harness = make_harness(database_url, retention=_retention())
    old = _finished(harness, callback_url=CALLBACK)
    harness.advance(20 * DAY)
    recent = _finished(harness, callback_url=CALLBACK)
    harness.advance(11 * DAY)

    purged = purge(rt=harness.rt)

    assert purged.jobs == 1
    with harness.session() as session:
        assert session.get(Job, old) is None
        assert session.exec(select(JobEvent).where(JobEvent.job_id == old)).all() == []
        assert session.exec(select(WebhookDelivery).where(WebhookDelivery.job_id == old)).all() == []
        assert session.get(Job, recent) is not None
    assert harness.costs(old) == [] and len(harness.costs(recent)) == 1
    assert _kept(harness, old) == []


def test_large_inline_inputs_are_stored_at_accept_and_put_back_for_the_upstream(
    make_harness: HarnessFactory, sqlite_url: str
) -> None:
    harness = make_harness(sqlite_url, storage={"inline_input_max_chars": 256})
    data = _noisy_png()
    data_uri = "data:image/png;base64," + base64.b64encode(data).decode()
    raw = base64.b64encode(_noisy_png()).decode()
    assert len(data_uri) > 256 and len(raw) > 256
    inputs = InlineInputs(harness.rt.storage, max_chars=256)
    params = inputs.offload("job-x", {"prompt": "p" * 2000, "image": [data_uri, raw], "mask": "short"})

    assert params["prompt"] == "p" * 2000  # not an image: left alone
    assert params["mask"] == "short"
    assert params["image"] == [
        f"{STORED}{input_key('job-x', 0, 'png')}#data:image/png",
        f"{STORED}{input_key('job-x', 1, 'png')}#base64",
    ]
    assert harness.rt.storage.get(input_key("job-x", 0, "png")) == data
    assert inputs.restore(params) == {"prompt": "p" * 2000, "image": [data_uri, raw], "mask": "short"}


def test_the_worker_hands_the_upstream_the_inline_input_the_caller_sent(
    make_harness: HarnessFactory, sqlite_url: str
) -> None:
    harness = make_harness(sqlite_url, storage={"inline_input_max_chars": 256})
    data_uri = "data:image/png;base64," + base64.b64encode(_noisy_png()).decode()
    job_id = harness.enqueue(OPENAI_REQUEST, image=data_uri)
    row = harness.job(job_id)
    assert str(row.upstream_params).count(STORED) == 1 and data_uri not in str(row.upstream_params)

    harness.openai.submissions.append(completed(1))
    submit_job(job_id, rt=harness.rt)

    [spec] = harness.openai.submitted
    assert data_uri in str(spec.params) and STORED not in str(spec.params)
