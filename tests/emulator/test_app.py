"""Composition: routing of the shared ``POST /v1/images/generations``, prefixed routes, CLI defaults."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from emulator.__main__ import parse_args


def test_shared_path_routes_by_credentials(
    client: TestClient, kling_headers: dict[str, str], openai_headers: dict[str, str]
) -> None:
    kling = client.post("/v1/images/generations", json={"prompt": "x"}, headers=kling_headers).json()
    openai = client.post("/v1/images/generations", json={"prompt": "x"}, headers=openai_headers).json()
    assert kling["code"] == 0 and "task_id" in kling["data"]
    assert "created" in openai and "data" in openai


def test_shared_path_without_credentials_uses_the_body_shape(client: TestClient) -> None:
    kling = client.post("/v1/images/generations", json={"prompt": "x", "model_name": "kling-v1"})
    openai = client.post("/v1/images/generations", json={"prompt": "x", "model": "gpt-image-1"})
    assert (kling.status_code, kling.json()["code"]) == (401, 1001)
    assert (openai.status_code, openai.json()["error"]["code"]) == (401, "invalid_api_key")


def test_prefixed_routes_are_unambiguous(
    client: TestClient, kling_headers: dict[str, str], openai_headers: dict[str, str]
) -> None:
    wrong_for_kling = client.post("/kling/v1/images/generations", json={"prompt": "x"}, headers=openai_headers)
    assert wrong_for_kling.json()["code"] == 1002
    created = client.post("/kling/v1/images/generations", json={"prompt": "x"}, headers=kling_headers).json()
    task_id = created["data"]["task_id"]
    assert client.get(f"/kling/v1/images/generations/{task_id}", headers=kling_headers).json()["code"] == 0
    wrong_for_openai = client.post("/openai/v1/images/generations", json={"prompt": "x"}, headers=kling_headers)
    assert wrong_for_openai.json()["error"]["code"] == "invalid_api_key"


def test_cli_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMULATOR_HOST", raising=False)
    monkeypatch.delenv("EMULATOR_PORT", raising=False)
    args = parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", 9100)
    monkeypatch.setenv("EMULATOR_HOST", "0.0.0.0")
    monkeypatch.setenv("EMULATOR_PORT", "9200")
    assert (parse_args([]).host, parse_args([]).port) == ("0.0.0.0", 9200)
    assert parse_args(["--port", "9300"]).port == 9300
