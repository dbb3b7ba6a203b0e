"""``worker.scheduling.polling``: the latency-aware countdown (first poll at the early quantile, short intervals
across the usual window, back-off past it) and the plain exponential one, with jitter, capped,
bounded by the deadline."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest

from shared.catalog import PollingPolicy
from worker.scheduling.polling import (
    MIN_DELAY_S,
    WINDOW_STEPS,
    LatencyProfile,
    clamp_to_deadline,
    deadline_after,
    max_detection_lag_s,
    next_poll_delay,
    nominal_delay,
    polls_in_window,
    short_interval,
    with_profile,
)

POLICY = PollingPolicy(first_poll_s=4.0, base_s=2.0, factor=1.5, max_s=30.0, jitter=0.1, deadline_s=900)
EXACT = POLICY.model_copy(update={"jitter": 0.0})
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
#: the bench's image profile: first poll at the p10 (8.5 s), short intervals of 3.7 s up to the p95 (60 s)
AWARE = PollingPolicy(
    first_poll_s=8.5, usual_window_s=60.0, base_s=2.0, interval_s=3.7, factor=1.5, max_s=30.0, jitter=0.1
)
AWARE_EXACT = AWARE.model_copy(update={"jitter": 0.0})


def _delays(policy: PollingPolicy, polls: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [next_poll_delay(done, policy, rng=rng) for done in range(polls)]


@pytest.mark.parametrize("seed", range(20))
def test_first_delay_is_first_poll_s_within_the_jitter(seed: int) -> None:
    delay = next_poll_delay(0, POLICY, rng=random.Random(seed))

    assert 4.0 * 0.9 <= delay <= 4.0 * 1.1


def test_first_delay_without_jitter_is_exactly_first_poll_s() -> None:
    assert next_poll_delay(0, EXACT) == 4.0


def test_jitter_spreads_the_delays() -> None:
    delays = {round(next_poll_delay(0, POLICY, rng=random.Random(seed)), 6) for seed in range(50)}

    assert len(delays) > 40
    assert min(delays) < 3.8 < 4.2 < max(delays)


def test_delays_grow_by_the_factor_until_the_cap() -> None:
    delays = [next_poll_delay(done, EXACT) for done in range(10)]

    assert delays == [4.0, 2.0, 3.0, 4.5, 6.75, 10.125, 15.1875, 22.78125, 30.0, 30.0]


@pytest.mark.parametrize("seed", range(10))
def test_delays_with_jitter_stay_within_jitter_of_the_nominal_curve(seed: int) -> None:
    nominal = [next_poll_delay(done, EXACT) for done in range(12)]

    for actual, expected in zip(_delays(POLICY, 12, seed), nominal, strict=True):
        assert expected * 0.9 <= actual <= expected * 1.1


@pytest.mark.parametrize("polls_done", [8, 20, 100, 10_000])
def test_delay_is_capped_at_max_s_plus_jitter(polls_done: int) -> None:
    for seed in range(20):
        assert next_poll_delay(polls_done, POLICY, rng=random.Random(seed)) <= 30.0 * 1.1


def test_a_poll_chain_as_long_as_the_longest_deadline_allows_stays_at_the_cap() -> None:
    # deadline_s may be 7 days: ~20 000 polls at a 30 s cap; factor ** k overflows a float after ~1 750
    long = POLICY.model_copy(update={"deadline_s": 7 * 24 * 3600})

    assert {next_poll_delay(done, long.model_copy(update={"jitter": 0.0})) for done in (1_750, 1_800, 20_160)} == {30.0}
    assert next_poll_delay(20_160, long, rng=random.Random(3)) <= 33.0


def test_delay_is_never_above_300_s_even_with_maximum_cap_and_jitter() -> None:
    wide = PollingPolicy(first_poll_s=300, base_s=300, factor=4.0, max_s=300, jitter=0.5)

    delays = [next_poll_delay(done, wide, rng=random.Random(seed)) for seed in range(50) for done in (0, 1, 5, 50)]

    assert max(delays) == 300.0
    assert min(delays) >= 150.0


def test_delay_is_never_below_the_minimum() -> None:
    tiny = PollingPolicy(first_poll_s=0.1, base_s=0.1, factor=1.0, max_s=0.1, jitter=0.5)

    assert {next_poll_delay(done, tiny, rng=random.Random(1)) for done in range(5)} == {MIN_DELAY_S}


def test_same_seed_gives_the_same_delays() -> None:
    assert _delays(POLICY, 15, seed=7) == _delays(POLICY, 15, seed=7)


def test_different_seeds_give_different_delays() -> None:
    assert _delays(POLICY, 15, seed=7) != _delays(POLICY, 15, seed=8)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        pytest.param(POLICY, 33.0, id="cap-dominates"),
        pytest.param(PollingPolicy(first_poll_s=60, max_s=30, jitter=0.2), 72.0, id="first-poll-dominates"),
        pytest.param(PollingPolicy(first_poll_s=4, max_s=280, jitter=0.5), 300.0, id="never-above-300"),
        pytest.param(EXACT, 30.0, id="no-jitter"),
    ],
)
def test_max_detection_lag(policy: PollingPolicy, expected: float) -> None:
    assert max_detection_lag_s(policy) == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(10))
def test_max_detection_lag_bounds_every_delay(seed: int) -> None:
    assert max(_delays(POLICY, 30, seed)) <= max_detection_lag_s(POLICY)


def test_clamp_to_deadline_without_a_deadline_keeps_the_delay() -> None:
    assert clamp_to_deadline(25.0, now=NOW, deadline=None) == 25.0


def test_clamp_to_deadline_keeps_a_delay_that_ends_before_the_deadline() -> None:
    assert clamp_to_deadline(25.0, now=NOW, deadline=NOW + timedelta(seconds=60)) == 25.0


def test_clamp_to_deadline_polls_at_the_deadline() -> None:
    assert clamp_to_deadline(25.0, now=NOW, deadline=NOW + timedelta(seconds=7.5)) == 7.5


@pytest.mark.parametrize("remaining", [0.2, 0.0, -30.0])
def test_clamp_to_deadline_never_goes_below_the_minimum_delay(remaining: float) -> None:
    assert clamp_to_deadline(25.0, now=NOW, deadline=NOW + timedelta(seconds=remaining)) == MIN_DELAY_S


def test_deadline_after_adds_the_policy_deadline() -> None:
    assert deadline_after(NOW, POLICY) == NOW + timedelta(seconds=900)


# -- the latency-aware schedule ----------------------------------------------------------------------


def _poll_times(policy: PollingPolicy, polls: int) -> list[float]:
    times, at = [], 0.0
    for done in range(polls):
        at += next_poll_delay(done, policy)
        times.append(round(at, 6))
    return times


def test_first_poll_at_the_early_quantile_then_short_intervals_across_the_window() -> None:
    times = _poll_times(AWARE_EXACT, 16)

    assert times[:3] == [8.5, 12.2, 15.9]
    assert polls_in_window(AWARE_EXACT) == 14  # ceil((60 - 8.5) / 3.7)
    inside = [later - earlier for earlier, later in itertools.pairwise(times) if earlier < 60]
    assert {round(wait, 6) for wait in inside} == {3.7}


def test_past_the_window_the_waits_back_off_by_the_factor_up_to_the_cap() -> None:
    first_past = polls_in_window(AWARE_EXACT) + 1
    waits = [nominal_delay(done, AWARE_EXACT) for done in range(first_past, first_past + 8)]

    assert waits[0] == pytest.approx(3.7)
    assert waits[1:6] == pytest.approx([3.7 * 1.5**k for k in range(1, 6)])
    assert waits[6:] == [30.0, 30.0]
    assert _poll_times(AWARE_EXACT, 15)[-1] >= 60.0  # the back-off starts once the window is over


@pytest.mark.parametrize("seed", range(10))
def test_latency_aware_waits_stay_within_the_jitter_of_the_nominal_schedule(seed: int) -> None:
    rng = random.Random(seed)

    for done in range(40):
        nominal = nominal_delay(done, AWARE_EXACT)
        assert nominal * 0.9 <= next_poll_delay(done, AWARE, rng=rng) <= nominal * 1.1


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        pytest.param(8.5 + 8 * 0.1, 2.0, id="narrow-window-never-below-base_s"),
        pytest.param(8.5 + 8 * 3.0, 3.0, id="window-split-in-steps"),
        pytest.param(600.0, 3.7, id="wide-window-capped-at-interval_s"),
        pytest.param(None, 2.0, id="no-window-plain-back-off-from-base_s"),
    ],
)
def test_the_short_interval_splits_the_window_between_base_s_and_interval_s(
    window: float | None, expected: float
) -> None:
    assert WINDOW_STEPS == 8
    assert short_interval(AWARE.model_copy(update={"usual_window_s": window})) == pytest.approx(expected)


def test_the_short_interval_never_exceeds_the_cap() -> None:
    capped = AWARE.model_copy(update={"base_s": 10.0, "max_s": 6.0})

    assert short_interval(capped) == 6.0
    assert max(nominal_delay(done, capped) for done in range(1, 50)) == 6.0


def test_without_a_window_the_schedule_is_the_plain_exponential_one() -> None:
    plain = [next_poll_delay(done, EXACT) for done in range(10)]
    windowless = [next_poll_delay(done, AWARE_EXACT.model_copy(update={"usual_window_s": None})) for done in range(4)]

    assert plain == [4.0, 2.0, 3.0, 4.5, 6.75, 10.125, 15.1875, 22.78125, 30.0, 30.0]
    assert windowless == [8.5, 2.0, 3.0, 4.5]


def test_a_window_that_ends_before_the_first_poll_backs_off_right_away() -> None:
    early_window = AWARE_EXACT.model_copy(update={"usual_window_s": 5.0})

    assert polls_in_window(early_window) == 0
    assert [nominal_delay(done, early_window) for done in range(4)] == [8.5, 2.0, 3.0, 4.5]


def test_a_learned_profile_replaces_the_catalogs_first_poll_and_window() -> None:
    learned = with_profile(EXACT, LatencyProfile(early_s=9.0, window_s=55.0, samples=200))

    assert (learned.first_poll_s, learned.usual_window_s) == (9.0, 55.0)
    assert learned.model_copy(update={"first_poll_s": 4.0, "usual_window_s": None}) == EXACT
    assert with_profile(EXACT, None) is EXACT


@pytest.mark.parametrize(
    ("profile", "first", "window"),
    [
        pytest.param(LatencyProfile(early_s=0.01, window_s=0.02), MIN_DELAY_S, MIN_DELAY_S, id="tiny"),
        pytest.param(LatencyProfile(early_s=900.0, window_s=1800.0), 300.0, 1800.0, id="huge-first-poll"),
        pytest.param(LatencyProfile(early_s=12.0, window_s=3.0), 12.0, 12.0, id="window-before-first"),
    ],
)
def test_a_learned_profile_is_kept_within_the_countdown_limits(
    profile: LatencyProfile, first: float, window: float
) -> None:
    learned = with_profile(POLICY, profile)

    assert (learned.first_poll_s, learned.usual_window_s) == (first, window)
    assert all(next_poll_delay(done, learned, rng=random.Random(done)) <= 300.0 for done in range(50))


@pytest.mark.parametrize("seed", range(10))
def test_max_detection_lag_bounds_every_latency_aware_delay(seed: int) -> None:
    rng = random.Random(seed)

    assert max(next_poll_delay(done, AWARE, rng=rng) for done in range(60)) <= max_detection_lag_s(AWARE)


def test_a_latency_aware_chain_as_long_as_the_longest_deadline_stays_at_the_cap() -> None:
    assert {nominal_delay(done, AWARE_EXACT) for done in (2_000, 20_160)} == {30.0}


def test_the_latency_aware_schedule_meets_the_poll_goal_on_the_image_profile() -> None:
    # the goal (≤ 6 polls, lag p50 ≤ 2.1 s, p95 ≤ 3.9 s) on lognormal(median 20 s, p95 60 s);
    # bench/poll_policy.py measures it over 200k draws
    rng, polls, lags = random.Random(5), [], []
    sigma = 1.0986 / 1.645
    for _ in range(4000):
        done_at = rng.lognormvariate(2.9957, sigma)
        at, made = 0.0, 0
        while at < done_at:
            at += next_poll_delay(made, AWARE, rng=rng)
            made += 1
        polls.append(made)
        lags.append(at - done_at)
    lags.sort()

    assert sum(polls) / len(polls) <= 6.5
    assert lags[len(lags) // 2] <= 2.5
    assert lags[int(0.95 * len(lags))] <= 4.5
