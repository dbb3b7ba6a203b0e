"""The completions of each upstream model as the workers record them in Redis, and a reader the API uses.

Workers push one :class:`Completion` per finished upstream task (``worker.scheduling.latency``); the API reads
the same list to tell a client when its running job is expected to be done (the median completion time after the
upstream accepted it). Reading never fails a request: without Redis or with too few samples there is no estimate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from redis import Redis, RedisError

log = logging.getLogger(__name__)

#: completions kept per upstream model (a sliding window: old behaviour ages out)
MAX_SAMPLES = 200
#: fewer completions than this say too little: the catalog's defaults apply, and the API gives no estimate
MIN_SAMPLES = 20
KEY_PREFIX = "imagejobs:latency:"
#: the quantile a client is told its job is expected to be done by
EXPECTED_QUANTILE = 0.5


@dataclass(frozen=True, slots=True)
class Completion:
    """An upstream task finished after ``after_s`` and by ``by_s`` seconds after the upstream accepted it."""

    after_s: float
    by_s: float

    @classmethod
    def between(cls, after_s: float, by_s: float) -> Completion:
        by = max(by_s, 0.0)
        return cls(after_s=min(max(after_s, 0.0), by), by_s=by)

    def encode(self) -> str:
        return f"{self.after_s:.3f},{self.by_s:.3f}"

    @classmethod
    def decode(cls, raw: bytes | str) -> Completion | None:
        text = raw.decode() if isinstance(raw, bytes) else raw
        try:
            after, by = (float(part) for part in text.split(","))
        except ValueError:
            return None
        return cls.between(after, by)


def latency_key(provider: str, upstream_model: str, operation: str) -> str:
    """Completions are learned per provider, upstream model and operation (an expand is not a text-to-image)."""
    return f"{provider}:{upstream_model}:{operation}"


def quantile(completions: Sequence[Completion], q: float) -> float:
    """The ``q`` quantile of the completion times, each completion spread evenly over its interval."""
    if not completions:
        raise ValueError("no completions")
    target = min(max(q, 0.0), 1.0) * len(completions)
    # the empirical distribution is piecewise linear: walk its breakpoints (x, slope change, jump) in order
    events: list[tuple[float, float, float]] = []
    for item in completions:
        width = item.by_s - item.after_s
        if width > 0:
            events += [(item.after_s, 1.0 / width, 0.0), (item.by_s, -1.0 / width, 0.0)]
        else:
            events.append((item.by_s, 0.0, 1.0))
    events.sort()
    mass, slope, x_prev = 0.0, 0.0, events[0][0]
    for x, slope_change, jump in events:
        reached = mass + slope * (x - x_prev)
        if reached >= target and slope > 0:
            return x_prev + (target - mass) / slope
        mass = reached + jump
        if mass >= target:
            return x
        slope, x_prev = slope + slope_change, x
    return x_prev


class ExpectedDurations:
    """The median completion time of each key, read from the workers' Redis lists and cached per process."""

    def __init__(
        self, redis: Redis, *, cache_ttl_s: float = 30.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._redis = redis
        self._ttl = cache_ttl_s
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, float | None]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> ExpectedDurations:
        # short timeouts: a task object never waits long on a Redis that is gone
        return cls(Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0))

    def seconds(self, key: str) -> float | None:
        """Seconds after the upstream accepts a task of ``key`` by which half of them are done; None if unknown."""
        now = self._monotonic()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            raw: list[bytes] = self._redis.lrange(KEY_PREFIX + key, 0, MAX_SAMPLES - 1)  # type: ignore[assignment]
        except (RedisError, OSError) as exc:
            log.warning("completion latencies of %s unavailable (%s); no expected_done_at", key, exc)
            raw = []
        completions = [item for item in map(Completion.decode, raw) if item is not None]
        value = quantile(completions, EXPECTED_QUANTILE) if len(completions) >= MIN_SAMPLES else None
        with self._lock:
            self._cache[key] = (now + self._ttl, value)
        return value

    def close(self) -> None:
        self._redis.close()
