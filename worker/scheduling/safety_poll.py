"""The sparse safety poll of a job whose upstream was given our callback URL.

The callback is the fast path: it makes a worker poll at once (``producer/http/callbacks_routes.py``). Polling
stays as the fallback for a callback that never comes (R16), but sparse: the first poll after
``callbacks.safety_first_poll_s`` (or the catalog's first poll, if later), then every
``callbacks.safety_interval_s``, with the catalog's jitter and deadline. It is a ``PollingPolicy``, so the poll
chain's maths (``worker.scheduling.polling``) is the same for both.
"""

from __future__ import annotations

from shared.catalog import PollingPolicy
from shared.config import Settings
from shared.upstream_callbacks import callbacks_enabled


def policy_for(policy: PollingPolicy, *, provider: str, settings: Settings) -> PollingPolicy:
    """``policy`` itself, or its sparse safety version when ``provider``'s jobs are given our callback URL.

    Applied last (after a learned latency profile): the safety poll has no usual window, only a fixed interval.
    """
    if not callbacks_enabled(settings, provider):
        return policy
    section = settings.callbacks
    interval = section.safety_interval_s
    first = max(section.safety_first_poll_s, policy.first_poll_s)
    sparse = {"first_poll_s": first, "usual_window_s": None, "base_s": interval, "factor": 1.0, "max_s": interval}
    return policy.model_copy(update=sparse)
