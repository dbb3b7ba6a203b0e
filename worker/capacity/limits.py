"""Fleet-wide upstream limits per channel, shared by every worker process through Redis.

A *channel* is one credential of one provider (``worker/capacity/channels.py``). Each channel has two limits,
checked and taken together by one Lua script: atomically, and on Redis' clock (``TIME``), so all worker processes
on all hosts share one state and one clock.

- **Requests per second**: a token bucket of capacity ``burst``, refilled at ``requests_per_second``. A request
  takes ``cost`` tokens; with ``burst = 1`` (the default) requests are spaced at least ``1 / rate`` apart. A cost
  above the capacity (a Gemini job of n images makes n calls) is taken from a full bucket and leaves it in debt, so
  the rate over any window still holds. Polls take tokens too: they are requests to the same upstream.
- **Concurrent upstream tasks**: slots held per job in a sorted set (member: the job id; score: when the hold
  expires, in Redis milliseconds) plus a hash member → slots. A job takes ``k`` slots only if
  ``in use + k ≤ max_concurrent``. Asking again for a job that already holds slots renews them instead of counting
  twice, so a retried, redelivered or re-claimed submit keeps its own. Slots are released when the job ends
  (``worker/ending.py``, after the terminal transition). The provider's facts (``ProviderFacts.slots``) say how
  many a job takes.

Slots never leak for good. A hold expires at the job's deadline plus ``HOLD_GRACE_S``, and the script drops
expired holders before counting. The sweeper ends every unfinished job at its deadline, so past it nothing of
ours can still be waiting on that upstream task. Until then a hold is kept even when nobody will release it: a
worker that died between a terminal commit and the release, or a job the API cancelled while its task still runs
upstream (no upstream here has a cancel call, so the task keeps its slot there too). Expiry by deadline instead
of a lease renewed on every poll: no extra Redis write per poll, and no way for a slow poll chain (back-off, a
restarted worker) to lose a hold while its upstream task is still running.

A job's slots are counted against one limit per channel. Kling keeps virtual try-on in a pack of its own; counting
it against the image pack's limit can only make us wait earlier, never overrun.

Not covered: a Kling re-submit first looks the job up by ``external_task_id`` (one more request, counted: see
``ProviderFacts.requests``); result image downloads are not API calls and are not limited.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, Protocol

from redis import Redis

#: a hold outlives the job's deadline by this much (the sweeper ends jobs at their deadline, every few seconds)
HOLD_GRACE_S: Final = 120.0
#: the hold of a job without a deadline
DEFAULT_HOLD_S: Final = 3600.0

#: KEYS: bucket (hash tokens/ts), holders (zset job → expiry ms), held slots (hash job → k)
#: ARGV: rate per s (0: unlimited), burst, cost, holder, slots wanted (0: no slot limit), slot limit, hold ms
#: → {1, 0, in_use} granted, or {0, wait_ms, in_use, reason} with reason 1 = rate (wait_ms: until enough tokens),
#: 2 = slots (wait_ms -1: until some job ends)
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local holder, want, limit, hold = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local in_use, held = 0, false
if want > 0 then
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
  for _, member in ipairs(expired) do redis.call('HDEL', KEYS[3], member) end
  if #expired > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) end
  held = redis.call('HEXISTS', KEYS[3], holder) == 1
  for _, slots in ipairs(redis.call('HVALS', KEYS[3])) do in_use = in_use + tonumber(slots) end
  if not held and in_use + want > limit then return {0, -1, in_use, 2} end
end
if rate > 0 then
  local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
  local tokens = tonumber(state[1]) or burst
  local elapsed = math.max(0, now - (tonumber(state[2]) or now))
  tokens = math.min(burst, tokens + elapsed * rate / 1000)
  local need = math.min(cost, burst)
  if tokens < need then return {0, math.ceil((need - tokens) * 1000 / rate), in_use, 1} end
  tokens = tokens - cost
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
  redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * 1000 / rate) + 1000)
end
if want > 0 then
  if not held then
    redis.call('HSET', KEYS[3], holder, want)
    in_use = in_use + want
  end
  redis.call('ZADD', KEYS[2], now + hold, holder)
end
return {1, 0, in_use}
"""


@dataclass(frozen=True, slots=True)
class ChannelLimits:
    """One channel's limits (``None``: unlimited)."""

    requests_per_second: float | None = None
    #: how many requests may go out back to back from a full bucket (1: evenly spaced)
    burst: float = 1.0
    max_concurrent: int | None = None


