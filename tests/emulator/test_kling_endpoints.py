"""Kling's other task APIs: multi-image2image, editing/expand (outpainting) and kolors-virtual-try-on."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

MULTI = "/v1/images/multi-image2image"
EXPAND = "/v1/images/editing/expand"
TRY_ON = "/v1/images/kolors-virtual-try-on"
GENERATIONS = "/v1/images/generations"
SUBJECT_URL = "https://images.example.com/subject.png"
Decode = Callable[[bytes | str], Image.Image]


def png_base64(width: int = 320, height: int = 320) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "teal").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def post(client: TestClient, headers: dict[str, str], path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["code"] == 0
    data: dict[str, Any] = response.json()["data"]
    assert data["task_status"] == "submitted"
    return data


def query(client: TestClient, headers: dict[str, str], path: str, task_id: str) -> dict[str, Any]:
    response = client.get(f"{path}/{task_id}", headers=headers)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def rejected(client: TestClient, headers: dict[str, str], path: str, body: dict[str, Any]) -> str:
    response = client.post(path, json=body, headers=headers)
    assert (response.status_code, response.json()["code"]) == (400, 1201), response.text
    message: str = response.json()["message"]
    return message


def image_size(client: TestClient, url: str, decode_image: Decode) -> tuple[int, int]:
    response = client.get(url)
    assert response.status_code == 200
    picture = decode_image(response.content)
    assert picture.format == "PNG"
    return picture.size


# -- multi-image2image --------------------------------------------------------------------------------------


def test_multi_image_task_runs_to_n_images_billed_16_units_each(
    client: TestClient, kling_headers: dict[str, str], decode_image: Decode
) -> None:
    body = {
        "model_name": "kling-v2",
        "prompt": "the two of them on a beach",
        "subject_image_list": [{"subject_image": SUBJECT_URL}, {"subject_image": png_base64()}],
        "scene_image": png_base64(400, 300),
        "style_image": "https://images.example.com/style.png",
        "n": 2,
        "aspect_ratio": "3:2",
        "external_task_id": "multi-1",
    }
    created = post(client, kling_headers, MULTI, body)

    done = query(client, kling_headers, MULTI, created["task_id"])

    assert done["task_status"] == "succeed"
    assert done["task_info"] == {"external_task_id": "multi-1"}
    assert done["final_unit_deduction"] == "32"
    images = done["task_result"]["images"]
    assert [image["index"] for image in images] == [0, 1]
    assert image_size(client, images[1]["url"], decode_image) == (256, 171)


def test_multi_image_defaults_to_kling_v2_1_and_needs_no_prompt(
    client: TestClient, kling_headers: dict[str, str]
) -> None:
    created = post(client, kling_headers, MULTI, {"subject_image_list": [{"subject_image": SUBJECT_URL}]})

    done = query(client, kling_headers, MULTI, created["task_id"])

    assert done["task_status"] == "succeed"
    assert done["final_unit_deduction"] == "16"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"subject_image_list": None}, "subject_image_list", id="subjects-missing"),
        pytest.param({"subject_image_list": []}, "subject_image_list", id="subjects-empty"),
        pytest.param({"subject_image_list": [{"subject_image": SUBJECT_URL}] * 5}, "subject_image_list", id="five"),
        pytest.param({"subject_image_list": [SUBJECT_URL]}, "subject_image_list", id="not-objects"),
        pytest.param({"subject_image_list": [{"image": SUBJECT_URL}]}, "subject_image_list[0].subject_image", id="key"),
        pytest.param(
            {"subject_image_list": [{"subject_image": "data:image/png;base64," + png_base64()}]},
            "subject_image_list[0].subject_image",
            id="data-uri",
        ),
        pytest.param(
            {"subject_image_list": [{"subject_image": png_base64(200, 200)}]},
            "subject_image_list[0].subject_image",
            id="too-small",
        ),
        pytest.param(
            {"subject_image_list": [{"subject_image": png_base64(900, 300)}]},
            "subject_image_list[0].subject_image",
            id="too-wide",
        ),
        pytest.param({"scene_image": "not base64 !!"}, "scene_image", id="bad-scene"),
        pytest.param({"model_name": "kling-v1"}, "model_name", id="model"),
        pytest.param({"prompt": "x" * 2501}, "prompt", id="prompt-too-long"),
        pytest.param({"n": 10}, "n", id="n"),
        pytest.param({"aspect_ratio": "5:4"}, "aspect_ratio", id="aspect-ratio"),
    ],
)
def test_multi_image_invalid_parameters_are_400_1201_naming_the_field(
    client: TestClient, kling_headers: dict[str, str], body: dict[str, Any], field: str
) -> None:
    merged = {"subject_image_list": [{"subject_image": SUBJECT_URL}], **body}

    message = rejected(client, kling_headers, MULTI, {key: value for key, value in merged.items() if value is not None})

    assert field in message


def test_tasks_are_queried_and_listed_under_their_own_endpoint(
    client: TestClient, kling_headers: dict[str, str]
) -> None:
    multi = post(client, kling_headers, MULTI, {"subject_image_list": [{"subject_image": SUBJECT_URL}]})
    generation = post(client, kling_headers, GENERATIONS, {"prompt": "a fox", "external_task_id": "gen-1"})

    assert client.get(f"{GENERATIONS}/{multi['task_id']}", headers=kling_headers).json()["code"] == 1203
    assert client.get(f"{MULTI}/gen-1", headers=kling_headers).status_code == 404
    listed = client.get(MULTI, headers=kling_headers).json()["data"]
    assert [task["task_id"] for task in listed] == [multi["task_id"]]
    assert query(client, kling_headers, GENERATIONS, "gen-1")["task_id"] == generation["task_id"]


def test_external_task_id_is_unique_across_endpoints(client: TestClient, kling_headers: dict[str, str]) -> None:
    post(client, kling_headers, GENERATIONS, {"prompt": "a fox", "external_task_id": "job-1"})

    message = rejected(
        client,
        kling_headers,
        MULTI,
        {"subject_image_list": [{"subject_image": SUBJECT_URL}], "external_task_id": "job-1"},
    )

    assert "external_task_id" in message


def test_every_endpoint_needs_the_jwt(client: TestClient) -> None:
    for path in (MULTI, EXPAND, TRY_ON, "/v1/images/omni-image"):
        response = client.post(path, json={})
        assert (response.status_code, response.json()["code"]) == (401, 1001)


def test_new_endpoints_are_served_on_the_root_and_the_kling_prefix(
    client: TestClient, kling_headers: dict[str, str]
) -> None:
    body = {"subject_image_list": [{"subject_image": SUBJECT_URL}]}
    created = post(client, kling_headers, "/kling" + MULTI, body)

    assert query(client, kling_headers, MULTI, created["task_id"])["task_status"] == "succeed"
    assert query(client, kling_headers, "/kling" + MULTI, created["task_id"])["task_status"] == "succeed"


# -- editing/expand -----------------------------------------------------------------------------------------


def _expand_body(**overrides: Any) -> dict[str, Any]:
    ratios = {f"{side}_expansion_ratio": 0.0 for side in ("up", "down", "left", "right")}
    return {"image": png_base64(400, 300), **ratios, **overrides}


def test_expand_grows_the_image_by_the_ratios_billed_8_units_each(
    client: TestClient, kling_headers: dict[str, str], decode_image: Decode
) -> None:
    body = _expand_body(left_expansion_ratio=0.5, right_expansion_ratio=0.5, n=3, prompt="more beach")
    created = post(client, kling_headers, EXPAND, body)

    done = query(client, kling_headers, EXPAND, created["task_id"])

    assert done["task_status"] == "succeed"
    assert done["final_unit_deduction"] == "24"
    assert len(done["task_result"]["images"]) == 3
    assert image_size(client, done["task_result"]["images"][0]["url"], decode_image) == (256, 96)  # 800x300


def test_expand_accepts_the_official_helper_example_just_under_three_times(
    client: TestClient, kling_headers: dict[str, str]
) -> None:
    body = _expand_body(
        image=SUBJECT_URL,
        up_expansion_ratio=0.1495,
        down_expansion_ratio=0.1495,
        left_expansion_ratio=0.6547,
        right_expansion_ratio=0.6547,
    )

    assert post(client, kling_headers, EXPAND, body)["task_status"] == "submitted"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"up_expansion_ratio": 1.0, "left_expansion_ratio": 0.6}, "up_expansion_ratio", id="area-3.2x"),
        pytest.param({"left_expansion_ratio": 2.5}, "left_expansion_ratio", id="ratio-above-2"),
        pytest.param({"down_expansion_ratio": -0.1}, "down_expansion_ratio", id="ratio-negative"),
        pytest.param({"right_expansion_ratio": "0.5"}, "right_expansion_ratio", id="ratio-string"),
        pytest.param({"right_expansion_ratio": None}, "right_expansion_ratio", id="ratio-missing"),
        pytest.param({"image": None}, "image", id="image-missing"),
        pytest.param({"image": "data:image/png;base64," + png_base64()}, "image", id="image-data-uri"),
        pytest.param({"n": 0}, "n", id="n"),
        pytest.param({"prompt": "x" * 2501}, "prompt", id="prompt-too-long"),
    ],
)
def test_expand_invalid_parameters_are_400_1201_naming_the_field(
    client: TestClient, kling_headers: dict[str, str], overrides: dict[str, Any], field: str
) -> None:
    body = {key: value for key, value in _expand_body(**overrides).items() if value is not None}

    assert field in rejected(client, kling_headers, EXPAND, body)


# -- kolors-virtual-try-on -------------------------------------------------------------------------------------


def test_try_on_delivers_one_image_shaped_like_the_person(
    client: TestClient, kling_headers: dict[str, str], decode_image: Decode
) -> None:
    body = {"model_name": "kolors-virtual-try-on-v1-5", "human_image": png_base64(300, 600), "cloth_image": SUBJECT_URL}
    created = post(client, kling_headers, TRY_ON, body)

    done = query(client, kling_headers, TRY_ON, created["task_id"])

    assert done["task_status"] == "succeed"
    assert done["final_unit_deduction"] == "1"
    [image] = done["task_result"]["images"]
    assert image_size(client, image["url"], decode_image) == (128, 256)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"cloth_image": SUBJECT_URL}, "human_image", id="no-human"),
        pytest.param({"human_image": SUBJECT_URL}, "cloth_image", id="no-cloth"),
        pytest.param({"human_image": SUBJECT_URL, "cloth_image": "no !!"}, "cloth_image", id="bad-cloth"),
        pytest.param(
            {"human_image": SUBJECT_URL, "cloth_image": SUBJECT_URL, "model_name": "kolors-virtual-try-on-v3"},
            "model_name",
            id="model",
        ),
    ],
)
def test_try_on_invalid_parameters_are_400_1201_naming_the_field(
    client: TestClient, kling_headers: dict[str, str], body: dict[str, Any], field: str
) -> None:
    assert field in rejected(client, kling_headers, TRY_ON, body)


def test_try_on_reads_magic_markers_from_its_image_urls(client: TestClient, kling_headers: dict[str, str]) -> None:
    moderated = client.post(
        TRY_ON, json={"human_image": SUBJECT_URL + "?[moderated]", "cloth_image": SUBJECT_URL}, headers=kling_headers
    )
    failing = post(client, kling_headers, TRY_ON, {"human_image": SUBJECT_URL, "cloth_image": SUBJECT_URL + "#[fail]"})

    assert (moderated.status_code, moderated.json()["code"]) == (400, 1301)
    done = query(client, kling_headers, TRY_ON, failing["task_id"])
    assert done["task_status"] == "failed" and "failed" in done["task_status_msg"]


def test_try_on_tasks_hold_slots_of_their_own_resource_pack(client: TestClient, kling_headers: dict[str, str]) -> None:
    client.put("/_emulator/config", json={"kling": {"concurrency_limit": 2}})
    post(client, kling_headers, GENERATIONS, {"prompt": "busy [latency=30]", "n": 2})  # image pack full
    body = {"human_image": SUBJECT_URL + "?[latency=30]", "cloth_image": SUBJECT_URL}

    post(client, kling_headers, TRY_ON, body)
    post(client, kling_headers, TRY_ON, body)
    third = client.post(TRY_ON, json=body, headers=kling_headers)
    more_images = client.post(GENERATIONS, json={"prompt": "one more [latency=30]"}, headers=kling_headers)

    assert (third.status_code, third.json()["code"]) == (429, 1303)
    assert (more_images.status_code, more_images.json()["code"]) == (429, 1303)
