"""A work-around for kombu's Redis transport, so a worker survives a Redis restart (found by tests/chaos R4).

With celery 5.7.0 / kombu 5.7.0, when the broker connection drops while a BRPOP is in flight and the worker
holds unacked messages (countdown polls), the consumer's clean-up runs ``Connection.collect()`` (its channel
close stops at the broken BRPOP, but the transport is detached: ``transport.client = None``) and then
``Connection.close()``, which closes that channel again; this time it tries to restore the unacked messages,
builds a connection pool from ``transport.client`` and fails with ``AttributeError: 'NoneType' object has no
attribute 'hostname'``. That is not a connection error, so Celery logs "Unrecoverable error" and the worker
stops for good instead of reconnecting.

The patch makes that case a connection error (``redis.exceptions.ConnectionError``), which kombu ignores while
closing and Celery answers by reconnecting. Nothing is lost: the unacked messages stay in Redis's ``unacked``
hash and come back after ``visibility_timeout``; sooner, the sweeper re-sends every job from its row.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

_PATCHED = "_imagejobs_detached_transport_is_a_connection_error"


def apply() -> None:
    """Patch ``kombu.transport.redis.Channel._connparams`` once per process (idempotent)."""
    channel: Any = kombu_redis.Channel
    if getattr(channel, _PATCHED, False):
        return
    original = channel._connparams

    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        if self.connection is None or self.connection.client is None:
            raise RedisConnectionError("the broker connection is closed (transport detached)")
        return original(self, asynchronous=asynchronous)

    channel._connparams = _connparams
    setattr(channel, _PATCHED, True)
