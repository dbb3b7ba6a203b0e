"""Pure backoff maths for poll chains: exponential with jitter, capped, bounded by a deadline."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from shared.catalog import PollingPolicy
from shared.queue import MAX_COUNTDOWN_S

#: the smallest wait between two polls of one job
MIN_DELAY_S = 0.5


def next_poll_delay(polls_done: int, policy: PollingPolicy, *, rng: random.Random | None = None) -> float:
    """Seconds to wait before the next poll, given how many polls were already made.

    The first poll waits ``first_poll_s``; poll k+1 waits ``base_s · factor^(k-1)``, capped at ``max_s``
    (never above 300 s), each with ±``jitter`` so a burst of jobs does not poll in lock-step.
    """
    if polls_done <= 0:
        nominal = policy.first_poll_s
    else:
        try:
            grown = policy.base_s * policy.factor ** (polls_done - 1)
        except OverflowError:  # a long chain (deadlines may be days) would overflow the float
            grown = policy.max_s
        nominal = min(policy.max_s, grown)
    spread = (rng or random).uniform(-policy.jitter, policy.jitter)
    return min(max(nominal * (1 + spread), MIN_DELAY_S), MAX_COUNTDOWN_S)


def max_detection_lag_s(policy: PollingPolicy) -> float:
    """The longest a finished upstream task can wait for its next poll under ``policy``."""
    return min(max(policy.first_poll_s, policy.max_s) * (1 + policy.jitter), MAX_COUNTDOWN_S)


def clamp_to_deadline(delay_s: float, *, now: datetime, deadline: datetime | None) -> float:
    """Poll no later than the deadline, so a job past it is noticed on time."""
    if deadline is None:
        return delay_s
    remaining = (deadline - now).total_seconds()
    return max(MIN_DELAY_S, min(delay_s, remaining))


def deadline_after(start: datetime, policy: PollingPolicy) -> datetime:
    return start + timedelta(seconds=policy.deadline_s)
