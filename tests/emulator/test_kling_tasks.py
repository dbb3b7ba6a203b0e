"""Kling task API: submit → submitted → processing → succeed, queries, listing, validation and files."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from emulator.kling.params import parse_submit
from emulator.kling.tasks import FAILED, PROCESSING, SUBMITTED, SUCCEED, KlingTask

PATH = "/v1/images/generations"
Decode = Callable[[bytes | str], Image.Image]


def submit(client: TestClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.post(PATH, json={"prompt": "a red fox", **body}, headers=headers)
    assert response.status_code == 200, response.text
    envelope: dict[str, Any] = response.json()
    assert envelope["code"] == 0 and envelope["message"] == "SUCCEED"
    return envelope["data"]  # type: ignore[no-any-return]


def query(client: TestClient, headers: dict[str, str], task_id: str) -> dict[str, Any]:
    response = client.get(f"{PATH}/{task_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


def sleep_until(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.time()))


def test_task_goes_submitted_processing_succeed_with_png_images(
    client: TestClient, kling_headers: dict[str, str], decode_image: Decode
) -> None:
    # Given a task with 0.8 s of generation time (so 0.2 s `submitted`)
    created = submit(client, kling_headers, prompt="a red fox [latency=0.8]", n=2, aspect_ratio="9:16")
    start = created["created_at"] / 1000
    assert created["task_status"] == SUBMITTED
    assert created["created_at"] == created["updated_at"]
    assert created["task_info"] == {}

    # When it is queried right away, mid-way and after the generation time
    first = query(client, kling_headers, created["task_id"])
    sleep_until(start + 0.4)
    middle = query(client, kling_headers, created["task_id"])
    sleep_until(start + 0.9)
    done = query(client, kling_headers, created["task_id"])

    # Then the status moves forward and updated_at marks each change
    assert first["task_status"] == SUBMITTED and first["task_result"] == {}
    assert middle["task_status"] == PROCESSING
    assert middle["updated_at"] == created["created_at"] + 200
    assert done["task_status"] == SUCCEED
    assert done["updated_at"] == created["created_at"] + 800
    assert done["task_status_msg"] == ""
    assert done["final_unit_deduction"] == "2"
    images = done["task_result"]["images"]
    assert [image["index"] for image in images] == [0, 1]
    assert images[0]["url"] == f"http://testserver/_emulator/files/kling/{created['task_id']}/0.png"
    for image in images:
        response = client.get(image["url"])
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        picture = decode_image(response.content)
        assert (picture.format, picture.size) == ("PNG", (144, 256))


def test_image_size_follows_aspect_ratio_and_long_side(
    client: TestClient, kling_headers: dict[str, str], decode_image: Decode
) -> None:
    client.put("/_emulator/config", json={"image_long_side": 420})
    created = submit(client, kling_headers, aspect_ratio="21:9", model_name="kling-v2-1")
    url = query(client, kling_headers, created["task_id"])["task_result"]["images"][0]["url"]
    assert decode_image(client.get(url).content).size == (420, 180)


def test_query_by_external_task_id_in_path_or_query(client: TestClient, kling_headers: dict[str, str]) -> None:
    created = submit(client, kling_headers, external_task_id="order-42")
    assert created["task_info"] == {"external_task_id": "order-42"}
    by_path = query(client, kling_headers, "order-42")
    by_query = client.get(PATH, params={"external_task_id": "order-42"}, headers=kling_headers).json()["data"]
    with_extra_query = client.get(f"{PATH}/order-42?foo=bar", headers=kling_headers).json()["data"]
    assert by_path["task_id"] == by_query["task_id"] == with_extra_query["task_id"] == created["task_id"]
    assert by_path["task_info"] == {"external_task_id": "order-42"}


def test_duplicate_external_task_id_is_rejected(client: TestClient, kling_headers: dict[str, str]) -> None:
    submit(client, kling_headers, external_task_id="dup")
    response = client.post(PATH, json={"prompt": "again", "external_task_id": "dup"}, headers=kling_headers)
    assert response.status_code == 400
    assert response.json()["code"] == 1201
    assert "external_task_id" in response.json()["message"]


def test_unknown_task_is_404_1203(client: TestClient, kling_headers: dict[str, str]) -> None:
    for response in (
        client.get(f"{PATH}/nope", headers=kling_headers),
        client.get(PATH, params={"external_task_id": "nope"}, headers=kling_headers),
    ):
        assert response.status_code == 404
        assert response.json()["code"] == 1203
    assert client.get("/_emulator/files/kling/nope/0.png").status_code == 404


def test_list_returns_newest_first_with_paging(client: TestClient, kling_headers: dict[str, str]) -> None:
    ids = [submit(client, kling_headers, prompt=f"image {i}")["task_id"] for i in range(3)]
    listed = client.get(PATH, params={"pageNum": 1, "pageSize": 30}, headers=kling_headers).json()["data"]
    assert [task["task_id"] for task in listed] == ids[::-1]
    second_page = client.get(PATH, params={"pageNum": 2, "pageSize": 2}, headers=kling_headers).json()["data"]
    assert [task["task_id"] for task in second_page] == ids[:1]
    bad = client.get(PATH, params={"pageSize": 501}, headers=kling_headers)
    assert (bad.status_code, bad.json()["code"]) == (400, 1201)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"prompt": ""}, "prompt", id="prompt-missing"),
        pytest.param({"prompt": "x" * 2501}, "prompt", id="prompt-too-long"),
        pytest.param({"prompt": 5}, "prompt", id="prompt-not-string"),
        pytest.param({"model_name": "kling-v9"}, "model_name", id="unknown-model"),
        pytest.param({"n": 10}, "n", id="n-too-big"),
        pytest.param({"n": 0}, "n", id="n-zero"),
        pytest.param({"n": "2"}, "n", id="n-string"),
        pytest.param({"aspect_ratio": "5:4"}, "aspect_ratio", id="bad-aspect-ratio"),
        pytest.param({"model_name": "kling-v1", "aspect_ratio": "21:9"}, "aspect_ratio", id="v1-no-21-9"),
        pytest.param({"resolution": "4k"}, "resolution", id="bad-resolution"),
        pytest.param({"image_fidelity": 1.5}, "image_fidelity", id="fidelity-range"),
        pytest.param({"human_fidelity": "high"}, "human_fidelity", id="fidelity-type"),
        pytest.param({"image_reference": "face"}, "image", id="reference-needs-image"),
        pytest.param({"image_reference": "pose", "image": "https://x/a.png"}, "image_reference", id="bad-reference"),
        pytest.param({"image": "https://x/a.png", "negative_prompt": "blur"}, "negative_prompt", id="neg-with-image"),
        pytest.param({"image": "data:image/png;base64,AAAA"}, "image", id="data-url-prefix"),
        pytest.param({"image": "not base64 !!"}, "image", id="image-not-base64"),
        pytest.param({"negative_prompt": "y" * 2501}, "negative_prompt", id="negative-too-long"),
        pytest.param({"model_name": "kling-v2-new"}, "kling-v2-new", id="v2-new-needs-image"),
    ],
)
def test_invalid_parameters_are_400_1201_naming_the_field(
    client: TestClient, kling_headers: dict[str, str], body: dict[str, Any], field: str
) -> None:
    response = client.post(PATH, json={"prompt": "a red fox", **body}, headers=kling_headers)
    assert response.status_code == 400
    assert response.json()["code"] == 1201
    assert field in response.json()["message"]


def test_non_json_body_is_400(client: TestClient, kling_headers: dict[str, str]) -> None:
    response = client.post(
        "/kling" + PATH, content=b"{oops", headers={**kling_headers, "content-type": "application/json"}
    )
    assert (response.status_code, response.json()["code"]) == (400, 1200)


def test_full_valid_body_with_unknown_keys_is_accepted(client: TestClient, kling_headers: dict[str, str]) -> None:
    image = base64.b64encode(b"\x89PNG fake bytes").decode()
    created = submit(
        client,
        kling_headers,
        model_name="kling-v1-5",
        image=image,
        image_reference="subject",
        image_fidelity=0.5,
        human_fidelity=0.45,
        resolution="2k",
        n=3,
        aspect_ratio="3:2",
        callback_url="http://127.0.0.1:1/cb",
        watermark_info={"enabled": False},
        something_new=True,
    )
    done = query(client, kling_headers, created["task_id"])
    assert done["final_unit_deduction"] == "24"  # kling-v1-5 image-to-image: 8 units x 3
    assert len(done["task_result"]["images"]) == 3


def test_files_are_404_until_the_task_succeeds(client: TestClient, kling_headers: dict[str, str]) -> None:
    created = submit(client, kling_headers, prompt="slow [latency=30]")
    assert client.get(f"/_emulator/files/kling/{created['task_id']}/0.png").status_code == 404
    done = submit(client, kling_headers)
    assert client.get(f"/_emulator/files/kling/{done['task_id']}/1.png").status_code == 404  # n=1


def test_concurrency_limit_counts_n_slots_and_answers_1303(client: TestClient, kling_headers: dict[str, str]) -> None:
    client.put("/_emulator/config", json={"kling": {"concurrency_limit": 3}})
    submit(client, kling_headers, prompt="busy [latency=30]", n=2)
    submit(client, kling_headers, prompt="finished at once [latency=0]", n=1)  # frees its slot at once
    response = client.post(PATH, json={"prompt": "one too many [latency=30]", "n": 2}, headers=kling_headers)
    assert (response.status_code, response.json()["code"]) == (429, 1303)
    submit(client, kling_headers, prompt="fits [latency=30]", n=1)


def test_status_latency_delays_queries(client: TestClient, kling_headers: dict[str, str]) -> None:
    created = submit(client, kling_headers)
    client.put("/_emulator/config", json={"status_latency_s": 0.2})
    started = time.monotonic()
    query(client, kling_headers, created["task_id"])
    assert time.monotonic() - started >= 0.2


def test_state_at_is_a_function_of_the_clock() -> None:
    request = parse_submit({"prompt": "p"})
    task = KlingTask(task_id="t", request=request, created_at=100.0, latency_s=10.0)
    assert task.state_at(100.0) == (SUBMITTED, 100.0)
    assert task.state_at(100.6) == (PROCESSING, 100.5)  # submitted for min(0.5, 10 / 4)
    assert task.state_at(110.0) == (SUCCEED, 110.0)
    quick = KlingTask(task_id="q", request=request, created_at=100.0, latency_s=0.4)
    assert quick.state_at(100.05) == (SUBMITTED, 100.0)
    status, updated_at = quick.state_at(100.15)
    assert (status, updated_at) == (PROCESSING, pytest.approx(100.1))  # type: ignore[comparison-overlap]
    failing = KlingTask(task_id="f", request=request, created_at=0.0, latency_s=1.0, failure_msg="no")
    assert failing.state_at(5.0) == (FAILED, 1.0)
