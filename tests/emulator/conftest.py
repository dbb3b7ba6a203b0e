"""Fixtures: a fresh emulator per test, with zero generation latency and known credentials."""

from __future__ import annotations

import base64
import io
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from emulator.app import create_app

ACCESS_KEY = "test-ak"
SECRET_KEY = "test-sk"
OPENAI_KEY = "test-openai-key"

TokenFactory = Callable[..., str]


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    monkeypatch.setenv("EMULATOR_KLING_ACCESS_KEY", ACCESS_KEY)
    monkeypatch.setenv("EMULATOR_KLING_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("EMULATOR_OPENAI_API_KEY", OPENAI_KEY)
    return create_app()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        zero = {"latency": {"kind": "fixed", "value_s": 0}}
        response = test_client.put("/_emulator/config", json={"kling": zero, "openai": zero})
        assert response.status_code == 200
        yield test_client


@pytest.fixture
def make_token() -> TokenFactory:
    def make(
        *, iss: str = ACCESS_KEY, secret: str = SECRET_KEY, exp_in: float = 1800, nbf_in: float = -5, **extra: Any
    ) -> str:
        now = time.time()
        payload = {"iss": iss, "exp": int(now + exp_in), "nbf": int(now + nbf_in), **extra}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
            return jwt.encode(payload, secret, algorithm="HS256", headers={"typ": "JWT"})

    return make


@pytest.fixture
def kling_headers(make_token: TokenFactory) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token()}"}


@pytest.fixture
def openai_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {OPENAI_KEY}"}


@pytest.fixture
def decode_image() -> Callable[[bytes | str], Image.Image]:
    """Open image bytes (or base64 text) with Pillow, fully loaded (so a broken file fails here)."""

    def decode(data: bytes | str) -> Image.Image:
        raw = base64.b64decode(data, validate=True) if isinstance(data, str) else data
        image = Image.open(io.BytesIO(raw))
        image.load()
        return image

    return decode
