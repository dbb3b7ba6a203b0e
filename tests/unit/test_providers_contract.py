"""One contract for every adapter, run against the upstream emulator in-process (no sockets).

The emulator app is driven through ``fastapi.testclient.TestClient``. This Starlette's ``TestClient`` is an
``httpx2.Client``, not an ``httpx.Client``, so the adapters get a real ``httpx.Client`` whose transport hands
each request to the ``TestClient`` (``_InProcess``): the adapters' httpx error and response handling is
the production one. Generation latency is set to zero, so Kling tasks finish at once.
"""

from __future__ import annotations

import io
import re
import time
import uuid
from collections.abc import Iterator

import jwt
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from emulator.app import create_app
from shared.config import EMULATOR_KLING_ACCESS_KEY, EMULATOR_KLING_SECRET_KEY
from shared.errors import (
    ContentPolicyError,
    ErrorCode,
    PermanentProviderError,
    ProviderAuthError,
    ProviderError,
    QuotaExceededError,
    RateLimitedError,
    TransientProviderError,
    UnexpectedResponseError,
    UpstreamRejectedError,
)
from tests.unit.contracts import CONTRACTS, Contract
from worker.providers import (
    PROVIDERS,
    Accepted,
    Completed,
    ImageProvider,
    JobSpec,
    PollResult,
    ResultImage,
    UpstreamState,
)
from worker.providers.base import as_pollable

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


KLING = CONTRACTS["kling"]
OPENAI = CONTRACTS["openai"]


