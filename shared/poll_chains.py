"""Which link of a running job's poll chain may poll next, kept in Redis so that a pending poll commits nothing.

A running job is polled by a chain of countdown messages, each carrying its link number. A link claims its number
before it asks the upstream, which moves the chain on by one: a duplicate of the same link (a message delivered
twice, the sweeper's restart of a chain that was only late, the early poll an upstream callback sends) and every
older link find the chain moved and stop, so one chain polls each job, however many messages are about.

The job's row stays the source of truth for everything else. It keeps a floor of the count (``poll_count``) and
when the chain promised its next poll (``next_poll_at``, the sweeper restarts a chain that broke its promise by
more than ``poll_overdue_s``), both written only when that promise would otherwise go stale (``needs_heartbeat``):
for a job that takes seconds, never between ``running`` and its end. If Redis forgets a chain (a restart without
persistence), the next link to come claims it afresh; if Redis cannot be reached, no link polls, and the sweeper
restarts the chain from the row once it is overdue.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

from redis import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

KEY_PREFIX: Final = "imagejobs:poll-chain:"
#: a chain Redis has not heard of for this long is forgotten (a job running longer is claimed afresh, as above)
KEY_TTL_S: Final = 86_400

# KEYS[1] the chain; ARGV[1] the link, ARGV[2] the key's time to live, ARGV[3] when the link claims (epoch seconds;
# empty: a claim that polls nothing keeps the last poll's time). The value is "<next link>:<when the last link
# claimed>". A link claims when the chain is unknown or waits for it; the answer is {won, the previous claim's time}.
_CLAIM = """
local raw = redis.call('GET', KEYS[1])
local current, at = nil, ''
if raw then
  local sep = string.find(raw, ':', 1, true)
  if sep then
    current, at = tonumber(string.sub(raw, 1, sep - 1)), string.sub(raw, sep + 1)
  else
    current = tonumber(raw)
  end
end
if current and current ~= tonumber(ARGV[1]) then
  return {0, ''}
end
local stamp = ARGV[3]
if stamp == '' then stamp = at end
redis.call('SET', KEYS[1], (tonumber(ARGV[1]) + 1) .. ':' .. stamp, 'EX', ARGV[2])
return {1, at}
"""


@dataclass(frozen=True, slots=True)
class Claim:
    """A link's claim: ``won`` if it may poll; ``previous_at``, when the link before it claimed (epoch seconds):
    for a poll that finds the task done, when the task was last seen pending."""

    won: bool
    previous_at: float | None = None

    def __bool__(self) -> bool:
        return self.won


class PollChains(Protocol):
    def claim(self, job_id: str, link: int, *, at: float | None = None) -> Claim | None:
        """Whether ``link`` may poll now (the chain moves to ``link + 1``); False for any other link than the one
        the chain waits for (stale, duplicated),
        None when the chain cannot be asked (Redis unreachable). ``at``: when (a claim that polls nothing, an
        upstream callback's, leaves it out)."""
        ...

    def current(self, job_id: str) -> int | None:
        """The number of the link the chain waits for, if known."""
        ...

    def start(self, job_id: str) -> None:
        """A new chain, waiting for link 0 (a job that just started running); best effort."""
        ...


class RedisPollChains:
    """The chains of every worker and API process, in one Redis."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._claim = redis.register_script(_CLAIM)

    def claim(self, job_id: str, link: int, *, at: float | None = None) -> Claim | None:
        stamp = "" if at is None else f"{at:.3f}"
        try:
            won, previous = self._claim(keys=[KEY_PREFIX + job_id], args=[link, KEY_TTL_S, stamp])
        except RedisError:
            log.warning("job %s: poll chain unreachable; the sweeper restarts it once overdue", job_id)
            return None
        text = previous.decode() if isinstance(previous, bytes) else str(previous)
        return Claim(won=bool(won), previous_at=float(text) if text else None)

    def current(self, job_id: str) -> int | None:
        try:
            raw = self._redis.get(KEY_PREFIX + job_id)
        except RedisError:
            return None
        if not isinstance(raw, bytes | str):
            return None
        text = raw.decode() if isinstance(raw, bytes) else raw
        return int(text.partition(":")[0])

    def start(self, job_id: str) -> None:
        try:
            self._redis.set(KEY_PREFIX + job_id, "0:", ex=KEY_TTL_S)
        except RedisError:  # an unknown chain is claimed by the first link that comes
            log.warning("job %s: poll chain not recorded (Redis unreachable)", job_id)


class InMemoryPollChains:
    """One process's chains (unit tests, a worker built without Redis)."""

    def __init__(self) -> None:
        self._chains: dict[str, tuple[int, float | None]] = {}
        self._lock = threading.Lock()

    def claim(self, job_id: str, link: int, *, at: float | None = None) -> Claim | None:
        with self._lock:
            current, previous = self._chains.get(job_id, (link, None))
            if current != link:
                return Claim(won=False)
            self._chains[job_id] = (link + 1, previous if at is None else at)
            return Claim(won=True, previous_at=previous)

    def current(self, job_id: str) -> int | None:
        with self._lock:
            chain = self._chains.get(job_id)
        return None if chain is None else chain[0]

    def start(self, job_id: str) -> None:
        with self._lock:
            self._chains[job_id] = (0, None)


def needs_heartbeat(*, promised: datetime | None, next_due: datetime, overdue_s: float) -> bool:
    """Whether the row's promise (``next_poll_at``) must move to ``next_due`` before the next link is sent.

    The sweeper restarts a chain ``overdue_s`` after its promise; the row is left alone while the next link is due
    within half of that, so a link may still be late by ``overdue_s / 2`` before the sweeper steps in.
    """
    return promised is None or next_due > promised + timedelta(seconds=overdue_s / 2)


def next_link(chains: PollChains, job_id: str, *, floor: int) -> int:
    """The link to send to restart or hurry a chain: the one it waits for, never below the row's floor."""
    known = chains.current(job_id)
    return floor if known is None else max(known, floor)
