"""``InflightCalls``: calls in flight beside the pool, their follow-ups on finisher threads, back-pressure."""

from __future__ import annotations

import functools
import threading

import pytest

from worker.inflight import InflightCalls, Outcome

WAIT_S = 10.0


def test_every_call_is_in_flight_at_once_and_each_is_followed_up() -> None:
    calls = InflightCalls(limit=50, finishers=2)
    # Given 50 calls that can only return once all 50 are running
    everyone_running = threading.Barrier(50, timeout=WAIT_S)
    results: list[int] = []
    followed_up = threading.Semaphore(0)

    def follow_up(outcome: Outcome[int]) -> None:
        results.append(outcome())
        followed_up.release()

    def call(number: int) -> int:
        everyone_running.wait()
        return number

    # When one thread hands them all off
    for number in range(50):
        calls.call(f"job-{number}", functools.partial(call, number), then=follow_up)

    # Then the barrier opened (all 50 were in flight) and every follow-up saw its own call's value
    for _ in range(50):
        assert followed_up.acquire(timeout=WAIT_S)
    calls.shutdown(wait=True)
    assert sorted(results) == list(range(50))
    assert calls.peak == 50
    assert calls.in_flight == 0


def test_the_follow_up_sees_the_calls_exception() -> None:
    inflight = InflightCalls(limit=1)
    seen: list[str] = []
    done = threading.Event()

    def follow_up(outcome: Outcome[None]) -> None:
        try:
            outcome()
        except ValueError as exc:
            seen.append(str(exc))
        done.set()

    def call() -> None:
        raise ValueError("upstream said no")

    inflight.call("job", call, then=follow_up)
    assert done.wait(WAIT_S)
    inflight.shutdown(wait=True)
    assert seen == ["upstream said no"]


def test_a_follow_up_that_crashes_ends_its_job() -> None:
    crashed: list[str] = []
    inflight = InflightCalls(limit=2, on_crash=crashed.append)

    def follow_up(outcome: Outcome[None]) -> None:
        raise RuntimeError("a bug after the call")

    inflight.call("job-1", lambda: None, then=follow_up)
    inflight.shutdown(wait=True)
    assert crashed == ["job-1"]
    assert inflight.in_flight == 0


def test_a_full_set_of_calls_holds_the_next_hand_off_back() -> None:
    inflight = InflightCalls(limit=2)
    release = threading.Event()
    handed_off = threading.Event()
    for number in range(2):
        inflight.call(f"job-{number}", release.wait, then=lambda outcome: None)

    def third() -> None:
        inflight.call("job-3", lambda: None, then=lambda outcome: None)
        handed_off.set()

    thread = threading.Thread(target=third)
    thread.start()
    assert not handed_off.wait(0.3)  # both slots are taken: the third hand-off waits
    assert inflight.in_flight == 2
    release.set()
    assert handed_off.wait(WAIT_S)
    thread.join(WAIT_S)
    inflight.shutdown(wait=True)
    assert inflight.in_flight == 0


def test_inline_runs_in_the_callers_thread_and_lets_errors_through() -> None:
    inflight = InflightCalls.inline()
    threads: list[threading.Thread] = []

    def follow_up(outcome: Outcome[int]) -> None:
        threads.append(threading.current_thread())
        outcome()

    def call() -> int:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        inflight.call("job", call, then=follow_up)
    assert threads == [threading.current_thread()]
