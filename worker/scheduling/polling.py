"""Pure maths of a poll chain: a latency-aware countdown with jitter, capped, bounded by a deadline.

The schedule of one job, in waits after the upstream accepted it:

1. the first poll at the model's **early completion quantile** (``first_poll_s``: a p10);
2. then **short intervals** across the model's **usual window** (up to ``usual_window_s``: a p95): the window
   split in ``WINDOW_STEPS`` waits, but no shorter than ``base_s`` and no longer than ``interval_s``;
3. past the window, **exponential back-off** from that interval by ``factor``, capped at ``max_s``;

each wait with ±``jitter`` (so a burst of jobs does not poll in lock-step), never below ``MIN_DELAY_S`` nor above
300 s, and clamped to the job's deadline. The catalog gives the first poll and the window until the model's
recent completions are learned (``worker.scheduling.latency``); :func:`with_profile` puts what was learned into
the policy.

Without a usual window (the default) the schedule is the plain one: ``first_poll_s``, then
``base_s · factor^k`` capped at ``max_s``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.catalog import PollingPolicy
from shared.queue import MAX_COUNTDOWN_S

#: the smallest wait between two polls of one job
MIN_DELAY_S = 0.5
#: the usual window is polled in about this many short intervals (fewer when ``interval_s`` caps them)
WINDOW_STEPS = 8


@dataclass(frozen=True, slots=True)
class LatencyProfile:
    """When a model's tasks usually finish, in seconds after the upstream accepted them (learned or defaulted)."""

    #: the early completion quantile (p10): where the first poll goes
    early_s: float
    #: the end of the usual window (p95): where the back-off starts
    window_s: float
    #: how many completions it was learned from
    samples: int = 0


def with_profile(policy: PollingPolicy, profile: LatencyProfile | None) -> PollingPolicy:
    """``policy`` with its first poll and usual window taken from ``profile`` (``None``: the catalog's own)."""
    if profile is None:
        return policy
    early = min(max(profile.early_s, MIN_DELAY_S), MAX_COUNTDOWN_S)
    return policy.model_copy(update={"first_poll_s": early, "usual_window_s": max(profile.window_s, early)})


def short_interval(policy: PollingPolicy) -> float:
    """The wait between polls inside the usual window (and the base of the back-off past it)."""
    window = policy.usual_window_s if policy.usual_window_s is not None else policy.first_poll_s
    spread = max(window - policy.first_poll_s, 0.0)
    return min(max(policy.base_s, min(policy.interval_s, spread / WINDOW_STEPS)), policy.max_s)


def polls_in_window(policy: PollingPolicy) -> int:
    """How many short intervals follow the first poll before the usual window ends."""
    if policy.usual_window_s is None or policy.usual_window_s <= policy.first_poll_s:
        return 0
    return math.ceil((policy.usual_window_s - policy.first_poll_s) / short_interval(policy))


def nominal_delay(polls_done: int, policy: PollingPolicy) -> float:
    """The wait before the next poll, without jitter, given how many polls were already made."""
    if polls_done <= 0:
        return policy.first_poll_s
    interval = short_interval(policy)
    past_window = polls_done - 1 - polls_in_window(policy)
    if past_window <= 0:
        return interval
    try:
        grown = interval * policy.factor**past_window
    except OverflowError:  # a long chain (deadlines may be days) would overflow the float
        grown = policy.max_s
    return max(min(policy.max_s, grown), interval)


def next_poll_delay(polls_done: int, policy: PollingPolicy, *, rng: random.Random | None = None) -> float:
    """Seconds to wait before the next poll: :func:`nominal_delay` with ±``jitter``, within [0.5 s, 300 s]."""
    spread = (rng or random).uniform(-policy.jitter, policy.jitter)
    return min(max(nominal_delay(polls_done, policy) * (1 + spread), MIN_DELAY_S), MAX_COUNTDOWN_S)


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
