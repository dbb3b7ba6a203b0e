"""Fixtures for the scale-out proof (the integration harness's, reused)."""

from tests.integration.harness import emulator, isolated_redis_url, rows_for, webhook_receiver

__all__ = ["emulator", "isolated_redis_url", "rows_for", "webhook_receiver"]
