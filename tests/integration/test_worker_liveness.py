"""The worker's liveness probe fails while the worker cannot consume, and passes again once it can.

A real worker against a redis-server of this test's own: the probe (``python -m worker.liveness``, what the
compose healthcheck and the Kubernetes probes run) passes while the consumer runs, fails once the broker is
gone (Celery stops the consumer's steps, the heartbeat file is removed), and passes again after the worker
reconnected to the restarted broker.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devstack.services import start_private_redis
from tests.integration.harness import Emulator, processes_factory
from tests.support import REPO, free_port, python_command, wait_until

pytestmark = pytest.mark.integration


def probe(path: Path) -> subprocess.CompletedProcess[str]:
    command = python_command("-m", "worker.liveness", str(path), "--max-age", "15")
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=30, check=False)


def test_the_probe_follows_whether_the_worker_can_consume(
    tmp_path: Path, sqlite_url: str, files_dir: Path, emulator: Emulator
) -> None:
    heartbeat = tmp_path / "worker-heartbeat"
    port = free_port()
    redis = start_private_redis(tmp_path / "redis", port=port, appendonly=False)
    redis_url = f"redis://127.0.0.1:{port}/0"
    try:
        with processes_factory(tmp_path, redis_url=redis_url, files_dir=files_dir, emulator=emulator) as make:
            stack = make(sqlite_url, IMAGEJOBS_CELERY__HEARTBEAT_FILE=str(heartbeat))
            assert probe(heartbeat).returncode == 1  # before the worker runs: no file, no pass
            worker = stack.worker(concurrency=2)

            wait_until(lambda: probe(heartbeat).returncode == 0, timeout_s=60, interval_s=1, what="a live worker")
            first_touch = heartbeat.stat().st_mtime
            wait_until(lambda: heartbeat.stat().st_mtime > first_touch, timeout_s=20, what="a second heartbeat")

            redis.terminate()
            redis.wait(timeout=10)
            wait_until(lambda: probe(heartbeat).returncode == 1, timeout_s=60, interval_s=1, what="a failing probe")
            failed = probe(heartbeat)
            assert "not running" in failed.stderr or "stuck" in failed.stderr, failed.stderr
            assert worker.alive()  # the process is up, yet it cannot consume: exactly what the probe must catch

            redis = start_private_redis(tmp_path / "redis", port=port, appendonly=False)
            wait_until(lambda: probe(heartbeat).returncode == 0, timeout_s=90, interval_s=1, what="a recovered worker")
    finally:
        redis.terminate()
        redis.wait(timeout=10)
