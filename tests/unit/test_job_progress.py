"""The task object's progress over a real database (and real Redis for the learned completion times):
queue position by provider and priority, submitted/started timestamps, expected_done_at."""

from __future__ import annotations

from datetime import timedelta

from redis import Redis

from shared.completion_latencies import KEY_PREFIX, Completion, ExpectedDurations, latency_key
from shared.progress import progress_of
from shared.views import job_view
from tests.fakes import accepted
from tests.unit.conftest import OPENAI_REQUEST, Harness, HarnessFactory
from worker.pipeline import submit_job


def _position(harness: Harness, job_id: str) -> int | None:
    with harness.session() as session:
        return progress_of(session, harness.job(job_id)).queue_position


def test_queue_position_counts_jobs_of_the_same_provider_at_a_higher_or_the_same_earlier_priority(
    make_harness: HarnessFactory, database_url: str
) -> None:
    harness = make_harness(database_url)
    first = harness.enqueue()
    harness.advance(1)
    second = harness.enqueue()
    harness.advance(1)
    urgent = harness.enqueue(priority="high")
    harness.advance(1)
    low = harness.enqueue(priority="low")
    harness.enqueue(OPENAI_REQUEST)  # another provider's queue: counted nowhere here

    assert _position(harness, urgent) == 0
    assert _position(harness, first) == 1
    assert _position(harness, second) == 2
    assert _position(harness, low) == 3

    # once the first is submitted (and running) it leaves the queue: the others move up, it has no position
    harness.kling.submissions.append(accepted("up-1"))
    submit_job(first, rt=harness.rt)
    assert _position(harness, first) is None
    assert _position(harness, second) == 1


def test_a_running_job_has_submitted_started_and_expected_done_at(
    make_harness: HarnessFactory, database_url: str
) -> None:
    harness = make_harness(database_url)
    job_id = harness.enqueue()
    harness.advance(2)
    harness.kling.submissions.append(accepted("up-1"))
    submit_job(job_id, rt=harness.rt)
    job = harness.job(job_id)
    assert job.running_since is not None

    asked: list[str] = []

    def expected_s(key: str) -> float:
        asked.append(key)
        return 12.5

    with harness.session() as session:
        progress = progress_of(session, job, expected_s=expected_s)
    view = job_view(job, images=[], cost=None, sign=str, progress=progress)
    assert asked == [latency_key("kling", "kling-v2-1", "text2img")]
    assert view.submitted_at == int(harness.clock.now.timestamp())
    assert view.started_at == int(job.running_since.timestamp())
    assert view.expected_done_at == int((job.running_since + timedelta(seconds=12.5)).timestamp())
    assert view.queue_position is None
    with harness.session() as session:  # without learned times there is no estimate
        assert progress_of(session, job, expected_s=lambda _key: None).expected_done_at is None


def test_expected_durations_read_the_workers_completion_list(redis_client: Redis) -> None:
    key = latency_key("kling", "kling-v2-1", "text2img")
    durations = ExpectedDurations(redis_client, cache_ttl_s=0)
    redis_client.delete(KEY_PREFIX + key)
    for _ in range(19):
        redis_client.lpush(KEY_PREFIX + key, Completion(10, 10).encode())
    assert durations.seconds(key) is None  # too few to say
    redis_client.lpush(KEY_PREFIX + key, Completion(10, 10).encode())
    assert durations.seconds(key) == 10.0
    assert ExpectedDurations.from_url("redis://127.0.0.1:1/0").seconds(key) is None  # unreachable: no estimate
