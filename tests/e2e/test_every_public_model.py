"""One job per public model name through the HTTP API and the whole stack: each ends ``succeeded`` with real
images and the catalog's cost.

All jobs are submitted at once (async) by a module fixture and awaited together, so async upstreams with a
first poll after a few seconds don't add up; each model is then its own test.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
from PIL import Image

from shared.catalog import load_catalog, validate_request
from shared.db.migrate import upgrade
from shared.errors import InvalidRequestError
from shared.jobs import ImageRequest
from tests.integration.harness import Rows
from tests.support import (
    API_KEY,
    Process,
    api_command,
    base_env,
    celery_worker_command,
    free_port,
    http_ok,
    wait_until,
)

# one xdist worker runs the module: the stack and the jobs of every model (a module fixture) run once
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("every-public-model")]

CATALOG = load_catalog()
TERMINAL = {"succeeded", "failed", "timed_out", "cancelled"}


def _png_data_uri(size: int = 320) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), "teal").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


IMAGE = _png_data_uri()


def _fill(param: str, request: dict[str, Any]) -> None:
    """Give ``param`` a valid value for ``request['model']`` (what a minimal real request would send)."""
    entry = CATALOG.models[request["model"]]
    rule = entry.params.get(param)
    if param == "model_name":
        request[param] = next(iter(entry.variants))
    elif param == "subject_image_list":
        request[param] = [{"subject_image": IMAGE}, {"subject_image": IMAGE}]
    elif param == "image_list":
        request[param] = [{"image": IMAGE}]
    elif param in ("image_urls", "images"):
        request[param] = [IMAGE, IMAGE]
    elif param.endswith("_expansion_ratio"):
        for side in ("up", "down", "left", "right"):
            request[f"{side}_expansion_ratio"] = 0.2
    elif rule is not None and rule.choices:
        request[param] = rule.choices[0]
    elif (rule is not None and rule.type == "image") or param.endswith("_image") or param in ("image", "image_url"):
        request[param] = IMAGE
    elif param == "prompt":
        request[param] = "a lighthouse at dusk"
    else:
        raise AssertionError(f"don't know how to fill {param!r} for {request['model']}")


def minimal_request(model: str) -> dict[str, Any]:
    """The smallest request the catalog accepts for ``model`` (prompt plus what it requires)."""
    request: dict[str, Any] = {"model": model}
    if "prompt" in CATALOG.models[model].params:
        request["prompt"] = "a lighthouse at dusk"
    for _ in range(8):
        try:
            validate_request(ImageRequest.model_validate(request), catalog=CATALOG)
            return request
        except InvalidRequestError as exc:
            assert exc.param is not None, exc.message
            _fill(exc.param, request)
    raise AssertionError(f"could not build a valid request for {model}: {request}")


@dataclass
class Outcome:
    request: dict[str, Any]
    task: dict[str, Any]
    images: list[bytes]


@pytest.fixture(scope="module")
def outcomes(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, emulator_url: str
) -> Iterator[dict[str, Outcome]]:
    # Given the whole stack on a fresh database, with every upstream answering quickly
    root = tmp_path_factory.mktemp("every-model")
    database_url = f"sqlite:///{root / 'imagejobs.db'}"
    upgrade(database_url)
    quick = {"latency": {"kind": "fixed", "value_s": 0.2}}
    config = httpx.get(f"{emulator_url}/_emulator/config").json()
    httpx.post(f"{emulator_url}/_emulator/reset").raise_for_status()
    providers = [name for name, knobs in config.items() if isinstance(knobs, dict) and "latency" in knobs]
    httpx.put(f"{emulator_url}/_emulator/config", json=dict.fromkeys(providers, quick)).raise_for_status()
    port = free_port()
    env = base_env(
        redis_url=redis_url.rsplit("/", 1)[0] + "/13",
        database_url=database_url,
        files_dir=root / "files",
        emulator_url=emulator_url,
        IMAGEJOBS_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
    )
    processes = [
        Process("worker", celery_worker_command(16), env=env, log_dir=root),
        Process("api", api_command(port), env=env, log_dir=root),
    ]
    api = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {API_KEY}"}
    try:
        wait_until(lambda: http_ok(f"{api}/healthz"), timeout_s=30, what="the API")
        # When one async job per public model is submitted
        submitted: dict[str, tuple[dict[str, Any], str]] = {}
        for model in CATALOG.names():
            request = {**minimal_request(model), "async": True}
            answer = httpx.post(f"{api}/v1/images/generations", json=request, headers=headers, timeout=30)
            assert answer.status_code == 202, (model, answer.text)
            submitted[model] = (request, answer.json()["id"])
        rows = Rows(database_url)
        job_ids = [job_id for _, job_id in submitted.values()]
        try:
            wait_until(
                lambda: all(status in TERMINAL for status in rows.statuses(job_ids).values()),
                timeout_s=120,
                interval_s=0.5,
                what="every model's job",
            )
        finally:
            rows.close()
        results = {}
        for model, (request, job_id) in submitted.items():
            task = httpx.get(f"{api}/v1/images/generations/{job_id}", headers=headers, timeout=30).json()
            images = [httpx.get(item["url"], timeout=30).content for item in task.get("data", [])]
            results[model] = Outcome(request=request, task=task, images=images)
        yield results
    finally:
        for process in processes:
            process.stop()
        if os.environ.get("IMAGEJOBS_TEST_KEEP_LOGS"):
            print(*(process.output()[-3000:] for process in processes), sep="\n")


@pytest.mark.parametrize("model", CATALOG.names())
def test_public_model_succeeds_with_real_images_and_the_catalog_cost(model: str, outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes[model]
    task = outcome.task

    assert task["status"] == "succeeded", task.get("error")
    assert outcome.images, "no images"
    for data in outcome.images:
        with Image.open(io.BytesIO(data)) as picture:
            assert picture.format in ("PNG", "JPEG", "WEBP")
            assert picture.width > 0 and picture.height > 0
    validated = validate_request(ImageRequest.model_validate(outcome.request), catalog=CATALOG)
    assert task["cost"]["currency"] == validated.price.currency
    if validated.price.usage is not None:  # the upstream reports the tokens it billed: the cost comes from them
        assert task["cost"]["basis"] == "usage"
        assert task["usage"]["output_tokens"] > 0
        expected = validated.price.usage.cost(task["usage"])
        estimate = validated.price.cost(images_delivered=len(outcome.images))
        assert Decimal(task["cost"]["inputs"]["estimate"]) == estimate
    else:
        assert task["cost"]["basis"] == ("per_request" if validated.price.per == "request" else "per_image")
        expected = validated.price.cost(images_delivered=len(outcome.images))
    assert Decimal(task["cost"]["amount"]) == expected