def test_every_registered_provider_has_a_contract() -> None:
    assert set(CONTRACTS) == set(PROVIDERS)


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """A fresh emulator with its default credentials and zero generation latency."""
    for name in ("EMULATOR_KLING_ACCESS_KEY", "EMULATOR_KLING_SECRET_KEY", "EMULATOR_OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with TestClient(create_app(), base_url="http://emulator") as client:
        config = client.get("/_emulator/config").json()
        zero = {"latency": {"kind": "fixed", "value_s": 0}}
        providers = [name for name, knobs in config.items() if isinstance(knobs, dict) and "latency" in knobs]
        response = client.put("/_emulator/config", json=dict.fromkeys(providers, zero))
        assert response.status_code == 200, response.text
        assert response.json()["kling"]["latency"] == {"kind": "fixed", "value_s": 0.0}
        yield client


@pytest.fixture(params=list(CONTRACTS))
def contract(request: pytest.FixtureRequest) -> Contract:
    return CONTRACTS[request.param]


@pytest.fixture
def adapter(contract: Contract, emulator: TestClient) -> Iterator[ImageProvider]:
    built = contract.build(emulator, True)
    yield built
    built.close()


def _stats(emulator: TestClient) -> dict[str, dict[str, int]]:
    stats: dict[str, dict[str, int]] = emulator.get("/_emulator/stats").json()
    return stats


def _run_to_completion(adapter: ImageProvider, spec: JobSpec, *, max_polls: int = 5) -> tuple[ResultImage, ...]:
    submission = adapter.submit(spec)
    if isinstance(submission, Completed):
        return submission.images
    assert isinstance(submission, Accepted)
    for _ in range(max_polls):
        result = as_pollable(adapter).poll(submission.upstream_id)
        if result.state == UpstreamState.SUCCEEDED:
            return result.images
        assert result.state == UpstreamState.PENDING, result
    raise AssertionError(f"still pending after {max_polls} polls")


def _image_bytes(image: ResultImage, emulator: TestClient) -> bytes:
    if image.data is not None:
        return image.data
    assert image.url is not None
    response = emulator.get(image.url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    return response.content


# -- success -----------------------------------------------------------------------------------------


def test_submit_runs_to_success_with_png_images(
    adapter: ImageProvider, contract: Contract, emulator: TestClient
) -> None:
    images = _run_to_completion(adapter, contract.spec("a red fox in snow"))

    assert len(images) == contract.images_expected
    for image in images:
        data = _image_bytes(image, emulator)
        assert data.startswith(PNG_MAGIC)
        with Image.open(io.BytesIO(data)) as picture:
            assert picture.format == "PNG"
            assert picture.width == picture.height  # 1:1 / 1024x1024
    assert _stats(emulator)[contract.provider]["rejected"] == 0


def test_kling_answers_urls_and_openai_answers_bytes(emulator: TestClient) -> None:
    kling_images = _run_to_completion(KLING.build(emulator, True), KLING.spec("a lighthouse"))
    openai_images = _run_to_completion(OPENAI.build(emulator, True), OPENAI.spec("a lighthouse"))

    assert all(image.url is not None and image.data is None for image in kling_images)
    assert all(str(image.url).startswith("http://emulator/_emulator/files/kling/") for image in kling_images)
    assert all(image.data is not None and image.url is None for image in openai_images)


def test_kling_submit_is_accepted_and_pending_until_generated(emulator: TestClient) -> None:
    adapter = KLING.build(emulator, True)

    submission = adapter.submit(KLING.spec("a slow fox [latency=60]"))

    assert isinstance(submission, Accepted)
    assert as_pollable(adapter).poll(submission.upstream_id).state == UpstreamState.PENDING
    assert as_pollable(adapter).poll(submission.upstream_id).images == ()


def test_kling_sends_the_job_id_as_external_task_id(emulator: TestClient) -> None:
    adapter = KLING.build(emulator, True)
    spec = KLING.spec("a fox")

    submission = adapter.submit(spec)

    assert isinstance(submission, Accepted)
    # the emulator finds it by external id
    assert as_pollable(adapter).poll(spec.job_id).state == UpstreamState.SUCCEEDED


def test_openai_submit_is_synchronous(emulator: TestClient) -> None:
    submission = OPENAI.build(emulator, True).submit(OPENAI.spec("a lighthouse"))

    assert isinstance(submission, Completed)
    assert _stats(emulator)["openai"]["requests"] == 1


# -- errors ------------------------------------------------------------------------------------------


def test_wrong_credentials_raise_provider_auth_error(contract: Contract, emulator: TestClient) -> None:
    adapter = contract.build(emulator, False)

    with pytest.raises(ProviderAuthError) as caught:
        adapter.submit(contract.spec("a fox"))

    assert caught.value.code == ErrorCode.UPSTREAM_AUTH
    assert caught.value.provider == contract.provider
    assert _stats(emulator)[contract.provider]["rejected"] == 1


@pytest.mark.parametrize(
    ("marker", "error_type", "code"),
    [
        pytest.param("[quota]", QuotaExceededError, ErrorCode.INSUFFICIENT_QUOTA, id="quota"),
        pytest.param("[429]", RateLimitedError, ErrorCode.RATE_LIMITED, id="rate-limited"),
        pytest.param("[500]", TransientProviderError, ErrorCode.UPSTREAM_UNAVAILABLE, id="server-error"),
        pytest.param("[moderated]", ContentPolicyError, ErrorCode.CONTENT_POLICY_VIOLATION, id="moderated"),
        pytest.param("[garbage]", UnexpectedResponseError, ErrorCode.UPSTREAM_BAD_RESPONSE, id="garbage"),
    ],
)
def test_submit_error_maps_to_the_error_tree(
    adapter: ImageProvider, contract: Contract, marker: str, error_type: type[ProviderError], code: ErrorCode
) -> None:
    with pytest.raises(ProviderError) as caught:
        adapter.submit(contract.spec(f"a fox {marker}"))

    assert type(caught.value) is error_type
    assert caught.value.code == code
    assert caught.value.provider == contract.provider


def test_quota_is_permanent_and_rate_limit_is_transient(adapter: ImageProvider, contract: Contract) -> None:
    with pytest.raises(PermanentProviderError):
        adapter.submit(contract.spec("[quota]"))
    with pytest.raises(TransientProviderError):
        adapter.submit(contract.spec("[429]"))


def test_openai_rate_limit_carries_retry_after(emulator: TestClient) -> None:
    with pytest.raises(RateLimitedError) as caught:
        OPENAI.build(emulator, True).submit(OPENAI.spec("[429]"))

    assert caught.value.retry_after_s == 1.0


def test_parameters_the_upstream_refuses_raise_upstream_rejected(contract: Contract, emulator: TestClient) -> None:
    adapter = contract.build(emulator, True)
    spec = contract.spec("a fox", **contract.refused_params)

    with pytest.raises(UpstreamRejectedError) as caught:
        adapter.submit(spec)

    assert caught.value.code == ErrorCode.UPSTREAM_REJECTED
    for name in contract.refused_params:
        assert re.search(rf"\b{name}\b", caught.value.message), caught.value.message  # names the parameter


ASYNC_FAILURES = {"[moderated-async]": ContentPolicyError, "[fail]": ProviderError}


@pytest.mark.parametrize(
    ("provider", "marker"),
    [
        pytest.param(contract.provider, marker, id=f"{contract.provider}-{marker}")
        for contract in CONTRACTS.values()
        for marker in contract.async_markers
    ],
)
def test_async_task_that_ends_failed_is_reported_by_poll(emulator: TestClient, provider: str, marker: str) -> None:
    contract = CONTRACTS[provider]
    adapter = contract.build(emulator, True)
    submission = adapter.submit(contract.spec(f"a fox {marker}"))
    assert isinstance(submission, Accepted)

    result = _poll_until_done(adapter, submission.upstream_id)

    assert result.state == UpstreamState.FAILED
    assert result.images == ()
    assert result.error is not None
    assert type(result.error) is ASYNC_FAILURES[marker]
    expected = ErrorCode.CONTENT_POLICY_VIOLATION if marker == "[moderated-async]" else ErrorCode.UPSTREAM_FAILED
    assert result.error.code == expected


def _poll_until_done(adapter: ImageProvider, upstream_id: str, max_polls: int = 5) -> PollResult:
    for _ in range(max_polls):
        result = as_pollable(adapter).poll(upstream_id)
        if result.state != UpstreamState.PENDING:
            return result
    raise AssertionError(f"still pending after {max_polls} polls")


def test_kling_poll_of_an_unknown_task_is_rejected(emulator: TestClient) -> None:
    with pytest.raises(UpstreamRejectedError):
        as_pollable(KLING.build(emulator, True)).poll("no-such-task")


def test_openai_failure_after_generation_is_transient(emulator: TestClient) -> None:
    with pytest.raises(TransientProviderError):
        OPENAI.build(emulator, True).submit(OPENAI.spec("a fox [fail]"))


# -- idempotent Kling submit ---------------------------------------------------------------------------


def test_kling_resubmit_of_a_submitted_job_returns_the_same_task(emulator: TestClient) -> None:
    adapter = KLING.build(emulator, True)
    job_id = uuid.uuid4().hex
    first = adapter.submit(KLING.spec("a fox", job_id=job_id))

    # When a worker that died after submitting is replaced and the job is submitted again
    second = adapter.submit(KLING.spec("a fox", job_id=job_id, attempt=2))

    assert isinstance(first, Accepted) and isinstance(second, Accepted)
    assert second.upstream_id == first.upstream_id
    stats = _stats(emulator)["kling"]
    assert stats["submits"] == 1
    assert stats["queries"] == 1
    listed = emulator.get("/kling/v1/images/generations", headers=_kling_auth()).json()["data"]
    assert len(listed) == 1


def test_kling_resubmit_of_a_job_that_never_arrived_creates_the_task(emulator: TestClient) -> None:
    adapter = KLING.build(emulator, True)
    job_id = uuid.uuid4().hex

    submission = adapter.submit(KLING.spec("a fox", job_id=job_id, attempt=2))

    assert isinstance(submission, Accepted)
    stats = _stats(emulator)["kling"]
    assert (stats["submits"], stats["queries"]) == (1, 1)
    assert as_pollable(adapter).poll(job_id).state == UpstreamState.SUCCEEDED


def test_kling_first_attempt_does_not_look_the_job_up(emulator: TestClient) -> None:
    KLING.build(emulator, True).submit(KLING.spec("a fox"))

    assert _stats(emulator)["kling"] == {"submits": 1, "queries": 0, "rejected": 0}


def _kling_auth() -> dict[str, str]:
    now = int(time.time())
    payload = {"iss": EMULATOR_KLING_ACCESS_KEY, "exp": now + 60, "nbf": now - 5}
    return {"Authorization": f"Bearer {jwt.encode(payload, EMULATOR_KLING_SECRET_KEY, algorithm='HS256')}"}
