"""Helpers for tests that run real processes: free ports, readiness waits, env for our processes."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from shared.webhook_secrets import derived_secret

REPO = Path(__file__).resolve().parent.parent
API_KEY = "sk-test-" + "a" * 24
OTHER_API_KEY = "sk-test-" + "b" * 24
SIGNING_KEY = "test-signing-key-" + "c" * 16
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def tenant_webhook_secret(api_key: str = API_KEY) -> str:
    """The secret webhooks of ``api_key``'s jobs are signed with (bootstrap keys: derived per tenant)."""
    owner = hashlib.sha256(api_key.encode()).hexdigest()[:32]
    return derived_secret(WEBHOOK_SECRET, owner)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.1, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what or predicate}")


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


def base_env(*, redis_url: str, database_url: str, files_dir: Path, emulator_url: str, **extra: str) -> dict[str, str]:
    """The environment our processes run with in tests (short sweeper timings)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("IMAGEJOBS_", "FLOWER_"))}
    env.update(
        {
            "IMAGEJOBS_API_KEYS": f"{API_KEY},{OTHER_API_KEY}",
            "IMAGEJOBS_SIGNING_KEY": SIGNING_KEY,
            "IMAGEJOBS_WEBHOOKS__SECRET": WEBHOOK_SECRET,
            "IMAGEJOBS_WEBHOOKS__RETRY_DELAYS_S": "[0.5, 1, 2]",
            "IMAGEJOBS_REDIS_URL": redis_url,
            "IMAGEJOBS_DATABASE_URL": database_url,
            "IMAGEJOBS_FILES_DIR": str(files_dir),
            "IMAGEJOBS_EMULATOR_URL": emulator_url,
            "IMAGEJOBS_SWEEPER__INTERVAL_S": "1",
            "IMAGEJOBS_SWEEPER__REQUEUE_AFTER_S": "3",
            "IMAGEJOBS_SWEEPER__POLL_OVERDUE_S": "3",
            "IMAGEJOBS_SWEEPER__WEBHOOK_STALE_S": "5",
            "IMAGEJOBS_SWEEPER__SUBMIT_LEASE_S": "10",
            "IMAGEJOBS_CELERY__VISIBILITY_TIMEOUT_S": "600",
            # local webhook receivers and emulator-served input images live on loopback
            "IMAGEJOBS_EGRESS__ALLOW_NETWORKS": '["127.0.0.0/8"]',
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


class Process:
    """A child process with its output in a log file; killed (whole group) on stop."""

    def __init__(
        self, name: str, command: list[str], *, env: Mapping[str, str], log_dir: Path, cwd: Path = REPO
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            command, cwd=cwd, env=dict(env), stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self, sig: int = 9) -> None:
        if self.alive():
            os.killpg(self.popen.pid, sig)
            self.popen.wait(timeout=30)

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.popen.pid, 15)
            try:
                self.popen.wait(timeout=25)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def python_command(*args: str) -> list[str]:
    return [sys.executable, *args]


def celery_worker_command(concurrency: int = 8) -> list[str]:
    return python_command(
        "-m",
        "celery",
        "-A",
        "worker.app",
        "worker",
        "--pool",
        "threads",
        "--concurrency",
        str(concurrency),
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
    )


def celery_beat_command(schedule: Path) -> list[str]:
    return python_command("-m", "celery", "-A", "worker.app", "beat", "--schedule", str(schedule), "--loglevel", "INFO")


def api_command(port: int) -> list[str]:
    return python_command(
        "-m",
        "uvicorn",
        "--factory",
        "producer.http.app:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    )


def emulator_command(port: int) -> list[str]:
    return python_command("-m", "emulator", "--host", "127.0.0.1", "--port", str(port))


def queue_keys(redis: Any, queue: str) -> list[bytes]:
    """The Redis lists holding ``queue``'s messages: one per provider (``submit.kling``) and priority step
    (kombu names them ``<queue>`` and ``<queue>\\x06\\x16<step>``)."""
    return [key for key in redis.scan_iter(match=f"{queue}*") if redis.type(key) == b"list"]


def queued_count(redis: Any, queue: str) -> int:
    return sum(int(redis.llen(key)) for key in queue_keys(redis, queue))


def queued_raw(redis: Any, queue: str) -> list[bytes]:
    return [raw for key in queue_keys(redis, queue) for raw in redis.lrange(key, 0, -1)]
