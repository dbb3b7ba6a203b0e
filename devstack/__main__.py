"""The local development stack behind ``make run`` and ``make test`` (not product code: a user's deployment is
``deploy/``): ``python -m devstack run`` starts every Procfile process on 127.0.0.1 with the emulator, ``python -m
devstack prepare`` only makes sure Redis answers, secrets exist and the database is migrated."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from devstack import services


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("action", choices=["run", "prepare"])
    args = parser.parse_args(argv)
    if args.action == "run":
        return run_local_stack()
    prepare_local_stack()
    return 0


def prepare_local_stack() -> dict[str, str]:
    """Redis, secrets, migrations; returns the environment the processes run with."""
    env = dict(os.environ)
    env.update(services.ensure_local_secrets(env))
    env["IMAGEJOBS_REDIS_URL"] = services.ensure_redis(env)
    env.setdefault("IMAGEJOBS_DATABASE_URL", "sqlite:///var/imagejobs.db")
    # Procfile commands (uvicorn, celery, python) must come from this environment
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    subprocess.run([sys.executable, "-m", "producer.cli", "migrate"], env=env, check=True)
    return env


def run_local_stack() -> int:
    env = prepare_local_stack()
    api = f"http://127.0.0.1:{env.setdefault('IMAGEJOBS_API_PORT', '8000')}"
    flower = f"http://127.0.0.1:{env.setdefault('IMAGEJOBS_FLOWER_PORT', '5555')}"
    emulator = f"http://127.0.0.1:{env.setdefault('IMAGEJOBS_EMULATOR_PORT', '9100')}"
    env.setdefault("IMAGEJOBS_PUBLIC_BASE_URL", api)
    env.setdefault("IMAGEJOBS_EMULATOR_URL", emulator)
    # the quick start's webhook receiver demo runs on this machine: allow loopback callbacks here only
    env.setdefault("IMAGEJOBS_EGRESS__ALLOW_NETWORKS", '["127.0.0.0/8"]')
    env.setdefault("IMAGEJOBS_LOG_FORMAT", "console")  # people read these logs; production keeps JSON lines
    # the emulator can reach the API here, so async upstreams call back instead of being polled
    env.setdefault("IMAGEJOBS_CALLBACKS__ENABLED", "true")
    env.setdefault("IMAGEJOBS_FLOWER_USER", "admin")
    env["FLOWER_BASIC_AUTH"] = f"{env['IMAGEJOBS_FLOWER_USER']}:{env['IMAGEJOBS_FLOWER_PASSWORD']}"
    honcho = subprocess.Popen([sys.executable, "-m", "honcho", "start", "-f", "Procfile"], env=env)
    try:
        if _wait_healthy(f"{api}/healthz", honcho):
            _print_banner(env, api=api, flower=flower, emulator=emulator)
        return honcho.wait()
    except KeyboardInterrupt:
        return honcho.wait()


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False


def _print_banner(env: dict[str, str], *, api: str, flower: str, emulator: str) -> None:
    key = env["IMAGEJOBS_API_KEYS"].split(",")[0]
    body = '{"model": "kling-image", "model_name": "kling-v2-1", "prompt": "a lighthouse at dusk"}'
    print(
        f"""
imagejobs is up
  API       {api}   (docs: {api}/docs)
  Console   {api}/ui   (sign in with the API key below)
  Flower    {flower}   (user {env["IMAGEJOBS_FLOWER_USER"]}, password {env["IMAGEJOBS_FLOWER_PASSWORD"]})
  Emulator  {emulator}   (stands in for every provider without real credentials)
  API key   {key}

Try it:
  curl -s {api}/v1/images/generations -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{body}'
""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
