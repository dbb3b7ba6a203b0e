"""Scale-out: the API and two workers as separate hosts sharing only Redis, PostgreSQL and an S3 bucket.

Each "host" is its own process tree with its own working directory, ``HOME``, ``TMPDIR`` and files directory (which
must stay empty: there is no shared filesystem, images live in S3). They share nothing else; all of them talk to the
services over loopback (separate directories and environments, not network namespaces).

100 jobs over four providers (Kling and BFL polled, OpenAI and Gemini synchronous) are accepted over HTTP. While
both workers hold poll chains, worker A is SIGKILLed; worker B and the sweeper (beat on the API host) carry on.
Every job must end, every image must download through the URL the API returns, and nothing is billed or notified
twice.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.integration.harness import (
    Emulator,
    Rows,
    WebhookReceiver,
    delivered,
    duplicate_charges,
    duplicate_webhook_events,
    lost_jobs,
    settle,
)
from tests.s3 import S3Bucket
from tests.support import (
    API_KEY,
    Process,
    api_command,
    base_env,
    celery_beat_command,
    celery_worker_command,
    free_port,
    http_ok,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

JOBS = 100
REQUESTS: list[dict[str, Any]] = [
    {"model": "kling-image", "model_name": "kling-v2-1", "prompt": "a fox"},
    {"model": "flux-pro-1.1", "prompt": "a heron", "size": "1024x1024"},
    {"model": "gpt-image-1", "prompt": "a whale", "quality": "low", "size": "1024x1024"},
    {"model": "nano-banana", "prompt": "a banana"},
]
POLL_RECEIVED = re.compile(r"Task imagejobs\.poll_job\[[0-9a-f-]+\] received")
POLL_DONE = re.compile(r"Task imagejobs\.poll_job\[[0-9a-f-]+\] (?:succeeded|failed|raised)")


@dataclass
class Host:
    """One machine's worth of processes: its own directory, environment and process groups."""

    name: str
    root: Path
    env: dict[str, str]
    processes: list[Process] = field(default_factory=list)

    def start(self, name: str, command: list[str]) -> Process:
        process = Process(f"{self.name}-{name}", command, env=self.env, log_dir=self.root, cwd=self.root)
        self.processes.append(process)
        return process

    @property
    def files_dir(self) -> Path:
        return Path(self.env["IMAGEJOBS_FILES_DIR"])

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


@pytest.fixture
def hosts(
    tmp_path: Path, postgres_url: str, isolated_redis_url: str, s3_bucket: S3Bucket, emulator: Emulator
) -> Iterator[dict[str, Host]]:
    api_port = free_port()
    made: dict[str, Host] = {}
    for name in ("api", "worker-a", "worker-b"):
        root = tmp_path / name
        (root / "tmp").mkdir(parents=True)
        env = base_env(
            redis_url=isolated_redis_url,
            database_url=postgres_url,
            files_dir=root / "files",
            emulator_url=emulator.url,
            HOME=str(root),
            TMPDIR=str(root / "tmp"),
            IMAGEJOBS_PUBLIC_BASE_URL=f"http://127.0.0.1:{api_port}",
            IMAGEJOBS_API_PORT=str(api_port),
            IMAGEJOBS_CELERY__WORKER_CONCURRENCY="8",
            **s3_bucket.env(),
        )
        made[name] = Host(name=name, root=root, env=env)
    try:
        yield made
    finally:
        for host in made.values():
            host.stop()
            for process in host.processes:
                print(f"----- {process.name} -----\n" + "\n".join(process.output().splitlines()[-40:]))


def _running_polled(rows: Rows, job_ids: list[str]) -> int:
    return sum(job.provider in ("kling", "bfl") and job.status == "running" for job in rows.jobs(job_ids))


def _polls_held_by(worker: Process) -> int:
    """Poll messages the worker has received and not yet finished (their countdowns wait in its memory)."""
    log = worker.output()
    received = len(POLL_RECEIVED.findall(log))
    return received - len(POLL_DONE.findall(log))


