"""Sends upstream callbacks (Kling ``callback_url``, BFL ``webhook_url``) when they fall due.

Tasks stay clock-driven: a callback is an entry (due time, URL, payload builder) in a heap, its payload built
when it leaves. One daemon thread, started with the first callback, sleeps until the next entry is due and
hands it to a small pool of senders, so a slow receiver delays nobody else. A callback is one POST of JSON; a
2xx answer counts as ``sent``, anything else (or no connection) as ``failed``, with no retry: the upstreams'
retry policies are unverified, so a client must survive lost callbacks — the knobs (``callbacks`` of each
dialect) drop or double them on purpose. ``reset`` forgets the callbacks not yet due.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from emulator.knobs import CallbackKnobs, Knobs

log = logging.getLogger(__name__)

#: the longest the sender thread sleeps before it looks at the clock again (an injected clock may jump)
_MAX_SLEEP_S = 0.5
_TIMEOUT = httpx.Timeout(5.0, connect=2.0)

Payload = Callable[[], dict[str, Any]]
#: extra headers for a body (a signature, say)
Signer = Callable[[bytes], dict[str, str]]


@dataclass(order=True, frozen=True, slots=True)
class Callback:
    at: float
    seq: int
    url: str = field(compare=False)
    payload: Payload = field(compare=False)
    sign: Signer | None = field(default=None, compare=False)


class CallbackSender:
    """Due callbacks, one sender thread (started on first use) and a pool that POSTs them."""

    def __init__(
        self,
        knobs: Knobs,
        *,
        clock: Callable[[], float] = time.time,
        http: httpx.Client | None = None,
        senders: int = 8,
        background: bool = True,
    ) -> None:
        self.knobs = knobs
        self.clock = clock
        self.http = http or httpx.Client(timeout=_TIMEOUT, trust_env=False, follow_redirects=False)
        self._senders = senders
        self._heap: list[Callback] = []
        self._seq = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        #: False: no thread; the owner calls ``take_due`` and ``send`` (tests)
        self._background = background
        self._closed = False

    def schedule(
        self, url: str, at: float, payload: Payload, *, knobs: CallbackKnobs, sign: Signer | None = None
    ) -> None:
        """Send ``payload()`` to ``url`` at ``at`` (+ ``knobs.delay_s``), unless the knobs drop it; maybe twice."""
        if not knobs.enabled:
            return
        with self._wake:
            stats = self.knobs.stats.callbacks
            stats.scheduled += 1
            if self.knobs.chance(knobs.drop_rate):
                stats.dropped += 1
                return
            copies = 2 if self.knobs.chance(knobs.duplicate_rate) else 1
            stats.duplicated += copies - 1
            for _ in range(copies):
                heapq.heappush(self._heap, Callback(at + knobs.delay_s, next(self._seq), url, payload, sign))
            self._start()
            self._wake.notify()

    def pending(self) -> int:
        with self._wake:
            return len(self._heap)

    def take_due(self, now: float) -> list[Callback]:
        """Remove and return the callbacks due at ``now``, earliest first."""
        due = []
        with self._wake:
            while self._heap and self._heap[0].at <= now:
                due.append(heapq.heappop(self._heap))
        return due

    def send(self, callback: Callback) -> bool:
        """POST one callback now; True when the receiver answered 2xx."""
        stats = self.knobs.stats.callbacks
        body = json.dumps(callback.payload(), separators=(",", ":")).encode()
        headers = {"content-type": "application/json; charset=utf-8"}
        if callback.sign is not None:
            headers |= callback.sign(body)
        try:
            ok = self.http.post(callback.url, content=body, headers=headers).is_success
        except httpx.HTTPError as exc:
            log.info("callback to %s failed: %s", callback.url, exc)
            ok = False
        with self._wake:
            if ok:
                stats.sent += 1
            else:
                stats.failed += 1
        return ok

    def clear(self) -> None:
        with self._wake:
            self._heap.clear()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._heap.clear()
            self._wake.notify()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _start(self) -> None:
        """Start the sender thread and pool once (called with ``_wake`` held)."""
        if self._thread is not None or self._closed or not self._background:
            return
        self._pool = ThreadPoolExecutor(max_workers=self._senders, thread_name_prefix="emulator-callback")
        self._thread = threading.Thread(target=self._run, name="emulator-callbacks", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._wake:
                if self._closed:
                    return
                wait = self._heap[0].at - self.clock() if self._heap else _MAX_SLEEP_S
                if wait > 0:
                    self._wake.wait(min(wait, _MAX_SLEEP_S))
                    continue
            assert self._pool is not None
            for callback in self.take_due(self.clock()):
                try:
                    self._pool.submit(self.send, callback)
                except RuntimeError:  # closed meanwhile
                    return
