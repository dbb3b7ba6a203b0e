"""Each worker's own metrics port, and its channel-health gauges read from the capacity state at scrape time.

The worker's pool threads share the default registry; ``start_http_server`` serves it from a daemon thread
(https://prometheus.github.io/client_python/exporting/http/).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from prometheus_client import start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector
from redis import RedisError

from shared.config import Settings
from worker.capacity import Capacity
from worker.capacity.channels import channels_of
from worker.capacity.limits import UpstreamLimits

log = logging.getLogger(__name__)


class ChannelHealth(Collector):
    """``imagejobs_channel_resting_seconds``, ``imagejobs_channel_slots_in_use`` and ``imagejobs_channel_tokens``
    (rate-limited channels only) per provider and channel."""

    def __init__(self, capacity: Callable[[], Capacity], settings: Settings) -> None:
        self._capacity = capacity
        self._settings = settings

    def collect(self) -> Iterable[Metric]:
        resting = GaugeMetricFamily(
            "imagejobs_channel_resting_seconds", "How long a channel still rests after failures (0: serving)",
            labels=["provider", "channel"],
        )  # fmt: skip
        slots = GaugeMetricFamily(
            "imagejobs_channel_slots_in_use", "Concurrency slots held on a channel", labels=["provider", "channel"]
        )
        tokens = GaugeMetricFamily(
            "imagejobs_channel_tokens",
            "Request tokens in a rate-limited channel's bucket",
            labels=["provider", "channel"],
        )
        capacity = self._capacity()
        try:
            for provider, section in self._settings.provider_sections().items():
                if section.mode == "disabled":
                    continue
                channels = channels_of(self._settings, provider)
                rests = capacity.health.resting(provider, [channel.name for channel in channels])
                for channel in channels:
                    name, rest = channel.name, rests.get(channel.name)
                    resting.add_metric([provider, name], rest.remaining_s if rest is not None else 0.0)
                    if isinstance(capacity.limits, UpstreamLimits):
                        slots.add_metric([provider, name], sum(capacity.limits.holders(provider, name).values()))
                        left = capacity.limits.tokens(provider, name, limits=channel.limits)
                        if left is not None:
                            tokens.add_metric([provider, name], left)
        except RedisError:  # a scrape during a Redis outage shows no channel series
            return
        yield resting
        yield slots
        yield tokens


def serve_metrics(port: int, *, capacity: Callable[[], Capacity], settings: Settings) -> None:
    REGISTRY.register(ChannelHealth(capacity, settings))
    start_http_server(port)
    log.info("metrics on port %d", port)
