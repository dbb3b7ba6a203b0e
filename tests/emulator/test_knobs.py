"""Scenario knobs: config GET/PUT/merge/validation, reset, stats, latency sampling and markers."""

from __future__ import annotations

import random
import statistics

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from emulator.knobs import EmulatorConfig, LognormalLatency, UniformLatency, merge_patch, sample_latency
from emulator.markers import parse_markers


def test_config_defaults_are_a_few_seconds(app: FastAPI) -> None:
    with TestClient(app) as client:
        config = client.get("/_emulator/config").json()
    assert config["kling"]["latency"] == {"kind": "uniform", "low_s": 2.0, "high_s": 4.0}
    assert config["openai"]["latency"] == {"kind": "uniform", "low_s": 0.5, "high_s": 1.5}
    assert config["image_long_side"] == 256
    assert config["status_latency_s"] == 0.0
    assert config["kling"]["failure_rate"] == config["openai"]["error_rate"] == 0.0


def test_put_config_deep_merges_and_returns_the_whole_config(client: TestClient) -> None:
    response = client.put(
        "/_emulator/config",
        json={"kling": {"latency": {"kind": "lognormal", "median_s": 20, "p95_s": 60}, "failure_rate": 0.1}},
    )
    assert response.status_code == 200
    config = response.json()
    assert config["kling"]["latency"] == {"kind": "lognormal", "median_s": 20.0, "p95_s": 60.0}
    assert config["kling"]["failure_rate"] == 0.1
    assert config["openai"]["latency"] == {"kind": "fixed", "value_s": 0.0}  # untouched
    # A latency patch without `kind` merges into the current latency object.
    config = client.put("/_emulator/config", json={"kling": {"latency": {"p95_s": 90}}}).json()
    assert config["kling"]["latency"] == {"kind": "lognormal", "median_s": 20.0, "p95_s": 90.0}
    assert client.get("/_emulator/config").json() == config


@pytest.mark.parametrize(
    "patch",
    [
        pytest.param({"kling": {"failure_rate": 1.5}}, id="rate-above-1"),
        pytest.param({"openai": {"rate_limit_rate": -0.1}}, id="rate-below-0"),
        pytest.param({"kling": {"latency": {"kind": "uniform", "low_s": 3, "high_s": 1}}}, id="uniform-reversed"),
        pytest.param({"kling": {"latency": {"kind": "lognormal", "median_s": 0, "p95_s": 1}}}, id="median-zero"),
        pytest.param({"kling": {"latency": {"kind": "gaussian"}}}, id="unknown-kind"),
        pytest.param({"openai": {"latency": {"kind": "fixed", "value_s": -1}}}, id="negative-latency"),
        pytest.param({"kling": {"typo_rate": 0.5}}, id="unknown-key"),
        pytest.param({"image_long_side": 4}, id="tiny-images"),
        pytest.param({"kling": {"concurrency_limit": 0}}, id="zero-concurrency"),
        pytest.param([1, 2], id="not-an-object"),
    ],
)
def test_put_config_rejects_invalid_values_and_keeps_the_old_config(client: TestClient, patch: object) -> None:
    before = client.get("/_emulator/config").json()
    response = client.put("/_emulator/config", json=patch)
    assert response.status_code == 422
    assert "detail" in response.json()
    assert client.get("/_emulator/config").json() == before


def test_reset_restores_defaults_and_clears_tasks_and_stats(
    client: TestClient, kling_headers: dict[str, str], openai_headers: dict[str, str]
) -> None:
    submitted = client.post("/v1/images/generations", json={"prompt": "cat"}, headers=kling_headers).json()
    client.post("/v1/images/generations", json={"prompt": "dog"}, headers={"Authorization": "Bearer wrong"})
    stats = client.get("/_emulator/stats").json()
    assert stats["kling"] == {"submits": 1, "queries": 0, "rejected": 0}
    assert stats["openai"] == {"requests": 1, "rejected": 1}

    assert client.post("/_emulator/reset").status_code == 200

    assert client.get("/_emulator/config").json() == EmulatorConfig().model_dump(mode="json")
    task_id = submitted["data"]["task_id"]
    assert client.get(f"/v1/images/generations/{task_id}", headers=kling_headers).status_code == 404
    assert client.get("/_emulator/stats").json()["kling"] == {"submits": 0, "queries": 1, "rejected": 1}


def test_health(client: TestClient) -> None:
    assert client.get("/_emulator/health").json() == {"ok": True}


def test_sample_latency_follows_the_distributions() -> None:
    rng = random.Random(7)
    uniform = [sample_latency(UniformLatency(low_s=1, high_s=2), rng) for _ in range(500)]
    assert min(uniform) >= 1 and max(uniform) <= 2
    lognormal = sorted(sample_latency(LognormalLatency(median_s=20, p95_s=60), rng) for _ in range(4000))
    assert statistics.median(lognormal) == pytest.approx(20, rel=0.1)
    assert lognormal[int(0.95 * len(lognormal))] == pytest.approx(60, rel=0.15)


def test_merge_patch_replaces_objects_that_name_a_kind() -> None:
    base = {"a": {"latency": {"kind": "uniform", "low_s": 1, "high_s": 2}, "rate": 0}, "b": 1}
    merged = merge_patch(base, {"a": {"latency": {"kind": "fixed", "value_s": 3}}})
    assert merged == {"a": {"latency": {"kind": "fixed", "value_s": 3}, "rate": 0}, "b": 1}
    assert base["a"]["latency"]["kind"] == "uniform"  # type: ignore[index]


def test_parse_markers_reads_every_marker() -> None:
    markers = parse_markers("a [FAIL] cat [moderated-async] [429] [quota] [500] [garbage] [hang] [latency=0.25]")
    assert markers.fail and markers.moderated_async and markers.rate_limited and markers.quota
    assert markers.server_error and markers.garbage and markers.hang
    assert not markers.moderated
    assert markers.latency_s == 0.25
    assert parse_markers("[moderated] [latency=abc]").moderated
    assert parse_markers("[latency=-1] [latency=nan]").latency_s is None
    assert parse_markers("plain prompt") == parse_markers("")
