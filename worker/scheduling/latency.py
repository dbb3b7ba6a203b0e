"""What recent completions of each upstream model took: the latency profile the poll schedule starts from.

Every job whose poll saw its upstream task done adds one :class:`Completion`: the task finished *after* the last
poll that saw it pending and *by* the poll that saw it done (seconds after the upstream accepted it; a first-poll
hit is only known to have finished by then). The last ``MAX_SAMPLES`` of them per upstream model live in one
Redis list, shared by every worker (one round trip per completion). Their p10 and p95 make the model's
:class:`~worker.scheduling.polling.LatencyProfile`, read at most once per ``CACHE_TTL_S`` per process, so a poll
costs no Redis read. With fewer than ``MIN_SAMPLES`` completions, or Redis unreachable, there is no profile and the
catalog's defaults apply.

Each completion is spread evenly over its interval when the quantiles are taken. Counting a first-poll hit
as finished at the first poll would keep a first poll that is too late there for good; spread over
(0, first poll], enough of them pull the early quantile (and the next first poll) down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from redis import Redis, RedisError

from shared.completion_latencies import (
    KEY_PREFIX,
    MAX_SAMPLES,
    MIN_SAMPLES,
    Completion,
    latency_key,
    quantile,
)
from worker.scheduling.polling import LatencyProfile

__all__ = ["KEY_PREFIX", "MAX_SAMPLES", "MIN_SAMPLES", "Completion", "latency_key", "quantile"]

log = logging.getLogger(__name__)

#: the quantile the first poll goes to, and the one that ends the usual window
EARLY_QUANTILE = 0.10
WINDOW_QUANTILE = 0.95
#: how long a worker process reuses a profile it read
CACHE_TTL_S = 30.0
#: an upstream model unused this long forgets its completions
KEY_TTL_S = 7 * 24 * 3600


def profile_of(completions: Sequence[Completion]) -> LatencyProfile | None:
    """The profile that ``completions`` make, or ``None`` when they are too few to say."""
    if len(completions) < MIN_SAMPLES:
        return None
    return LatencyProfile(
        early_s=quantile(completions, EARLY_QUANTILE),
        window_s=quantile(completions, WINDOW_QUANTILE),
        samples=len(completions),
    )


class CompletionStore(Protocol):
    """Where the recent completions of each key are kept."""

    def add(self, key: str, completion: Completion) -> None: ...

    def recent(self, key: str) -> list[Completion]: ...


class RedisCompletions:
    """A capped Redis list per key, newest first, shared by every worker process."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    @classmethod
    def from_url(cls, url: str) -> RedisCompletions:
        # short timeouts: a poll never waits long on a Redis that is gone (the catalog's defaults do)
        return cls(Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0))

    def add(self, key: str, completion: Completion) -> None:
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.lpush(KEY_PREFIX + key, completion.encode())
            pipe.ltrim(KEY_PREFIX + key, 0, MAX_SAMPLES - 1)
            pipe.expire(KEY_PREFIX + key, KEY_TTL_S)
            pipe.execute()

    def recent(self, key: str) -> list[Completion]:
        raw: list[bytes] = self._redis.lrange(KEY_PREFIX + key, 0, MAX_SAMPLES - 1)  # type: ignore[assignment]
        return [item for item in map(Completion.decode, raw) if item is not None]


class MemoryCompletions:
    """The same in one process (unit tests, the poll-policy bench, a runtime without Redis)."""

    def __init__(self) -> None:
        self._lists: dict[str, deque[Completion]] = {}
        self._lock = threading.Lock()

    def add(self, key: str, completion: Completion) -> None:
        with self._lock:
            self._lists.setdefault(key, deque(maxlen=MAX_SAMPLES)).appendleft(completion)

    def recent(self, key: str) -> list[Completion]:
        with self._lock:
            return list(self._lists.get(key, ()))


class LatencyBook:
    """Records completions and answers each key's profile from a per-process cache (thread-safe)."""

    def __init__(
        self,
        store: CompletionStore,
        *,
        cache_ttl_s: float = CACHE_TTL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._ttl = cache_ttl_s
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, LatencyProfile | None]] = {}
        self._lock = threading.Lock()

    @classmethod
    def in_memory(cls) -> LatencyBook:
        return cls(MemoryCompletions())

    def profile(self, key: str) -> LatencyProfile | None:
        """The key's learned profile, or ``None`` (too few completions, or the store unreachable)."""
        now = self._monotonic()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            profile = profile_of(self.store.recent(key))
        except (RedisError, OSError) as exc:  # the catalog's defaults until the next try
            log.warning("completion latencies of %s unavailable (%s); polling on the catalog's defaults", key, exc)
            profile = None
        with self._lock:
            self._cache[key] = (now + self._ttl, profile)
        return profile

    def record(self, key: str, completion: Completion) -> None:
        """Add one completion; a store that fails only costs the sample, never the job."""
        try:
            self.store.add(key, completion)
        except (RedisError, OSError) as exc:
            log.warning("could not record a completion latency of %s: %s", key, exc)
