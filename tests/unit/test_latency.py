"""``worker.scheduling.latency``: completions recorded per upstream model (Redis list on fakeredis, or in memory),
their quantiles with each completion spread over its interval, a per-process cache, and the catalog's defaults when
too little is known or Redis is gone."""

from __future__ import annotations

import math
import random
from datetime import timedelta
from typing import Any

import fakeredis
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.jobs import JobStatus
from tests.fakes import accepted, pending, succeeded
from tests.unit.conftest import Harness
from worker.pipeline import poll_job, submit_job
from worker.providers.base import PollResult, UpstreamState
from worker.scheduling.latency import (
    CACHE_TTL_S,
    KEY_PREFIX,
    KEY_TTL_S,
    MAX_SAMPLES,
    MIN_SAMPLES,
    Completion,
    CompletionStore,
    LatencyBook,
    MemoryCompletions,
    RedisCompletions,
    latency_key,
    profile_of,
    quantile,
)

KEY = latency_key("kling", "kling-v2-1", "text2img")


class Ticker:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingRedis(fakeredis.FakeRedis):
    """fakeredis that counts round trips (a pipeline is one)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.round_trips = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.round_trips += 1
        return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        def counted(raise_on_error: bool = True) -> Any:
            self.round_trips += 1
            return execute(raise_on_error)

        pipe.execute = counted  # type: ignore[method-assign]
        return pipe


def _exact(*seconds: float) -> list[Completion]:
    return [Completion(after_s=value, by_s=value) for value in seconds]


# -- quantiles -----------------------------------------------------------------------------------------


def test_exact_completions_give_the_empirical_quantiles() -> None:
    completions = _exact(*range(1, 101))

    assert quantile(completions, 0.10) == 10
    assert quantile(completions, 0.95) == 95
    assert quantile(completions, 0.0) == 1
    assert quantile(completions, 1.0) == 100


def test_a_completion_is_spread_evenly_over_its_interval() -> None:
    completions = [Completion(after_s=10.0, by_s=20.0)]

    assert quantile(completions, 0.1) == pytest.approx(11.0)
    assert quantile(completions, 0.5) == pytest.approx(15.0)
    assert quantile(completions, 0.95) == pytest.approx(19.5)


def test_first_poll_hits_pull_the_early_quantile_below_the_first_poll() -> None:
    # every task was done at an 8 s first poll: all we know is "by 8 s", so the p10 must come down
    assert quantile([Completion(after_s=0.0, by_s=8.0)] * 50, 0.10) == pytest.approx(0.8)


def test_quantiles_of_polled_completions_approach_the_true_ones() -> None:
    rng, sigma = random.Random(4), math.log(3) / 1.645
    completions = []
    for _ in range(4000):
        done_at = rng.lognormvariate(math.log(20), sigma)
        after = 8.5 + 4 * math.floor((done_at - 8.5) / 4) if done_at > 8.5 else 0.0
        completions.append(Completion(after_s=after, by_s=after + 4 if after else 8.5))

    assert quantile(completions, 0.10) == pytest.approx(8.5, abs=0.5)
    assert quantile(completions, 0.50) == pytest.approx(20.0, abs=0.7)
    assert quantile(completions, 0.95) == pytest.approx(60.0, abs=3.0)


def test_quantile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no completions"):
        quantile([], 0.5)


def test_too_few_completions_make_no_profile() -> None:
    assert profile_of(_exact(*range(MIN_SAMPLES - 1))) is None

    profile = profile_of(_exact(*range(1, MIN_SAMPLES + 1)))
    assert profile is not None
    assert (profile.early_s, profile.window_s, profile.samples) == (2, 19, MIN_SAMPLES)


@pytest.mark.parametrize(
    ("after", "by", "expected"),
    [
        pytest.param(3.0, 9.0, Completion(3.0, 9.0), id="ordinary"),
        pytest.param(-1.0, 9.0, Completion(0.0, 9.0), id="clock-skew-before-start"),
        pytest.param(12.0, 9.0, Completion(9.0, 9.0), id="after-later-than-by"),
        pytest.param(0.0, -2.0, Completion(0.0, 0.0), id="negative"),
    ],
)
def test_completion_between_keeps_a_sane_interval(after: float, by: float, expected: Completion) -> None:
    assert Completion.between(after, by) == expected


@pytest.mark.parametrize("raw", [b"1.5,3.25", "1.5,3.25"])
def test_completion_round_trips_through_its_text_form(raw: bytes | str) -> None:
    assert Completion.decode(raw) == Completion(1.5, 3.25)
    assert Completion.decode(Completion(1.5, 3.25).encode()) == Completion(1.5, 3.25)


@pytest.mark.parametrize("raw", [b"", b"garbage", b"1,2,3", b"x,1"])
def test_garbage_in_the_list_is_skipped(raw: bytes) -> None:
    assert Completion.decode(raw) is None


# -- the Redis list --------------------------------------------------------------------------------------


def test_recording_is_one_round_trip_and_keeps_a_capped_list_with_a_ttl() -> None:
    redis = CountingRedis()
    store = RedisCompletions(redis)

    for index in range(MAX_SAMPLES + 30):
        store.add(KEY, Completion(after_s=index, by_s=index + 1))

    assert redis.round_trips == MAX_SAMPLES + 30
    assert redis.llen(KEY_PREFIX + KEY) == MAX_SAMPLES
    assert 0 < redis.ttl(KEY_PREFIX + KEY) <= KEY_TTL_S
    recent = store.recent(KEY)
    assert len(recent) == MAX_SAMPLES
    assert recent[0] == Completion(MAX_SAMPLES + 29, MAX_SAMPLES + 30)  # newest first, oldest dropped


def test_every_worker_sees_the_completions_of_the_others() -> None:
    server = fakeredis.FakeServer()
    one, other = (RedisCompletions(fakeredis.FakeRedis(server=server)) for _ in range(2))

    for index in range(MIN_SAMPLES):
        (one if index % 2 else other).add(KEY, Completion(index, index + 1))

    assert len(LatencyBook(one).store.recent(KEY)) == MIN_SAMPLES
    assert LatencyBook(other).profile(KEY) is not None


def test_keys_are_kept_apart_per_provider_model_and_operation() -> None:
    store = RedisCompletions(fakeredis.FakeRedis())
    store.add(latency_key("kling", "kling-v2-1", "text2img"), Completion(1, 2))
    store.add(latency_key("kling", "kling-v2-1", "expand"), Completion(30, 40))

    assert store.recent(latency_key("kling", "kling-v2-1", "text2img")) == [Completion(1, 2)]
    assert store.recent(latency_key("bfl", "kling-v2-1", "text2img")) == []


def test_garbage_entries_in_redis_are_ignored() -> None:
    redis = fakeredis.FakeRedis()
    redis.lpush(KEY_PREFIX + KEY, b"not-a-completion")
    store = RedisCompletions(redis)
    store.add(KEY, Completion(1, 2))

    assert store.recent(KEY) == [Completion(1, 2)]


# -- the book: cache and degradation ---------------------------------------------------------------------


def _filled(store: CompletionStore, count: int, seconds: float = 10.0) -> None:
    for _ in range(count):
        store.add(KEY, Completion(seconds, seconds))


def test_the_profile_is_read_once_per_cache_period() -> None:
    redis = CountingRedis()
    store = RedisCompletions(redis)
    _filled(store, MIN_SAMPLES)
    ticker = Ticker()
    book = LatencyBook(store, monotonic=ticker)
    redis.round_trips = 0

    profiles = [book.profile(KEY) for _ in range(100)]

    assert redis.round_trips == 1
    assert profiles[0] is not None and profiles[0].early_s == 10.0
    assert set(profiles) == {profiles[0]}
    ticker.now += CACHE_TTL_S + 1
    book.profile(KEY)
    assert redis.round_trips == 2


def test_new_completions_show_after_the_cache_period() -> None:
    store, ticker = MemoryCompletions(), Ticker()
    book = LatencyBook(store, monotonic=ticker)
    _filled(store, MIN_SAMPLES, seconds=10.0)
    assert book.profile(KEY) is not None

    for _ in range(MAX_SAMPLES):
        book.record(KEY, Completion(30.0, 30.0))
    before = book.profile(KEY)
    ticker.now += CACHE_TTL_S + 1
    after = book.profile(KEY)

    assert before is not None and before.early_s == 10.0
    assert after is not None and after.early_s == 30.0 and after.samples == MAX_SAMPLES


def test_too_few_samples_fall_back_to_the_catalog() -> None:
    store = MemoryCompletions()
    _filled(store, MIN_SAMPLES - 1)

    assert LatencyBook(store).profile(KEY) is None


def test_an_unreachable_redis_falls_back_to_the_catalog_and_is_not_asked_again_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = fakeredis.FakeServer()
    server.connected = False  # every command raises ConnectionError
    calls: list[str] = []

    class Watching(RedisCompletions):
        def recent(self, key: str) -> list[Completion]:
            calls.append(key)
            return super().recent(key)

    ticker = Ticker()
    book = LatencyBook(Watching(fakeredis.FakeRedis(server=server)), monotonic=ticker)

    assert [book.profile(KEY) for _ in range(5)] == [None] * 5
    assert calls == [KEY]
    assert "catalog's defaults" in caplog.text
    book.record(KEY, Completion(1, 2))  # logged, never raised
    assert "could not record" in caplog.text
    ticker.now += CACHE_TTL_S + 1
    server.connected = True
    _filled(book.store, MIN_SAMPLES)
    assert book.profile(KEY) is not None  # back once Redis is
    assert calls == [KEY, KEY]


def test_a_redis_error_while_reading_is_a_miss(monkeypatch: pytest.MonkeyPatch) -> None:
    redis = fakeredis.FakeRedis()
    store = RedisCompletions(redis)
    _filled(store, MIN_SAMPLES)

    def broken(*_args: object, **_kwargs: object) -> object:
        raise RedisConnectionError("gone")

    monkeypatch.setattr(redis, "lrange", broken)

    assert LatencyBook(store).profile(KEY) is None


def test_the_in_memory_book_learns_too() -> None:
    book = LatencyBook.in_memory()
    for index in range(MIN_SAMPLES):
        book.record(KEY, Completion(index, index + 1))

    profile = LatencyBook(book.store).profile(KEY)
    assert profile is not None and profile.samples == MIN_SAMPLES


# -- the pipeline learns from polled completions and starts schedules from them -----------------------


def _running_kling_job(harness: Harness) -> str:
    job_id = harness.enqueue()
    harness.kling.submissions.append(accepted("up-1"))
    submit_job(job_id, rt=harness.rt)
    return job_id


def _key_of(harness: Harness, job_id: str) -> str:
    job = harness.job(job_id)
    return latency_key(job.provider, job.upstream_model, job.operation)


def test_a_first_poll_hit_is_recorded_as_done_by_the_first_poll(harness: Harness) -> None:
    job_id = _running_kling_job(harness)
    harness.advance(9.0)
    harness.kling.polls.append(succeeded())

    poll_job(job_id, 0, rt=harness.rt)

    assert harness.job(job_id).status == JobStatus.SUCCEEDED
    assert _key_of(harness, job_id) == "kling:kling-v2-1:text2img"
    assert harness.rt.latency.store.recent(_key_of(harness, job_id)) == [Completion(0.0, 9.0)]


def test_a_later_hit_is_recorded_between_the_last_pending_poll_and_the_one_that_saw_it_done(
    harness: Harness,
) -> None:
    job_id = _running_kling_job(harness)
    harness.kling.polls += [pending(), succeeded()]
    harness.advance(4.0)
    poll_job(job_id, 0, rt=harness.rt)
    pending_at = harness.job(job_id).updated_at  # stamped by the repository's own (real) clock
    harness.advance(3.0)

    poll_job(job_id, 1, rt=harness.rt)

    [completion] = harness.rt.latency.store.recent(_key_of(harness, job_id))
    started = harness.clock.now - timedelta(seconds=7.0)
    assert completion.by_s == pytest.approx(7.0)
    assert completion.after_s == pytest.approx(min(max((pending_at - started).total_seconds(), 0.0), 7.0), abs=1e-3)


@pytest.mark.parametrize("outcome", ["failed", "stale"])
def test_only_the_winner_of_a_success_teaches_the_schedule(harness: Harness, outcome: str) -> None:
    job_id = _running_kling_job(harness)
    harness.advance(5.0)
    if outcome == "failed":
        harness.kling.polls.append(PollResult(state=UpstreamState.FAILED))
        poll_job(job_id, 0, rt=harness.rt)
    else:
        harness.kling.polls += [succeeded()]
        poll_job(job_id, 0, rt=harness.rt)
        harness.kling.polls += [succeeded()]
        poll_job(job_id, 0, rt=harness.rt)  # a duplicated link: the chain has moved on

    assert len(harness.rt.latency.store.recent(_key_of(harness, job_id))) == (0 if outcome == "failed" else 1)


def test_a_learned_profile_moves_the_first_poll_of_the_next_jobs(harness: Harness) -> None:
    key = "kling:kling-v2-1:text2img"
    for seconds in range(10, 10 + MIN_SAMPLES):
        harness.rt.latency.record(key, Completion(seconds, seconds))

    job_id = _running_kling_job(harness)

    assert _key_of(harness, job_id) == key
    [(_, _, countdown)] = harness.sender.polls
    assert 11.0 * 0.95 <= countdown <= 11.0 * 1.05  # the p10 of 10 … 29 s (±5 % jitter), not the catalog's 4 s