@dataclass(frozen=True, slots=True)
class Granted:
    """The request may go out; the job holds its slots (if the channel limits concurrency)."""

    #: slots in use on the channel, ours included
    in_use: int = 0


@dataclass(frozen=True, slots=True)
class Refused:
    """Not now: ``rate`` (a token comes in ``wait_s``) or ``slots`` (free when some job ends; ``wait_s`` None)."""

    reason: Literal["rate", "slots"]
    wait_s: float | None
    in_use: int = 0


Acquired = Granted | Refused


class Limits(Protocol):
    """Where tokens and slots are kept: Redis in workers (``UpstreamLimits``), nowhere in tests (``Unlimited``)."""

    def acquire(
        self,
        provider: str,
        channel: str,
        *,
        limits: ChannelLimits,
        holder: str,
        slots: int = 0,
        hold_s: float = ...,
        cost: float = 1.0,
    ) -> Acquired: ...

    def release(self, provider: str, channel: str, holder: str) -> None: ...


class UpstreamLimits:
    """The Redis side of the limits: take a token (and slots), release slots, read the holders."""

    def __init__(self, redis: Redis, *, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._acquire = redis.register_script(_ACQUIRE)

    def acquire(
        self,
        provider: str,
        channel: str,
        *,
        limits: ChannelLimits,
        holder: str,
        slots: int = 0,
        hold_s: float = DEFAULT_HOLD_S,
        cost: float = 1.0,
    ) -> Acquired:
        """A token (``cost``) and, if the channel limits concurrency, ``slots`` held by ``holder`` — both or none.

        ``slots = 0`` takes a token only (a poll). A job wanting more slots than the limit waits for an idle
        channel instead of never running (the upstream decides then).
        """
        rate = limits.requests_per_second or 0.0
        limit = limits.max_concurrent or 0
        want = min(slots, limit) if limit > 0 else 0
        keys = self._keys(provider, channel)
        hold_ms = max(1, math.ceil(hold_s * 1000))
        args: list[str | float] = [rate, max(limits.burst, 1.0), max(cost, 0.0), holder, want, limit, hold_ms]
        answer: list[Any] = self._acquire(keys=keys, args=args)
        in_use = int(answer[2])
        if int(answer[0]) == 1:
            return Granted(in_use=in_use)
        if int(answer[3]) == 2:
            return Refused(reason="slots", wait_s=None, in_use=in_use)
        return Refused(reason="rate", wait_s=int(answer[1]) / 1000, in_use=in_use)

    def release(self, provider: str, channel: str, holder: str) -> None:
        """Free the slots ``holder`` holds on the channel (nothing if it holds none)."""
        _, holders, held = self._keys(provider, channel)
        pipe = self._redis.pipeline(transaction=True)
        pipe.zrem(holders, holder)
        pipe.hdel(held, holder)
        pipe.execute()

    def holders(self, provider: str, channel: str) -> dict[str, int]:
        """Job id → slots held on the channel (expired holds included until the next acquire drops them)."""
        _, _, held = self._keys(provider, channel)
        raw: Mapping[bytes, bytes] = self._redis.hgetall(held)  # type: ignore[assignment]
        return {key.decode(): int(value) for key, value in raw.items()}

    def tokens(self, provider: str, channel: str, *, limits: ChannelLimits) -> float | None:
        """The tokens in the channel's bucket now, refilled as the acquire script refills them (Redis time);
        None for a channel without a rate limit. Below zero: a debt a costly request left."""
        rate = limits.requests_per_second
        if rate is None:
            return None
        burst = max(limits.burst, 1.0)
        bucket, _, _ = self._keys(provider, channel)
        pipe = self._redis.pipeline(transaction=False)
        pipe.hmget(bucket, "tokens", "ts")
        pipe.time()
        (stored, stamped), (seconds, micros) = pipe.execute()
        if stored is None or stamped is None:
            return burst  # unused lately: the bucket expired full
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        return min(burst, float(stored) + max(0, now_ms - int(stamped)) * rate / 1000)

    def _keys(self, provider: str, channel: str) -> list[str]:
        # one hash tag per channel: the script's keys stay on one node of a Redis Cluster
        base = f"{self._prefix}:{{{provider}:{channel}}}"
        return [f"{base}:bucket", f"{base}:holders", f"{base}:held"]


def hold_for(deadline_at: datetime | None, *, now: datetime) -> float:
    """How long a job's slots are held at most: until its deadline plus ``HOLD_GRACE_S``."""
    if deadline_at is None:
        return DEFAULT_HOLD_S
    return max((deadline_at - now).total_seconds(), 0.0) + HOLD_GRACE_S
