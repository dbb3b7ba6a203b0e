"""``worker.capacity.limits``: the Redis token bucket and concurrency slots (the real Lua script on fakeredis), and
how many of them each provider says a job takes."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import fakeredis
import pytest

from shared.db.tables import utcnow
from worker.capacity.limits import (
    DEFAULT_HOLD_S,
    HOLD_GRACE_S,
    ChannelLimits,
    Granted,
    Refused,
    UpstreamLimits,
    hold_for,
)
from worker.providers.base import JobSpec
from worker.providers.registry import facts_of


@pytest.fixture
def redis() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis()
    yield client
    client.close()


@pytest.fixture
def limiter(redis: fakeredis.FakeRedis) -> UpstreamLimits:
    return UpstreamLimits(redis, prefix="test")


def _take(limiter: UpstreamLimits, limits: ChannelLimits, holder: str = "job", **kwargs: float) -> Granted | Refused:
    return limiter.acquire("kling", "default", limits=limits, holder=holder, **kwargs)  # type: ignore[arg-type]


# -- requests per second ---------------------------------------------------------------------------------


def test_unlimited_channel_always_grants(limiter: UpstreamLimits) -> None:
    assert all(isinstance(_take(limiter, ChannelLimits()), Granted) for _ in range(50))


def test_bucket_of_one_spaces_requests_by_one_over_the_rate(limiter: UpstreamLimits) -> None:
    limits = ChannelLimits(requests_per_second=20)  # one request per 50 ms

    assert isinstance(_take(limiter, limits), Granted)
    refused = _take(limiter, limits)

    assert isinstance(refused, Refused) and refused.reason == "rate"
    assert refused.wait_s is not None and 0.0 < refused.wait_s <= 0.05
    time.sleep(refused.wait_s + 0.01)
    assert isinstance(_take(limiter, limits), Granted)


def test_tokens_read_what_the_bucket_holds_and_refill_at_the_rate(limiter: UpstreamLimits) -> None:
    limits = ChannelLimits(requests_per_second=10, burst=3)

    assert limiter.tokens("kling", "default", limits=ChannelLimits()) is None  # no rate: no bucket
    assert limiter.tokens("kling", "default", limits=limits) == 3.0  # never used: full
    for _ in range(3):
        assert isinstance(_take(limiter, limits), Granted)
    left = limiter.tokens("kling", "default", limits=limits)
    assert left is not None and 0.0 <= left < 1.0
    time.sleep(0.2)  # two tokens' worth at 10 per second
    refilled = limiter.tokens("kling", "default", limits=limits)
    assert refilled is not None and 1.5 <= refilled <= 3.0


def test_burst_lets_that_many_go_back_to_back(limiter: UpstreamLimits) -> None:
    limits = ChannelLimits(requests_per_second=1, burst=3)

    outcomes = [_take(limiter, limits) for _ in range(4)]

    assert [isinstance(outcome, Granted) for outcome in outcomes] == [True, True, True, False]


def test_cost_above_the_capacity_is_taken_from_a_full_bucket_and_leaves_a_debt(limiter: UpstreamLimits) -> None:
    limits = ChannelLimits(requests_per_second=10)

    assert isinstance(_take(limiter, limits, cost=3), Granted)  # e.g. a Gemini job of three images
    refused = _take(limiter, limits)

    # the debt of two tokens plus the next one: about 300 ms at 10/s
    assert isinstance(refused, Refused) and refused.wait_s is not None and 0.25 < refused.wait_s <= 0.3


def test_measured_rate_never_exceeds_the_limit_across_threads(redis: fakeredis.FakeRedis) -> None:
    """Eight threads (each its own limiter, as worker processes would be) ask as fast as they can for 0.6 s."""
    rate = 25.0
    limits = ChannelLimits(requests_per_second=rate)
    granted: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + 0.6

    def hammer() -> None:
        limiter = UpstreamLimits(redis, prefix="test")
        while time.monotonic() < stop:
            outcome = limiter.acquire("kling", "default", limits=limits, holder="x")
            if isinstance(outcome, Granted):
                with lock:
                    granted.append(time.monotonic())
            else:
                time.sleep(0.001)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(granted) >= 5
    # granted on Redis' clock 1/rate apart; our clock reads each a little late (a thread may wait its turn for the
    # GIL on a loaded machine), so count grants per window rather than trusting one gap between two reads
    window = 0.2
    busiest = max(sum(1 for t in granted if start <= t < start + window) for start in granted)
    assert busiest <= window * rate + 2
    assert len(granted) <= 0.6 * rate + 2


# -- concurrency slots -------------------------------------------------------------------------------------


def test_slots_are_taken_only_while_they_fit_and_free_again_on_release(limiter: UpstreamLimits) -> None:
    limits = ChannelLimits(max_concurrent=3)

    assert _take(limiter, limits, "a", slots=2) == Granted(in_use=2)
    assert _take(limiter, limits, "b", slots=2) == Refused(reason="slots", wait_s=None, in_use=2)
    assert _take(limiter, limits, "c", slots=1) == Granted(in_use=3)
    assert limiter.holders("kling", "default") == {"a": 2, "c": 1}

    limiter.release("kling", "default", "a")

    assert _take(limiter, limits, "b", slots=2) == Granted(in_use=3)


def test_asking_again_for_a_job_renews_its_slots_instead_of_counting_twice(limiter: UpstreamLimits) -> None:
    limits = ChannelLimits(max_concurrent=2)

    assert _take(limiter, limits, "a", slots=2) == Granted(in_use=2)
    assert _take(limiter, limits, "a", slots=2) == Granted(in_use=2)  # a retried or re-delivered submit

    assert limiter.holders("kling", "default") == {"a": 2}


def test_a_job_wanting_more_than_the_limit_runs_alone_on_an_idle_channel(limiter: UpstreamLimits) -> None:
    limits = ChannelLimits(max_concurrent=3)

    assert _take(limiter, limits, "big", slots=9) == Granted(in_use=3)
    assert isinstance(_take(limiter, limits, "small", slots=1), Refused)


def test_expired_holds_are_dropped_before_counting(limiter: UpstreamLimits) -> None:
    limits = ChannelLimits(max_concurrent=1)
    assert isinstance(_take(limiter, limits, "crashed", slots=1, hold_s=0.05), Granted)
    assert isinstance(_take(limiter, limits, "next", slots=1), Refused)

    time.sleep(0.08)

    assert isinstance(_take(limiter, limits, "next", slots=1), Granted)
    assert limiter.holders("kling", "default") == {"next": 1}


def test_a_rate_refusal_takes_no_slots_and_a_slot_refusal_takes_no_token(limiter: UpstreamLimits) -> None:
    limits = ChannelLimits(requests_per_second=5, max_concurrent=1)
    assert isinstance(_take(limiter, limits, "a", slots=1), Granted)

    assert _take(limiter, limits, "b", slots=1) == Refused(reason="slots", wait_s=None, in_use=1)
    limiter.release("kling", "default", "a")
    rate_refused = _take(limiter, limits, "b", slots=1)  # the slot is free, the token is not yet

    assert isinstance(rate_refused, Refused) and rate_refused.reason == "rate"
    assert limiter.holders("kling", "default") == {}


def test_polls_take_tokens_but_no_slots(limiter: UpstreamLimits) -> None:
    limits = ChannelLimits(requests_per_second=1, burst=2, max_concurrent=1)
    assert isinstance(_take(limiter, limits, "running", slots=1), Granted)

    assert isinstance(_take(limiter, limits, "running", slots=0), Granted)
    assert limiter.holders("kling", "default") == {"running": 1}


def test_channels_are_limited_independently(limiter: UpstreamLimits) -> None:
    limits = ChannelLimits(requests_per_second=1, max_concurrent=1)

    assert isinstance(limiter.acquire("kling", "a", limits=limits, holder="j1", slots=1), Granted)
    assert isinstance(limiter.acquire("kling", "b", limits=limits, holder="j2", slots=1), Granted)
    assert isinstance(limiter.acquire("bfl", "a", limits=limits, holder="j3", slots=1), Granted)
    assert isinstance(limiter.acquire("kling", "a", limits=limits, holder="j4", slots=1), Refused)


def test_peak_slots_never_exceed_the_limit_under_concurrent_workers(redis: fakeredis.FakeRedis) -> None:
    """Eight threads take 1–3 slots, hold them briefly and release; after every grant the sum stays ≤ the limit."""
    limit = 5
    limits = ChannelLimits(max_concurrent=limit)
    peaks: list[int] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        limiter = UpstreamLimits(redis, prefix="test")
        rng = random.Random(index)
        for round_ in range(40):
            holder = f"job-{index}-{round_}"
            outcome = limiter.acquire("kling", "default", limits=limits, holder=holder, slots=rng.randint(1, 3))
            if isinstance(outcome, Granted):
                with lock:
                    peaks.append(outcome.in_use)
                    peaks.append(sum(limiter.holders("kling", "default").values()))
                time.sleep(0.001)
                limiter.release("kling", "default", holder)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert peaks and max(peaks) <= limit
    assert redis_holders_empty(redis)


def redis_holders_empty(redis: fakeredis.FakeRedis) -> bool:
    return UpstreamLimits(redis, prefix="test").holders("kling", "default") == {}


# -- how much a job takes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "operation", "params", "image_count", "slots"),
    [
        ("kling", "text2img", {"n": 3}, 3, 3),
        ("kling", "multi-img", {"n": 2}, 2, 2),
        ("kling", "omni", {"n": 2}, 2, 2),
        ("kling", "omni", {"result_type": "series", "series_amount": 5}, 1, 5),
        ("kling", "omni", {"result_type": "series", "series_amount": "auto"}, 1, 9),
        ("kling", "omni", {"result_type": "series"}, 1, 9),
        ("kling", "try-on", {}, 1, 1),
        ("gemini", "text2img", {}, 4, 4),
        ("openai", "text2img", {"n": 4}, 4, 1),
        ("bfl", "text2img", {}, 1, 1),
    ],
)
def test_each_provider_says_how_many_slots_a_job_takes(
    provider: str, operation: str, params: dict[str, object], image_count: int, slots: int
) -> None:
    assert facts_of(provider).slots(_spec(operation=operation, params=params, image_count=image_count)) == slots


def test_each_provider_says_how_many_requests_a_submit_makes() -> None:
    assert facts_of("gemini").requests(_spec(image_count=3)) == 3
    assert facts_of("kling").requests(_spec(image_count=3)) == 1
    assert facts_of("kling").requests(_spec(attempt=2)) == 2  # the look-up by external_task_id first
    assert facts_of("openai").requests(_spec(image_count=4, attempt=2)) == 1


def _spec(
    *, operation: str = "text2img", params: dict[str, object] | None = None, image_count: int = 1, attempt: int = 1
) -> JobSpec:
    return JobSpec(job_id="j", upstream_model="m", operation=operation, params=dict(params or {}),
                   image_count=image_count, attempt=attempt)  # fmt: skip


def test_slots_are_held_until_the_deadline_plus_a_grace() -> None:
    now = utcnow()
    assert hold_for(now + timedelta(seconds=600), now=now) == 600 + HOLD_GRACE_S
    assert hold_for(now - timedelta(seconds=5), now=now) == HOLD_GRACE_S
    assert hold_for(None, now=now) == DEFAULT_HOLD_S
