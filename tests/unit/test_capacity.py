"""``worker.capacity``: which channel takes a job, when one rests, and the pipeline's use of both (fakeredis)."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import fakeredis
import httpx
import pytest

from shared.config import UpstreamSettings
from shared.db.tables import Job, utcnow
from shared.errors import (
    ContentPolicyError,
    ProviderAuthError,
    ProviderError,
    QuotaExceededError,
    RateLimitedError,
    TransientProviderError,
    UnexpectedResponseError,
    UpstreamRejectedError,
)
from shared.jobs import JobStatus
from tests.conftest import make_settings
from tests.fakes import FakeProvider, accepted, pending, succeeded
from tests.unit.conftest import Harness, HarnessFactory
from worker.capacity import Capacity
from worker.capacity.channels import (
    Admitted,
    Channel,
    ChannelHealth,
    Fault,
    Refusing,
    Resting,
    Waiting,
    admit,
    channels_of,
    fault_of,
    preference_order,
)
from worker.capacity.in_memory import AlwaysHealthy, Unlimited
from worker.capacity.limits import ChannelLimits, UpstreamLimits
from worker.inputs import InputImageError
from worker.pipeline import poll_job, submit_job
from worker.providers._http import map_transport_errors

FAST = UpstreamSettings(cooldown_base_s=0.05, cooldown_max_s=0.4, failures_before_cooldown=3)
KLING_B = {"name": "kling-b", "access_key": "ak-b", "secret_key": "sk-b"}


@pytest.fixture
def redis() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis()
    yield client
    client.close()


@pytest.fixture
def health(redis: fakeredis.FakeRedis) -> ChannelHealth:
    return ChannelHealth(redis, settings=FAST)


# -- what counts against a channel -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (RateLimitedError("429", provider="kling"), Fault.RATE_LIMITED),
        (TransientProviderError("503", provider="kling"), Fault.UNAVAILABLE),
        (ProviderAuthError("401", provider="kling"), Fault.CREDENTIAL),
        (QuotaExceededError("no credit", provider="kling"), Fault.CREDENTIAL),
        (ContentPolicyError("moderated", provider="kling"), None),
        (UpstreamRejectedError("bad n", provider="kling"), None),
        (UnexpectedResponseError("html", provider="kling"), None),
        (InputImageError("not an image", provider="input"), None),
        (TransientProviderError("input URL answered 503", provider="input"), None),
        (RateLimitedError("someone else's", provider="openai"), None),
        (RuntimeError("our own bug"), None),
    ],
)
def test_only_the_channels_own_failures_count_against_it(error: BaseException, fault: Fault | None) -> None:
    assert fault_of(error, provider="kling") == fault


def _transport_error(exc: httpx.TransportError) -> ProviderError:
    try:
        with map_transport_errors("kling"):
            raise exc
    except ProviderError as mapped:
        return mapped
    raise AssertionError("not mapped")


def test_a_timeout_after_sending_may_have_reached_the_upstream() -> None:
    assert _transport_error(httpx.ReadTimeout("slow")).may_have_reached_upstream
    assert _transport_error(httpx.RemoteProtocolError("dropped")).may_have_reached_upstream
    assert not _transport_error(httpx.ConnectError("refused")).may_have_reached_upstream
    assert not _transport_error(httpx.ConnectTimeout("no route")).may_have_reached_upstream
    assert not TransientProviderError("HTTP 503", provider="kling").may_have_reached_upstream
    assert not RateLimitedError("429", provider="kling").may_have_reached_upstream


# -- choosing ----------------------------------------------------------------------------------------------


def _channel(name: str, *, weight: float = 1.0, priority: int = 0) -> Channel:
    return Channel("kling", name, weight, priority, ChannelLimits())


def test_best_priority_first_and_the_channel_just_failed_on_last() -> None:
    channels = [_channel("slow", priority=2), _channel("main", priority=0), _channel("backup", priority=1)]

    assert [c.name for c in preference_order(channels)] == ["main", "backup", "slow"]
    assert [c.name for c in preference_order(channels, avoid="main")] == ["backup", "slow", "main"]


def test_weighted_random_within_a_priority() -> None:
    channels = [_channel("heavy", weight=3.0), _channel("light", weight=1.0), _channel("spare", priority=1)]
    rng = random.Random(7)

    firsts = Counter(preference_order(channels, rng=rng)[0].name for _ in range(4000))

    assert set(firsts) == {"heavy", "light"}  # the lower priority is never first while these are healthy
    assert 0.70 < firsts["heavy"] / 4000 < 0.80


def test_channels_come_from_the_settings_with_inherited_limits() -> None:
    settings = make_settings(
        kling={
            "access_key": "ak",
            "secret_key": "sk",
            "max_concurrent": 4,
            "requests_per_second": 2,
            "channels": [{**KLING_B, "weight": 2, "priority": 1, "max_concurrent": 9}],
        }
    )

    assert channels_of(settings, "kling") == [
        Channel("kling", "default", 1.0, 0, ChannelLimits(requests_per_second=2, max_concurrent=4)),
        Channel("kling", "kling-b", 2.0, 1, ChannelLimits(requests_per_second=2, max_concurrent=9)),
    ]
    assert channels_of(settings, "bfl") == [Channel("bfl", "default", 1.0, 0, ChannelLimits(max_concurrent=24))]


def test_a_section_with_only_extra_channels_has_no_default_channel() -> None:
    settings = make_settings(kling={"channels": [KLING_B]})

    assert [channel.name for channel in channels_of(settings, "kling")] == ["kling-b"]
    assert settings.kling.base_url == "https://api-singapore.klingai.com"  # not the emulator


@pytest.mark.parametrize(
    "channel",
    [
        {"name": "default", "access_key": "a", "secret_key": "b"},
        {"name": "half", "access_key": "a"},
        {"name": "wrong-kind", "api_key": "k"},
    ],
)
def test_channels_must_be_named_and_complete(channel: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="channel"):
        make_settings(kling={"channels": [channel]})


# -- health ------------------------------------------------------------------------------------------------


def test_a_429_or_refused_credentials_rest_the_channel_at_once(health: ChannelHealth) -> None:
    assert health.failed("kling", "a", Fault.RATE_LIMITED, code="rate_limited") == 0.05
    assert health.failed("kling", "b", Fault.CREDENTIAL, code="upstream_auth_error") == 0.05

    assert set(health.resting("kling", ["a", "b", "c"])) == {"a", "b"}


def test_5xx_rest_the_channel_only_after_several_in_a_row(health: ChannelHealth) -> None:
    assert health.failed("kling", "a", Fault.UNAVAILABLE, code="upstream_unavailable") == 0
    health.succeeded("kling", "a")  # the streak ends
    assert health.failed("kling", "a", Fault.UNAVAILABLE, code="upstream_unavailable") == 0
    assert health.failed("kling", "a", Fault.UNAVAILABLE, code="upstream_unavailable") == 0
    assert health.resting("kling", ["a"]) == {}

    assert health.failed("kling", "a", Fault.UNAVAILABLE, code="upstream_unavailable") == 0.05


def test_a_rest_recovers_by_itself_and_doubles_with_each_failure_in_a_row_up_to_the_cap(health: ChannelHealth) -> None:
    rests = []
    for _ in range(5):
        rests.append(health.failed("kling", "a", Fault.CREDENTIAL, code="upstream_auth_error"))
        assert "a" in health.resting("kling", ["a"])
        time.sleep(rests[-1] + 0.02)
        assert health.resting("kling", ["a"]) == {}  # recovered: the next job may try it again

    assert rests == [0.05, 0.1, 0.2, 0.4, 0.4]


def test_failures_while_resting_do_not_lengthen_the_rest(health: ChannelHealth) -> None:
    first = health.failed("kling", "a", Fault.RATE_LIMITED, code="rate_limited")
    for _ in range(5):  # requests that were in flight when it started resting
        assert 0 < health.failed("kling", "a", Fault.RATE_LIMITED, code="rate_limited") <= first
    time.sleep(first + 0.02)

    assert health.failed("kling", "a", Fault.RATE_LIMITED, code="rate_limited") == 0.1  # the second of the streak


def test_a_retry_after_is_honoured_within_the_cap(health: ChannelHealth) -> None:
    assert health.failed("kling", "a", Fault.RATE_LIMITED, code="rate_limited", retry_after_s=0.3) == 0.3
    assert health.failed("kling", "b", Fault.RATE_LIMITED, code="rate_limited", retry_after_s=99) == 0.4


# -- admission ---------------------------------------------------------------------------------------------


def _job(**fields: Any) -> Job:
    values: dict[str, Any] = {
        "id": "job-1",
        "owner": "o",
        "model": "kling-image",
        "provider": "kling",
        "upstream_model": "kling-v2-1",
        "operation": "text2img",
        "upstream_params": {"n": 1},
        "price_per": "image",
        "unit_price": 1,
        "currency": "credits",
    }
    values.update(fields)
    return Job(**values)


TWO_CHANNELS = {"access_key": "ak", "secret_key": "sk", "channels": [{**KLING_B, "priority": 1}]}


def test_admit_takes_the_best_healthy_channel_and_spills_over_when_it_is_full(redis: fakeredis.FakeRedis) -> None:
    settings = make_settings(kling={**TWO_CHANNELS, "max_concurrent": 2})
    limits, health = UpstreamLimits(redis, prefix="t"), ChannelHealth(redis, settings=FAST)
    now = utcnow()

    def admit_job(job_id: str, n: int) -> object:
        job = _job(id=job_id, upstream_params={"n": n}, image_count=n)
        return admit(job, settings=settings, limits=limits, health=health, now=now)

    assert admit_job("a", 2) == Admitted("default")
    assert admit_job("b", 1) == Admitted("kling-b")  # default is full: the next channel takes it
    assert admit_job("c", 2) == Waiting(2.0, "no upstream capacity on kling (default, kling-b)")


def test_admit_skips_resting_channels_and_waits_or_refuses_when_all_rest(redis: fakeredis.FakeRedis) -> None:
    settings = make_settings(kling=TWO_CHANNELS)
    health = ChannelHealth(redis, settings=UpstreamSettings(cooldown_base_s=30))
    now = utcnow()

    health.failed("kling", "default", Fault.CREDENTIAL, code="upstream_auth_error")
    assert admit(_job(), settings=settings, limits=Unlimited(), health=health, now=now) == Admitted("kling-b")

    health.failed("kling", "kling-b", Fault.RATE_LIMITED, code="rate_limited")
    waiting = admit(_job(), settings=settings, limits=Unlimited(), health=health, now=now)
    assert isinstance(waiting, Waiting) and waiting.wait_s is not None and 29 < waiting.wait_s <= 30

    health.failed("kling", "kling-b", Fault.CREDENTIAL, code="upstream_auth_error")  # still resting: no change
    redis.delete("imagejobs:upstream:{kling:kling-b}:rest")
    health.failed("kling", "kling-b", Fault.CREDENTIAL, code="insufficient_quota")
    refusing = admit(_job(), settings=settings, limits=Unlimited(), health=health, now=now)
    assert isinstance(refusing, Refusing) and refusing.code in ("upstream_auth_error", "insufficient_quota")


def test_a_pinned_job_goes_back_to_its_channel_even_when_a_better_one_is_healthy(redis: fakeredis.FakeRedis) -> None:
    settings = make_settings(kling=TWO_CHANNELS)
    health = ChannelHealth(redis, settings=UpstreamSettings(cooldown_base_s=30))
    now = utcnow()

    assert admit(_job(channel="kling-b"), settings=settings, limits=Unlimited(), health=health, now=now) == Admitted(
        "kling-b"
    )

    health.failed("kling", "kling-b", Fault.RATE_LIMITED, code="rate_limited")
    waiting = admit(_job(channel="kling-b"), settings=settings, limits=Unlimited(), health=health, now=now)
    assert isinstance(waiting, Waiting)


def test_a_pin_to_a_channel_no_longer_configured_is_ignored() -> None:
    settings = make_settings(kling=TWO_CHANNELS)

    admitted = admit(_job(channel="gone"), settings=settings, limits=Unlimited(), health=AlwaysHealthy(), now=utcnow())

    assert admitted == Admitted("default")


def test_the_job_that_just_failed_on_a_channel_tries_another_first(health: ChannelHealth) -> None:
    settings = make_settings(kling=TWO_CHANNELS)
    health.avoid("job-1", "default")

    admitted = admit(_job(), settings=settings, limits=Unlimited(), health=health, now=utcnow())

    assert admitted == Admitted("kling-b")
    assert health.look("kling", ["default"], job_id="job-1") == ({}, "default")


def test_resting_reads_codes(health: ChannelHealth) -> None:
    health.failed("kling", "a", Fault.RATE_LIMITED, code="rate_limited", retry_after_s=0.3)

    [(name, rest)] = health.resting("kling", ["a", "b"]).items()

    assert name == "a" and isinstance(rest, Resting) and rest.code == "rate_limited" and 0.2 < rest.remaining_s <= 0.3


# -- the pipeline with channels and limits -------------------------------------------------------------------


@pytest.fixture
def channel_harness(make_harness: HarnessFactory, sqlite_url: str, redis: fakeredis.FakeRedis) -> Harness:
    """Two Kling channels ("default": ``harness.kling``; "kling-b": ``harness.rt.channels``), limits and health."""
    harness = make_harness(
        sqlite_url,
        kling={**TWO_CHANNELS, "max_concurrent": 2},
        upstream={"cooldown_base_s": 30, "slot_wait_s": 2},
    )
    harness.rt.channels = {"kling": {"kling-b": FakeProvider(name="kling")}}
    harness.rt.capacity = Capacity.redis(redis, harness.rt.settings)
    return harness


def _kling_b(harness: Harness) -> FakeProvider:
    provider = harness.rt.channels["kling"]["kling-b"]
    assert isinstance(provider, FakeProvider)
    return provider


def _holders(harness: Harness, channel: str) -> dict[str, int]:
    limits = harness.rt.capacity.limits
    assert isinstance(limits, UpstreamLimits)
    return limits.holders("kling", channel)


def test_a_job_without_capacity_waits_in_its_queue_unclaimed(channel_harness: Harness) -> None:
    harness = channel_harness
    big = harness.enqueue(n=2)
    harness.kling.submissions.append(accepted("up-big"))
    submit_job(big, rt=harness.rt)  # takes both slots of "default"
    other = harness.enqueue(n=2)
    _kling_b(harness).submissions.append(accepted("up-b"))
    submit_job(other, rt=harness.rt)  # "kling-b" takes it
    waiting = harness.enqueue(n=1)
    events_before = harness.events(waiting)

    submit_job(waiting, rt=harness.rt)

    job = harness.job(waiting)
    assert (job.status, job.submit_attempts, job.channel) == (JobStatus.QUEUED, 0, None)
    assert harness.events(waiting) == events_before  # no claim, no event
    [(job_id, countdown)] = [send for send in harness.sender.submits if send[0] == waiting]
    assert job_id == waiting and 2.0 <= countdown <= 3.0
    assert job.dispatched_at is not None and job.dispatched_at > harness.clock.now
    assert harness.kling.submitted[-1].job_id == big  # the upstream never saw the waiting job

    # a duplicate message of the same job (e.g. the sweeper's) right after ends without a second re-send
    submit_job(waiting, rt=harness.rt)
    assert len([send for send in harness.sender.submits if send[0] == waiting]) == 1


def test_slots_are_held_while_running_and_freed_when_the_job_ends(channel_harness: Harness) -> None:
    harness = channel_harness
    job_id = harness.enqueue(n=2)
    harness.kling.submissions.append(accepted("up-1"))
    submit_job(job_id, rt=harness.rt)
    assert harness.job(job_id).channel == "default"
    assert _holders(harness, "default") == {job_id: 2}

    harness.kling.polls += [pending(), succeeded(2)]
    poll_job(job_id, 0, rt=harness.rt)
    assert _holders(harness, "default") == {job_id: 2}
    poll_job(job_id, 1, rt=harness.rt)

    assert harness.job(job_id).status == JobStatus.SUCCEEDED
    assert _holders(harness, "default") == {}


def test_refused_credentials_fail_over_to_another_channel_and_rest_the_failing_one(channel_harness: Harness) -> None:
    harness = channel_harness
    job_id = harness.enqueue()
    harness.kling.submissions.append(ProviderAuthError("Kling 1002: bad key", provider="kling"))
    _kling_b(harness).submissions.append(accepted("up-b"))

    submit_job(job_id, rt=harness.rt)

    job = harness.job(job_id)
    assert (job.status, job.submit_attempts, job.channel) == (JobStatus.QUEUED, 1, None)
    assert harness.sender.submits == [(job_id, 0.0)]  # at once, on another channel
    assert _holders(harness, "default") == {}
    assert set(harness.rt.capacity.health.resting("kling", ["default", "kling-b"])) == {"default"}

    submit_job(job_id, rt=harness.rt)  # the re-sent submit arrives

    job = harness.job(job_id)
    assert (job.status, job.channel, job.upstream_task_id) == (JobStatus.RUNNING, "kling-b", "up-b")
    assert [spec.attempt for spec in _kling_b(harness).submitted] == [2]
    assert _holders(harness, "kling-b") == {job_id: 1}

    # while "default" rests, new jobs go straight to "kling-b"
    second = harness.enqueue()
    _kling_b(harness).submissions.append(accepted("up-b2"))
    submit_job(second, rt=harness.rt)
    assert harness.job(second).channel == "kling-b"
    assert len(harness.kling.submitted) == 1

    # polls use the channel that created the task
    _kling_b(harness).polls.append(pending())
    poll_job(job_id, 0, rt=harness.rt)
    assert _kling_b(harness).polled == ["up-b"] and harness.kling.polled == []


def test_with_a_single_channel_refused_credentials_still_fail_the_job(channel_harness: Harness) -> None:
    harness = channel_harness
    harness.rt.capacity.health.failed(
        "kling", "kling-b", Fault.RATE_LIMITED, code="rate_limited"
    )  # the other one rests
    job_id = harness.enqueue()
    harness.kling.submissions.append(ProviderAuthError("Kling 1002: bad key", provider="kling"))

    submit_job(job_id, rt=harness.rt)

    job = harness.job(job_id)
    assert (job.status, job.error_code) == (JobStatus.FAILED, "upstream_auth_error")
    # every channel rests now: the next job waits (one is resting after a 429)
    nxt = harness.enqueue()
    submit_job(nxt, rt=harness.rt)
    assert harness.job(nxt).status == JobStatus.QUEUED and harness.job(nxt).submit_attempts == 0


def test_when_every_channel_rests_after_refused_credentials_jobs_fail_at_once(channel_harness: Harness) -> None:
    harness = channel_harness
    for channel in ("default", "kling-b"):
        harness.rt.capacity.health.failed("kling", channel, Fault.CREDENTIAL, code="upstream_auth_error")
    job_id = harness.enqueue()

    submit_job(job_id, rt=harness.rt)

    job = harness.job(job_id)
    assert (job.status, job.error_code, job.submit_attempts) == (JobStatus.FAILED, "upstream_auth_error", 0)
    assert harness.kling.submitted == [] and _kling_b(harness).submitted == []


def test_content_policy_rejections_never_count_against_the_channel(channel_harness: Harness) -> None:
    harness = channel_harness
    for _ in range(4):
        job_id = harness.enqueue()
        harness.kling.submissions.append(ContentPolicyError("moderated", provider="kling"))
        submit_job(job_id, rt=harness.rt)
        assert harness.job(job_id).error_code == "content_policy_violation"

    assert harness.rt.capacity.health.resting("kling", ["default"]) == {}
    assert _holders(harness, "default") == {}


def test_a_timeout_after_sending_keeps_the_job_and_its_slots_on_its_channel(channel_harness: Harness) -> None:
    harness = channel_harness
    job_id = harness.enqueue()
    harness.kling.submissions.append(_transport_error(httpx.ReadTimeout("no answer")))

    submit_job(job_id, rt=harness.rt)

    job = harness.job(job_id)
    assert (job.status, job.channel) == (JobStatus.QUEUED, "default")  # pinned: the task may exist there
    assert _holders(harness, "default") == {job_id: 1}
    assert harness.sender.submits == [(job_id, 5.0)]

    harness.kling.submissions.append(accepted("up-1"))
    submit_job(job_id, rt=harness.rt)

    assert harness.job(job_id).channel == "default"
    assert [spec.attempt for spec in harness.kling.submitted] == [1, 2]
    assert _holders(harness, "default") == {job_id: 1}


def test_a_poll_without_a_token_comes_back_without_counting(channel_harness: Harness, redis: Any) -> None:
    harness = channel_harness
    harness.rt.settings.kling.requests_per_second = 0.5  # one request per 2 s
    job_id = harness.enqueue()
    harness.kling.submissions.append(accepted("up-1"))
    submit_job(job_id, rt=harness.rt)  # took the only token
    sends_before = list(harness.sender.polls)

    poll_job(job_id, 0, rt=harness.rt)

    assert harness.kling.polled == []
    job = harness.job(job_id)
    assert job.poll_count == 0
    [(polled_id, count, countdown)] = harness.sender.polls[len(sends_before) :]
    assert (polled_id, count) == (job_id, 0) and 1.5 < countdown <= 3.0