def test_api_and_two_workers_on_separate_hosts_lose_nothing_when_one_worker_dies(
    hosts: dict[str, Host],
    postgres_url: str,
    s3_bucket: S3Bucket,
    emulator: Emulator,
    rows_for: Any,
    webhook_receiver: Any,
) -> None:
    emulator.configure(
        {
            "kling": {"latency": {"kind": "uniform", "low_s": 8.0, "high_s": 10.0}},
            "bfl": {"latency": {"kind": "uniform", "low_s": 8.0, "high_s": 10.0}},
            "openai": {"latency": {"kind": "fixed", "value_s": 0.2}},
            "gemini": {"latency": {"kind": "fixed", "value_s": 0.2}},
        }
    )
    receiver: WebhookReceiver = webhook_receiver()
    api_host, worker_a, worker_b = hosts["api"], hosts["worker-a"], hosts["worker-b"]
    api_process = api_host.start("api", api_command(int(api_host.env["IMAGEJOBS_API_PORT"])))
    base_url = api_host.env["IMAGEJOBS_PUBLIC_BASE_URL"]
    wait_until(lambda: http_ok(f"{base_url}/healthz") or not api_process.alive(), timeout_s=30, what="the API")
    api_host.start("beat", celery_beat_command(api_host.root / "celerybeat-schedule"))
    doomed = worker_a.start("worker", celery_worker_command(8))
    worker_b.start("worker", celery_worker_command(8))
    rows: Rows = rows_for(postgres_url)

    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as api:
        job_ids = []
        for n, body in zip(range(JOBS), itertools.cycle(REQUESTS), strict=False):
            created = api.post(
                "/v1/images/generations",
                json={**body, "prompt": f"{body['prompt']} {n}", "async": True, "callback_url": receiver.url},
            )
            assert created.status_code == 202, created.text
            job_ids.append(created.json()["id"])

        # both workers hold poll chains; worker A dies mid-poll with its share of them
        wait_until(
            lambda: _running_polled(rows, job_ids) >= JOBS // 4 and _polls_held_by(doomed) >= 10,
            timeout_s=45,
            interval_s=0.2,
            what="both workers holding poll chains",
        )
        held_by_a = _polls_held_by(doomed)
        os.killpg(doomed.popen.pid, signal.SIGKILL)
        doomed.popen.wait(timeout=10)
        open_at_kill = len(lost_jobs(rows, job_ids))

        lost = settle(rows, job_ids, timeout_s=60)
        with contextlib.suppress(TimeoutError):  # asserted on below
            wait_until(
                lambda: all(delivered(rows, job_id) for job_id in job_ids),
                timeout_s=20,
                interval_s=0.5,
                what="one delivered webhook per job",
            )
        tasks = [api.get(f"/v1/images/generations/{job_id}").json() for job_id in job_ids]

    downloadable = 0
    urls = [image["url"] for task in tasks for image in task["data"]]
    for url in urls:
        response = httpx.get(url, timeout=10)
        if response.status_code == 200 and response.headers["content-type"].startswith("image/"):
            with Image.open(io.BytesIO(response.content)) as picture:
                picture.load()
            downloadable += 1
    charges = duplicate_charges(rows, job_ids)
    duplicate_events = duplicate_webhook_events(receiver.received())
    terminal = JOBS - len(lost)
    print(
        f"jobs={JOBS} terminal={terminal} lost={len(lost)} duplicate charges={charges} "
        f"images downloadable={downloadable}"
    )
    print(
        f"scale-out detail: open_at_kill={open_at_kill} polls_held_by_killed_worker={held_by_a} "
        f"duplicate webhook events={duplicate_events} objects={len(s3_bucket.keys())}"
    )

    assert lost == {}
    assert held_by_a >= 10 and open_at_kill >= JOBS // 4, "worker A was not killed mid-poll"
    assert {task["status"] for task in tasks} == {"succeeded"}
    assert downloadable == len(urls) == sum(task["cost"]["quantity"] for task in tasks) >= JOBS
    assert all(url.startswith(s3_bucket.endpoint_url) for url in urls)  # presigned: served by S3 itself
    assert charges == 0 and duplicate_events == 0
    assert all(delivered(rows, job_id) for job_id in job_ids)
    assert len(s3_bucket.keys()) == len(urls)
    for host in hosts.values():  # no host wrote an image to its own disk
        assert not host.files_dir.exists() or list(host.files_dir.rglob("*")) == []
