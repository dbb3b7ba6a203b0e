"""The Kling adapter's endpoints: every Kling public model runs through the catalog, the adapter and the
in-process emulator (no sockets) to images; upstream ids name their endpoint; bodies take Kling's forms."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from emulator.app import create_app
from emulator.kling.routes import KlingEmulator
from shared.catalog import load_catalog, validate_request
from shared.errors import (
    ContentPolicyError,
    PermanentProviderError,
    ProviderError,
    QuotaExceededError,
    UpstreamRejectedError,
)
from shared.jobs import ImageRequest
from tests.unit.contracts import CONTRACTS, small_png_base64
from worker.providers import Accepted, JobSpec, PollResult, UpstreamState
from worker.providers.kling import (
    ENDPOINTS,
    EXPAND,
    GENERATIONS,
    MULTI_IMAGE,
    OMNI,
    TRY_ON,
    KlingProvider,
    KlingTaskResult,
    decode_upstream_id,
    encode_upstream_id,
    endpoint_for,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
URL = "https://images.example.com/in.png"
DATA_URI = "data:image/png;base64," + small_png_base64()

#: one request per Kling public model: (request, expected endpoint key, images delivered)
EXAMPLES: dict[str, tuple[dict[str, Any], str, int]] = {
    "kling-image": ({"model_name": "kling-v2-1", "prompt": "a fox", "n": 2}, "generations", 2),
    "kling-image img2img": ({"model_name": "kling-v3", "prompt": "a fox", "image": DATA_URI}, "generations", 1),
    "kling-image multi-img": (
        {"model_name": "kling-v2", "subject_image_list": [{"subject_image": URL}, {"subject_image": DATA_URI}]},
        "multi-image2image",
        1,
    ),
    "kling-image image_urls": (
        {"model_name": "kling-v2-1", "prompt": "together", "image_urls": [URL, DATA_URI], "n": 3},
        "multi-image2image",
        3,
    ),
    "kling-image expand": (
        {"model_name": "kling-v1", "image_url": DATA_URI, "left_expansion_ratio": 0.5, "n": 2},
        "expand",
        2,
    ),
    "kling-omni-image": (
        {"model_name": "kling-v3-omni", "prompt": "a strip", "result_type": "series", "series_amount": 3},
        "omni-image",
        3,
    ),
    "kling-omni-image o1": (
        {"model_name": "kling-image-o1", "prompt": "edit", "image_urls": [URL, DATA_URI], "n": 2},
        "omni-image",
        2,
    ),
    "kolors-virtual-try-on-v1": (
        {"prompt": "ignored", "human_image": DATA_URI, "cloth_image": URL},
        "kolors-virtual-try-on",
        1,
    ),
    "kolors-virtual-try-on-v1-5": ({"human_image": URL, "cloth_image": DATA_URI}, "kolors-virtual-try-on", 1),
    "kling-v3-image": ({"prompt": "a fox", "resolution": "2k"}, "generations", 1),
    "kling-image-v3": ({"prompt": "a fox", "image_urls": [DATA_URI]}, "generations", 1),
    "kling-img-v1": ({"prompt": "a fox", "n": 2}, "generations", 2),
    "kling-v2-new": ({"prompt": "as a watercolour", "image_url": URL}, "generations", 1),
    "kling-v2": ({"prompt": "p", "subject_image_list": [{"subject_image": URL}]}, "multi-image2image", 1),
    "kling-v2-1": ({"prompt": "p", "images": [URL, URL]}, "multi-image2image", 1),
    "kling-multi-image": (
        {"multi_model_name": "kling-v2", "subject_image_list": [{"subject_image": URL}], "scene_image": DATA_URI},
        "multi-image2image",
        1,
    ),
    "kling-expand": (
        {
            "image_url": URL,
            "up_expansion_ratio": 0.2,
            "down_expansion_ratio": 0.2,
            "left_expansion_ratio": 0.3,
            "right_expansion_ratio": 0.3,
        },
        "expand",
        1,
    ),
    "kling-image-o1": ({"prompt": "a fox", "image": DATA_URI, "aspect_ratio": "auto"}, "omni-image", 1),
}


def _model(example: str) -> str:
    return example.split(" ")[0]


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    for name in ("EMULATOR_KLING_ACCESS_KEY", "EMULATOR_KLING_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    with TestClient(create_app(), base_url="http://emulator") as client:
        response = client.put("/_emulator/config", json={"kling": {"latency": {"kind": "fixed", "value_s": 0}}})
        assert response.status_code == 200
        yield client


@pytest.fixture
def adapter(emulator: TestClient) -> Iterator[KlingProvider]:
    built = CONTRACTS["kling"].build(emulator, True)
    assert isinstance(built, KlingProvider)
    yield built
    built.close()


def spec_of(model: str, fields: dict[str, Any], *, attempt: int = 1, job_id: str | None = None) -> JobSpec:
    """A job as the producer and worker would make it: through the catalog."""
    validated = validate_request(ImageRequest.model_validate({"model": model, **fields}), catalog=load_catalog())
    return JobSpec(
        job_id=job_id or uuid.uuid4().hex,
        upstream_model=validated.upstream_model,
        operation=validated.operation,
        params=validated.upstream_params,
        image_count=validated.image_count,
        attempt=attempt,
    )


def _poll_until_done(adapter: KlingProvider, upstream_id: str) -> PollResult:
    for _ in range(5):
        result = adapter.poll(upstream_id)
        if result.state != UpstreamState.PENDING:
            return result
    raise AssertionError("still pending after 5 polls")


def _kling(emulator: TestClient) -> KlingEmulator:
    app: Any = emulator.app
    kling: KlingEmulator = app.state.kling
    return kling


# -- every public model, end to end ----------------------------------------------------------------------------


def test_the_examples_cover_every_kling_model() -> None:
    kling_models = {name for name, entry in load_catalog().models.items() if entry.provider == "kling"}

    assert {_model(example) for example in EXAMPLES} == kling_models


@pytest.mark.parametrize("example", list(EXAMPLES))
def test_every_kling_model_runs_to_png_images_on_its_endpoint(
    example: str, adapter: KlingProvider, emulator: TestClient
) -> None:
    fields, endpoint_key, delivered = EXAMPLES[example]
    spec = spec_of(_model(example), fields)

    submission = adapter.submit(spec)

    assert isinstance(submission, Accepted)
    endpoint, task_id = decode_upstream_id(submission.upstream_id)
    assert endpoint.key == endpoint_key
    assert submission.upstream_id == (task_id if endpoint_key == "generations" else f"{endpoint_key}:{task_id}")
    task = _kling(emulator).store.get(task_id)
    assert task is not None and task.request.endpoint == endpoint_key
    assert task.request.external_task_id == spec.job_id
    result = _poll_until_done(adapter, submission.upstream_id)
    assert result.state == UpstreamState.SUCCEEDED, result.error
    assert len(result.images) == delivered
    for image in result.images:
        assert image.url is not None
        response = emulator.get(image.url)
        assert response.content.startswith(PNG_MAGIC)
        with Image.open(io.BytesIO(response.content)) as picture:
            assert picture.format == "PNG"
    assert emulator.get("/_emulator/stats").json()["kling"]["rejected"] == 0


def test_multi_model_name_is_the_upstream_model_name(adapter: KlingProvider, emulator: TestClient) -> None:
    fields = {"subject_image_list": [{"subject_image": URL}]}
    chosen = adapter.submit(spec_of("kling-multi-image", {**fields, "multi_model_name": "kling-v2"}))
    default = adapter.submit(spec_of("kling-multi-image", fields))

    models = []
    for submission in (chosen, default):
        assert isinstance(submission, Accepted)
        task = _kling(emulator).store.get(decode_upstream_id(submission.upstream_id)[1])
        assert task is not None
        models.append(task.request.model_name)
    assert models == ["kling-v2", "kling-v2-1"]


def test_omni_series_results_come_from_series_images(adapter: KlingProvider, emulator: TestClient) -> None:
    fields = {"model_name": "kling-v3-omni", "prompt": "p", "result_type": "series", "series_amount": 4, "n": 1}
    submission = adapter.submit(spec_of("kling-omni-image", fields))
    assert isinstance(submission, Accepted)

    result = _poll_until_done(adapter, submission.upstream_id)

    assert len(result.images) == 4
    assert [str(image.url).rsplit("/", 1)[1] for image in result.images] == ["0.png", "1.png", "2.png", "3.png"]


# -- upstream ids and the resubmit lookup ---------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", [GENERATIONS, MULTI_IMAGE, EXPAND, TRY_ON, OMNI], ids=lambda e: e.key)
def test_upstream_ids_round_trip(endpoint: Any) -> None:
    upstream_id = encode_upstream_id(endpoint, "8623-abc")

    assert decode_upstream_id(upstream_id) == (endpoint, "8623-abc")


@pytest.mark.parametrize("upstream_id", ["8623-abc", "no-such:prefix", "omni-image:", "Cjz0o2gmuJkAAAAAAf-32g"])
def test_ids_without_a_known_prefix_are_generations_task_ids(upstream_id: str) -> None:
    assert decode_upstream_id(upstream_id) == (GENERATIONS, upstream_id)


def test_every_kling_operation_has_an_endpoint() -> None:
    operations = {
        operation.name
        for entry in load_catalog().models.values()
        if entry.provider == "kling"
        for operation in entry.operations
    }

    assert operations == set(ENDPOINTS)


def test_an_operation_without_an_endpoint_fails_permanently() -> None:
    with pytest.raises(PermanentProviderError, match="inpaint"):
        endpoint_for("inpaint")


@pytest.mark.parametrize(
    "example", ["kling-image multi-img", "kling-image expand", "kolors-virtual-try-on-v1", "kling-omni-image"]
)
def test_resubmit_finds_the_task_under_its_own_endpoint(
    example: str, adapter: KlingProvider, emulator: TestClient
) -> None:
    fields, _, _ = EXAMPLES[example]
    job_id = uuid.uuid4().hex
    first = adapter.submit(spec_of(_model(example), fields, job_id=job_id))

    second = adapter.submit(spec_of(_model(example), fields, job_id=job_id, attempt=2))

    assert isinstance(first, Accepted) and isinstance(second, Accepted)
    assert second.upstream_id == first.upstream_id
    stats = emulator.get("/_emulator/stats").json()["kling"]
    assert (stats["submits"], stats["queries"], stats["rejected"]) == (1, 1, 0)


def test_resubmit_of_a_multi_image_job_that_never_arrived_creates_it(
    adapter: KlingProvider, emulator: TestClient
) -> None:
    fields, _, _ = EXAMPLES["kling-image multi-img"]
    job_id = uuid.uuid4().hex

    submission = adapter.submit(spec_of("kling-image", fields, job_id=job_id, attempt=2))

    assert isinstance(submission, Accepted)
    assert submission.upstream_id.startswith("multi-image2image:")
    assert adapter.poll(f"multi-image2image:{job_id}").state == UpstreamState.SUCCEEDED  # by external id
    stats = emulator.get("/_emulator/stats").json()["kling"]
    assert (stats["submits"], stats["rejected"]) == (1, 1)  # the lookup's 404


# -- bodies ---------------------------------------------------------------------------------------------------


def test_generation_body_takes_raw_base64_and_the_job_id() -> None:
    spec = spec_of("kling-image", {"model_name": "kling-v2-1", "prompt": "p", "image_url": DATA_URI})

    body = GENERATIONS.body(spec)

    assert body == {
        "model_name": "kling-v2-1",
        "prompt": "p",
        "image": DATA_URI.split(",", 1)[1],
        "n": 1,
        "external_task_id": spec.job_id,
    }


def test_image_urls_become_subject_images() -> None:
    spec = spec_of("kling-image", {"model_name": "kling-v2", "image_urls": [URL, DATA_URI], "style_image": DATA_URI})

    body = MULTI_IMAGE.body(spec)

    raw = DATA_URI.split(",", 1)[1]
    assert body["model_name"] == "kling-v2"
    assert body["subject_image_list"] == [{"subject_image": URL}, {"subject_image": raw}]
    assert body["style_image"] == raw
    assert "image_urls" not in body and "prompt" not in body


def test_expand_body_sends_all_four_ratios() -> None:
    spec = spec_of("kling-image", {"model_name": "kling-v3", "image": URL, "up_expansion_ratio": 0.5})

    body = EXPAND.body(spec)

    assert body == {
        "image": URL,
        "up_expansion_ratio": 0.5,
        "down_expansion_ratio": 0.0,
        "left_expansion_ratio": 0.0,
        "right_expansion_ratio": 0.0,
        "n": 1,
        "external_task_id": spec.job_id,
    }


def test_omni_body_appends_loose_images_to_image_list() -> None:
    fields = {"model_name": "kling-v3-omni", "prompt": "p", "image_list": [{"image": URL}], "element_list": []}
    fields["element_list"] = [{"element_id": "835266081714884677"}]

    body = OMNI.body(spec_of("kling-omni-image", fields))

    assert body["image_list"] == [{"image": URL}]
    assert body["element_list"] == [{"element_id": 835266081714884677}]
    with_image = OMNI.body(spec_of("kling-image-o1", {"prompt": "p", "image_url": DATA_URI}))
    assert with_image["image_list"] == [{"image": DATA_URI.split(",", 1)[1]}]
    assert with_image["model_name"] == "kling-image-o1"


def test_try_on_body_has_no_prompt_and_no_n() -> None:
    spec = spec_of("kolors-virtual-try-on-v1-5", {"prompt": "x", "n": 1, "human_image": URL, "cloth_image": URL})

    assert TRY_ON.body(spec) == {
        "model_name": "kolors-virtual-try-on-v1-5",
        "human_image": URL,
        "cloth_image": URL,
        "external_task_id": spec.job_id,
    }


def test_a_parameter_the_endpoint_does_not_take_is_refused_naming_it() -> None:
    spec = JobSpec(
        job_id="j", upstream_model="kling-v3", operation="expand", params={"image": URL, "aspect_ratio": "1:1"},
        image_count=1,
    )  # fmt: skip

    with pytest.raises(UpstreamRejectedError, match="aspect_ratio"):
        EXPAND.body(spec)


# -- errors on the other endpoints ------------------------------------------------------------------------------


def test_the_upstream_area_rule_is_refused_naming_the_ratios(adapter: KlingProvider) -> None:
    ratios = {f"{side}_expansion_ratio": 1.0 for side in ("up", "down", "left", "right")}
    spec = JobSpec(job_id="j", upstream_model="kling-v3", operation="expand", params={"image": URL, **ratios},
                   image_count=1)  # fmt: skip

    with pytest.raises(UpstreamRejectedError) as caught:
        adapter.submit(spec)

    assert "up_expansion_ratio" in caught.value.message
    assert "1201" in caught.value.message


def test_try_on_markers_in_the_image_url_map_onto_the_error_tree(adapter: KlingProvider) -> None:
    quota = spec_of("kolors-virtual-try-on-v1", {"human_image": URL + "?[quota]", "cloth_image": URL})

    with pytest.raises(QuotaExceededError):
        adapter.submit(quota)


def test_omni_submit_moderation_is_a_content_policy_error(adapter: KlingProvider) -> None:
    with pytest.raises(ContentPolicyError):
        adapter.submit(spec_of("kling-omni-image", {"model_name": "kling-image-o1", "prompt": "x [moderated]"}))


@pytest.mark.parametrize(
    ("marker", "error_type"), [("[moderated-async]", ContentPolicyError), ("[fail]", ProviderError)]
)
def test_a_failed_multi_image_task_is_reported_by_poll(
    adapter: KlingProvider, marker: str, error_type: type[ProviderError]
) -> None:
    fields = {"model_name": "kling-v2-1", "prompt": f"x {marker}", "subject_image_list": [{"subject_image": URL}]}
    submission = adapter.submit(spec_of("kling-image", fields))
    assert isinstance(submission, Accepted)

    result = _poll_until_done(adapter, submission.upstream_id)

    assert result.state == UpstreamState.FAILED
    assert type(result.error) is error_type


def test_polling_a_task_under_another_endpoint_is_rejected(adapter: KlingProvider) -> None:
    submission = adapter.submit(spec_of("kling-image", {"model_name": "kling-v2-1", "prompt": "a fox"}))
    assert isinstance(submission, Accepted)

    with pytest.raises(UpstreamRejectedError):
        adapter.poll(f"omni-image:{submission.upstream_id}")


def test_series_images_win_over_images() -> None:
    result = KlingTaskResult.model_validate(
        {
            "result_type": "series",
            "images": [],
            "series_images": [{"index": 1, "url": "b"}, {"index": 0, "url": "a"}],
        }
    )

    assert [image.url for image in result.delivered()] == ["a", "b"]
    assert KlingTaskResult.model_validate({"images": None}).delivered() == []
