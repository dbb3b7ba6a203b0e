"""Fixtures for the integration layer (defined in ``tests.integration.harness``, shared with e2e); the unit layer's
pipeline harness too, for pipeline steps over a real S3 server."""

from tests.integration.harness import (
    emulator,
    files_dir,
    isolated_redis_url,
    processes,
    rows_for,
    webhook_receiver,
)
from tests.unit.conftest import make_harness

__all__ = ["emulator", "files_dir", "isolated_redis_url", "make_harness", "processes", "rows_for", "webhook_receiver"]
