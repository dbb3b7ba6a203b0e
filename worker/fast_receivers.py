"""Which webhook receivers answer fast: those get the next webhook inline, from the task that ended the job.

A delivery from the webhook task costs a broker round trip and a second task; a receiver whose last attempt was a
2xx within ``FAST_MS`` is sent the next one directly by the submit or poll task that ended the job (the same
attempt, claim and retry schedule as the webhook task's). A receiver not seen yet, or slow, or failing, goes
through the webhook task, so a slow receiver never holds a submit or poll worker for long twice in a row.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Final

#: a 2xx within this many milliseconds makes a receiver "fast"
FAST_MS: Final = 250
#: receivers remembered per worker process (least recently used ones are forgotten)
MAX_RECEIVERS: Final = 4096


class FastReceivers:
    """Per-process memory of receivers' last attempt (thread-safe for the threads pool)."""

    def __init__(self, *, max_entries: int = MAX_RECEIVERS) -> None:
        self._fast: OrderedDict[str, bool] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def is_fast(self, url: str) -> bool:
        with self._lock:
            return self._fast.get(url, False)

    def note(self, url: str, *, delivered: bool, latency_ms: int) -> None:
        with self._lock:
            self._fast[url] = delivered and latency_ms <= FAST_MS
            self._fast.move_to_end(url)
            while len(self._fast) > self._max:
                self._fast.popitem(last=False)
