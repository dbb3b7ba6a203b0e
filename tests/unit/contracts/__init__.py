"""The adapter contract: how to build each adapter against the in-process emulator, one module per provider.

Every module in this package defines ``CONTRACT: Contract``; ``CONTRACTS`` collects them, and
``tests/unit/test_providers_contract.py`` runs one suite parametrised over all of them.

The emulator app is driven through ``fastapi.testclient.TestClient``. This Starlette's ``TestClient`` is an
``httpx2.Client``, not an ``httpx.Client``, so the adapters get a real ``httpx.Client`` whose transport hands
each request to the ``TestClient`` (``InProcess``): the adapters' httpx error and response handling is
the production one.
"""

from __future__ import annotations

import base64
import importlib
import io
import pkgutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi.testclient import TestClient
from PIL import Image

from shared.catalog import load_catalog, validate_request
from shared.jobs import ImageRequest
from worker.inputs import HttpImageLoader, ImageLoader
from worker.providers import ImageProvider, JobSpec


class InProcess(httpx.BaseTransport):
    """An ``httpx`` transport that sends every request through the emulator's ``TestClient``."""

    def __init__(self, client: TestClient) -> None:
        self._client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self._client.request(
            request.method, str(request.url), headers=request.headers.multi_items(), content=request.read()
        )
        return httpx.Response(
            answer.status_code, headers=answer.headers.multi_items(), content=answer.content, request=request
        )


def emulator_http(emulator: TestClient, configured_base_url: str | None) -> httpx.Client:
    """The configured emulator base URL (with its dialect prefix, e.g. ``/kling``) on the in-process host."""
    assert configured_base_url is not None
    base_url = httpx.URL(configured_base_url).copy_with(scheme="http", host="emulator", port=None)
    return httpx.Client(base_url=base_url, transport=InProcess(emulator))


def emulator_images(emulator: TestClient) -> ImageLoader:
    """Input images: data URIs and base64 in place, URLs through the in-process emulator."""
    return HttpImageLoader(httpx.Client(transport=InProcess(emulator)), max_bytes=10 * 1024 * 1024)


def small_png_base64(size: int = 320) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), "teal").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@dataclass(frozen=True)
class Contract:
    """How to build one adapter and a valid job for it (through the catalog, as the producer would).

    ``request`` must ask for ``images_expected`` (2) square images (the suite checks each);
    ``build(emulator, good_credentials)`` returns the adapter; ``provider`` is the emulator's stats/config key
    and the registry name.
    """

    provider: str
    request: dict[str, Any]
    build: Callable[[TestClient, bool], ImageProvider]
    #: a parameter value the upstream refuses, named in its error message (e.g. ``{"n": 99}``)
    refused_params: dict[str, Any] = field(default_factory=lambda: {"n": 99})
    #: async upstreams report these markers as a FAILED poll instead of a submit error
    async_markers: tuple[str, ...] = ()
    #: how many images ``request`` yields (upstreams that make one image per task, e.g. BFL, ask for 1)
    images_expected: int = 2
    #: the upstream answers a submit with a task that is polled (Kling, BFL); else the submit is the result
    polled: bool = False

    def spec(self, prompt: str, *, attempt: int = 1, job_id: str | None = None, **params: Any) -> JobSpec:
        validated = validate_request(
            ImageRequest.model_validate({**self.request, "prompt": prompt}), catalog=load_catalog()
        )
        return JobSpec(
            job_id=job_id or uuid.uuid4().hex,
            upstream_model=validated.upstream_model,
            operation=validated.operation,
            params={**validated.upstream_params, **params},
            image_count=validated.image_count,
            attempt=attempt,
        )


def _discover() -> dict[str, Contract]:
    found: dict[str, Contract] = {}
    for module_info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        contract: Contract = module.CONTRACT
        found[contract.provider] = contract
    return found


CONTRACTS: dict[str, Contract] = _discover()
