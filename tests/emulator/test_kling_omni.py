"""Kling omni-image: single results, series results (``series_images``), references and per-model limits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.emulator.test_kling_endpoints import SUBJECT_URL, image_size, png_base64, post, query, rejected

OMNI = "/v1/images/omni-image"
Decode = Callable[[bytes | str], Image.Image]


def test_single_result_has_n_images_at_8_units(
    client: TestClient, kling_headers: dict[str, str], decode_image: Decode
) -> None:
    body = {"prompt": "dance on the beach", "n": 3, "aspect_ratio": "9:16", "external_task_id": "omni-1"}
    created = post(client, kling_headers, OMNI, body)

    done = query(client, kling_headers, OMNI, "omni-1")

    assert done["task_id"] == created["task_id"] and done["task_status"] == "succeed"
    assert done["final_unit_deduction"] == "24"
    result = done["task_result"]
    assert result["result_type"] == "single" and "series_images" not in result
    assert [image["index"] for image in result["images"]] == [0, 1, 2]
    assert image_size(client, result["images"][0]["url"], decode_image) == (144, 256)


def test_series_result_lists_series_amount_images_in_series_images(
    client: TestClient, kling_headers: dict[str, str]
) -> None:
    body = {
        "model_name": "kling-v3-omni",
        "prompt": "a comic strip <<<image_1>>>",
        "image_list": [{"image": png_base64()}],
        "element_list": [{"element_id": 835266081714884677}],
        "result_type": "series",
        "series_amount": 5,
        "n": 2,  # ignored for series
        "resolution": "4k",
    }
    created = post(client, kling_headers, OMNI, body)

    result = query(client, kling_headers, OMNI, created["task_id"])

    assert result["final_unit_deduction"] == str(5 * 16)
    assert result["task_result"]["result_type"] == "series"
    assert result["task_result"]["images"] == []
    assert [image["index"] for image in result["task_result"]["series_images"]] == [0, 1, 2, 3, 4]


def test_series_amount_auto_delivers_between_2_and_9(client: TestClient, kling_headers: dict[str, str]) -> None:
    body = {"model_name": "kling-v3-omni", "prompt": "p", "result_type": "series", "series_amount": "auto"}
    created = post(client, kling_headers, OMNI, body)

    series = query(client, kling_headers, OMNI, created["task_id"])["task_result"]["series_images"]

    assert 2 <= len(series) <= 9


def test_auto_aspect_ratio_follows_the_first_reference_image(
    client: TestClient, kling_headers: dict[str, str], decode_image: Decode
) -> None:
    body = {"prompt": "restyle", "image_list": [{"image": png_base64(400, 300)}], "aspect_ratio": "auto"}
    created = post(client, kling_headers, OMNI, body)

    url = query(client, kling_headers, OMNI, created["task_id"])["task_result"]["images"][0]["url"]

    assert image_size(client, url, decode_image) == (256, 192)


def test_series_holds_one_slot_per_image(client: TestClient, kling_headers: dict[str, str]) -> None:
    client.put("/_emulator/config", json={"kling": {"concurrency_limit": 6}})
    body = {"model_name": "kling-v3-omni", "prompt": "[latency=30]", "result_type": "series", "series_amount": 5}
    post(client, kling_headers, OMNI, body)

    response = client.post(OMNI, json={"prompt": "two more [latency=30]", "n": 2}, headers=kling_headers)

    assert (response.status_code, response.json()["code"]) == (429, 1303)
    post(client, kling_headers, OMNI, {"prompt": "one more [latency=30]"})


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"prompt": None}, "prompt", id="prompt-missing"),
        pytest.param({"prompt": "x" * 2501}, "prompt", id="prompt-too-long"),
        pytest.param({"model_name": "kling-v3"}, "model_name", id="model"),
        pytest.param({"resolution": "4k"}, "resolution", id="o1-no-4k"),
        pytest.param({"result_type": "series"}, "result_type", id="o1-no-series"),
        pytest.param({"result_type": "many"}, "result_type", id="result-type"),
        pytest.param(
            {"model_name": "kling-v3-omni", "result_type": "series", "series_amount": 10}, "series_amount", id="amount"
        ),
        pytest.param(
            {"model_name": "kling-v3-omni", "result_type": "series", "series_amount": "4"}, "series_amount", id="str"
        ),
        pytest.param({"n": 10}, "n", id="n"),
        pytest.param({"aspect_ratio": "5:4"}, "aspect_ratio", id="aspect-ratio"),
        pytest.param({"model_name": "kling-v3-omni", "aspect_ratio": "auto"}, "aspect_ratio", id="auto-text-only"),
        pytest.param({"image_list": [{"url": SUBJECT_URL}]}, "image_list[0].image", id="image-key"),
        pytest.param({"image_list": [{"image": png_base64(100, 100)}]}, "image_list[0].image", id="image-small"),
        pytest.param({"element_list": [{"element_id": "abc"}]}, "element_list[0].element_id", id="element-id"),
        pytest.param({"element_list": "835266081714884677"}, "element_list", id="elements-not-array"),
        pytest.param(
            {"image_list": [{"image": SUBJECT_URL}] * 6, "element_list": [{"element_id": 1}] * 5},
            "image_list and element_list",
            id="eleven-references",
        ),
    ],
)
def test_invalid_parameters_are_400_1201_naming_the_field(
    client: TestClient, kling_headers: dict[str, str], body: dict[str, Any], field: str
) -> None:
    merged = {"prompt": "a fox", **body}

    message = rejected(client, kling_headers, OMNI, {key: value for key, value in merged.items() if value is not None})

    assert field in message


def test_ten_references_are_accepted(client: TestClient, kling_headers: dict[str, str]) -> None:
    body = {"prompt": "p", "image_list": [{"image": SUBJECT_URL}] * 4, "element_list": [{"element_id": 7}] * 6}

    assert post(client, kling_headers, OMNI, body)["task_status"] == "submitted"
