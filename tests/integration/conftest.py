"""Fixtures for the integration layer (defined in ``tests.integration.harness``, shared with e2e)."""

from tests.integration.harness import (
    emulator,
    files_dir,
    isolated_redis_url,
    processes,
    rows_for,
    webhook_receiver,
)

__all__ = ["emulator", "files_dir", "isolated_redis_url", "processes", "rows_for", "webhook_receiver"]
