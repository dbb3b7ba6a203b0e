"""Two work-arounds for kombu's Redis transport: a worker survives a Redis restart (found by tests/chaos R4),
and a publish or an ack does not build a new Redis client object (found by profiling the poll step).

**Restart.**
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

**One client per channel.** kombu 5.7.0's ``Channel.conn_or_acquire`` makes a new ``redis.Redis`` for every
publish and every ack bookkeeping step; with redis-py 8 each one copies its ~170 response callbacks into a
case-insensitive dict, about a tenth of a poll step's CPU. The patch keeps one client per channel and connection
pool (a ``redis.Redis`` is thread-safe: each command takes a connection from the shared pool,
https://redis.readthedocs.io/en/stable/advanced_features.html#thread-safety) and makes a new one when kombu
replaces the pool after a reconnect.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

_PATCHED = "_imagejobs_detached_transport_is_a_connection_error"


def apply() -> None:
    """Patch ``kombu.transport.redis.Channel`` once per process (idempotent)."""
    channel: Any = kombu_redis.Channel
    if getattr(channel, _PATCHED, False):
        return
    _reuse_one_client_per_channel(channel)
    original = channel._connparams

    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        if self.connection is None or self.connection.client is None:
            raise RedisConnectionError("the broker connection is closed (transport detached)")
        return original(self, asynchronous=asynchronous)

    channel._connparams = _connparams
    setattr(channel, _PATCHED, True)


def _reuse_one_client_per_channel(channel: Any) -> None:
    create = channel._create_client

    @contextmanager
    def conn_or_acquire(self: Any, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        cached = self.__dict__.get(_CLIENT)
        if cached is None or cached.connection_pool is not self.pool:
            cached = create(self)
            self.__dict__[_CLIENT] = cached
        yield cached

    channel.conn_or_acquire = conn_or_acquire


_CLIENT = "_imagejobs_sync_client"
