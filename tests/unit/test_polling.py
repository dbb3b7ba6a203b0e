"""``worker.polling``: exponential backoff with jitter, capped, bounded by the deadline, reproducible."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from shared.catalog import PollingPolicy
from worker.polling import MIN_DELAY_S, clamp_to_deadline, deadline_after, max_detection_lag_s, next_poll_delay

POLICY = PollingPolicy(first_poll_s=4.0, base_s=2.0, factor=1.5, max_s=30.0, jitter=0.1, deadline_s=900)
EXACT = POLICY.model_copy(update={"jitter": 0.0})
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


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
