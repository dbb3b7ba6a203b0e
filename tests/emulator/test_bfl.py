"""BFL dialect: x-key auth, submit → polling_url, the six poll statuses, signed expiring samples, 422 items,
markers, knobs and the 24-task concurrency limit."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from emulator.app import create_app
from emulator.bfl.routes import BflEmulator
from emulator.knobs import Knobs
from emulator.markers import GARBAGE_HTML

KEY = "test-bfl-key"
HEADERS = {"x-key": KEY}
Decode = Callable[[bytes | str], Image.Image]


def _png_b64() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture
def bfl(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The whole emulator app with a known BFL key and zero BFL latency."""
    monkeypatch.setenv("EMULATOR_BFL_API_KEY", KEY)
    with TestClient(create_app()) as client:
        response = client.put("/_emulator/config", json={"bfl": {"latency": {"kind": "fixed", "value_s": 0}}})
        assert response.status_code == 200
        yield client


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def timed(clock: Clock) -> Iterator[tuple[TestClient, Knobs]]:
    """A BFL-only app on a fake clock (latency 10 s, result links valid 600 s)."""
    knobs = Knobs(seed=1)
    knobs.update({"bfl": {"latency": {"kind": "fixed", "value_s": 10}}})
    emulator = BflEmulator(knobs, api_key=KEY, clock=clock)
    app = FastAPI()
    app.include_router(emulator.build_router(), prefix="/bfl")
    app.include_router(emulator.files_router())
    with TestClient(app) as test_client:
        yield test_client, knobs


def submit(client: TestClient, model: str = "flux-pro-1.1", headers: dict[str, str] = HEADERS, **body: Any) -> Any:
    return client.post(f"/bfl/v1/{model}", json={"prompt": "a lighthouse", **body}, headers=headers)


def poll(client: TestClient, polling_url: str, headers: dict[str, str] = HEADERS) -> Any:
    return client.get(polling_url, headers=headers)


def stats(client: TestClient) -> dict[str, int]:
    result: dict[str, int] = client.get("/_emulator/stats").json()["bfl"]
    return result


# -- submit and poll ---------------------------------------------------------------------------------


def test_submit_answers_an_id_and_a_polling_url_back_to_the_emulator(bfl: TestClient) -> None:
    response = submit(bfl, width=512, height=512)

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"id", "polling_url"}
    assert body["polling_url"] == f"http://testserver/bfl/v1/get_result?id={body['id']}"


def test_flux_2_answers_cost_and_megapixels(bfl: TestClient) -> None:
    body = submit(bfl, "flux-2-pro", width=1024, height=1024).json()

    assert body["cost"] == 3.0
    assert (body["input_mp"], body["output_mp"]) == (0.0, 1.05)


def test_a_ready_task_has_a_signed_sample_of_the_requested_size_and_format(
    bfl: TestClient, decode_image: Decode
) -> None:
    created = submit(bfl, width=768, height=512, seed=42, output_format="png").json()

    answer = poll(bfl, created["polling_url"]).json()

    assert answer["id"] == created["id"]
    assert answer["status"] == "Ready"
    assert (answer["progress"], answer["details"], answer["preview"]) == (None, None, None)
    result = answer["result"]
    assert result["seed"] == 42 and result["prompt"] == "a lighthouse"
    assert result["end_time"] >= result["start_time"]
    sample = result["sample"]
    assert sample.startswith(f"http://testserver/_emulator/files/bfl/{created['id']}/sample.png?se=")
    assert "&sig=" in sample
    image = bfl.get(sample)
    assert (image.status_code, image.headers["content-type"]) == (200, "image/png")
    assert (decode_image(image.content).format, decode_image(image.content).size) == ("PNG", (768, 512))


def test_the_default_output_is_jpeg(bfl: TestClient, decode_image: Decode) -> None:
    created = submit(bfl).json()

    sample = poll(bfl, created["polling_url"]).json()["result"]["sample"]

    assert "/sample.jpeg?" in sample
    picture = decode_image(bfl.get(sample).content)
    assert (picture.format, picture.size) == ("JPEG", (1024, 768))


@pytest.mark.parametrize(
    ("model", "body", "size"),
    [
        ("flux-kontext-pro", {}, (1024, 1024)),
        ("flux-kontext-max", {"aspect_ratio": "16:9", "input_image": _png_b64()}, (1376, 768)),
        ("flux-pro-1.1-ultra", {}, (2720, 1536)),
        ("flux-pro-1.1-ultra", {"aspect_ratio": "9:21"}, (1344, 3136)),
    ],
)
def test_aspect_ratio_endpoints_render_their_megapixels(
    bfl: TestClient, decode_image: Decode, model: str, body: dict[str, Any], size: tuple[int, int]
) -> None:
    created = submit(bfl, model, **body).json()

    sample = poll(bfl, created["polling_url"]).json()["result"]["sample"]

    assert decode_image(bfl.get(sample).content).size == size


def test_pending_has_progress_then_ready(timed: tuple[TestClient, Knobs], clock: Clock) -> None:
    client, _ = timed
    created = submit(client).json()

    clock.now += 4
    pending = poll(client, created["polling_url"]).json()
    clock.now += 6
    ready = poll(client, created["polling_url"]).json()

    assert (pending["status"], pending["progress"], pending["result"]) == ("Pending", 0.4, None)
    assert ready["status"] == "Ready"
    assert ready["result"]["duration"] == 10.0


def test_sample_links_expire_and_cannot_be_forged(timed: tuple[TestClient, Knobs], clock: Clock) -> None:
    client, _ = timed
    created = submit(client).json()
    clock.now += 10
    sample = poll(client, created["polling_url"]).json()["result"]["sample"]
    assert client.get(sample).status_code == 200

    forged = client.get(sample.replace("sig=", "sig=0"))
    clock.now += 600
    expired = client.get(sample)

    assert (forged.status_code, forged.headers["content-type"]) == (403, "application/xml")
    assert "<Code>AuthenticationFailed</Code>" in forged.text
    assert expired.status_code == 403
    assert "time frame" in expired.text


def test_an_unknown_task_is_task_not_found(bfl: TestClient) -> None:
    response = bfl.get("/bfl/v1/get_result", params={"id": "nope"}, headers=HEADERS)

    assert response.status_code == 200
    assert response.json() == {
        "id": "nope",
        "status": "Task not found",
        "result": None,
        "progress": None,
        "details": None,
        "preview": None,
    }


def test_reset_forgets_tasks(bfl: TestClient) -> None:
    created = submit(bfl).json()

    bfl.post("/_emulator/reset")

    assert poll(bfl, created["polling_url"]).json()["status"] == "Task not found"


# -- auth and validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status", "detail"),
    [({}, 403, "Not authenticated"), ({"x-key": "wrong"}, 401, "Invalid API key")],
    ids=["missing", "wrong"],
)
def test_the_x_key_is_required_on_submit_and_poll(
    bfl: TestClient, headers: dict[str, str], status: int, detail: str
) -> None:
    created = submit(bfl).json()

    refused_submit = submit(bfl, headers=headers)
    refused_poll = poll(bfl, created["polling_url"], headers=headers)
    bearer = submit(bfl, headers={"Authorization": f"Bearer {KEY}"})

    assert (refused_submit.status_code, refused_submit.json()) == (status, {"detail": detail})
    assert (refused_poll.status_code, refused_poll.json()) == (status, {"detail": detail})
    assert bearer.status_code == 403
    assert stats(bfl) == {"submits": 3, "queries": 1, "rejected": 3}


def test_an_unknown_model_endpoint_is_404(bfl: TestClient) -> None:
    response = submit(bfl, "flux-9-ultra")

    assert (response.status_code, response.json()) == (404, {"detail": "Not Found"})


@pytest.mark.parametrize(
    ("model", "body", "field"),
    [
        ("flux-pro-1.1", {"width": 1000}, "width"),
        ("flux-pro-1.1", {"height": 1472}, "height"),
        ("flux-pro-1.1", {"width": 128}, "width"),
        ("flux-2-pro", {"width": 1000}, "width"),
        ("flux-pro-1.1", {"width": "1024"}, "width"),
        ("flux-kontext-pro", {"aspect_ratio": "3:1"}, "aspect_ratio"),
        ("flux-kontext-pro", {"aspect_ratio": "wide"}, "aspect_ratio"),
        ("flux-kontext-pro", {"prompt": None}, "prompt"),
        ("flux-kontext-pro", {"input_image": f"data:image/png;base64,{_png_b64()}"}, "input_image"),
        ("flux-kontext-pro", {"input_image": "bm90IGFuIGltYWdl"}, "input_image"),
        ("flux-2-pro", {"input_image_8": 7}, "input_image_8"),
        ("flux-pro-1.1", {"output_format": "webp"}, "output_format"),
        ("flux-pro-1.1", {"safety_tolerance": 7}, "safety_tolerance"),
        ("flux-2-pro", {"safety_tolerance": 6}, "safety_tolerance"),
        ("flux-pro-1.1-ultra", {"raw": "yes"}, "raw"),
    ],
)
def test_invalid_parameters_are_422_items_naming_the_field(
    bfl: TestClient, model: str, body: dict[str, Any], field: str
) -> None:
    response = submit(bfl, model, **body)

    assert response.status_code == 422, response.text
    (item,) = response.json()["detail"]
    assert item["loc"] == ["body", field]
    assert item["msg"] and item["type"]


def test_valid_edges_and_unknown_keys_are_accepted(bfl: TestClient) -> None:
    image = _png_b64()
    assert submit(bfl, "flux-2-pro", width=1008, height=2048, input_image=image, input_image_8="https://x/y.png",
                  n=4, safety_tolerance=5).status_code == 200  # fmt: skip
    assert submit(bfl, "flux-pro-1.1", width=256, height=1440, image_prompt=image).status_code == 200
    assert submit(bfl, "flux-kontext-max", aspect_ratio="21:9", input_image="https://x/y.png").status_code == 200


def test_a_body_that_is_not_a_json_object_is_422(bfl: TestClient) -> None:
    response = bfl.post("/bfl/v1/flux-pro-1.1", content=b"[1]", headers={**HEADERS, "content-type": "application/json"})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]


# -- markers and knobs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("marker", "status", "text"),
    [
        ("[moderated]", 400, "Request Moderated"),
        ("[429]", 429, "Rate limit"),
        ("[quota]", 402, "Insufficient credits"),
        ("[500]", 500, "Internal Server Error"),
    ],
)
def test_submit_time_markers(bfl: TestClient, marker: str, status: int, text: str) -> None:
    response = submit(bfl, prompt=f"a fox {marker}")

    assert response.status_code == status
    assert text in response.json()["detail"]
    if status == 429:
        assert response.headers["retry-after"] == "1"
    assert stats(bfl)["rejected"] == 1


def test_garbage_is_html(bfl: TestClient) -> None:
    response = submit(bfl, prompt="[garbage]")

    assert (response.status_code, response.text) == (200, GARBAGE_HTML)


@pytest.mark.parametrize(
    ("marker", "status", "details"),
    [
        ("[moderated-async]", "Request Moderated", {"Moderation Reasons": ["Emulated moderation"]}),
        ("[fail]", "Error", {"error": "Generation failed, please try again."}),
    ],
)
def test_poll_time_markers(bfl: TestClient, marker: str, status: str, details: dict[str, Any]) -> None:
    created = submit(bfl, prompt=f"a fox {marker}").json()

    answer = poll(bfl, created["polling_url"]).json()

    assert (answer["status"], answer["result"], answer["details"]) == (status, None, details)


def test_moderated_requests_are_reported_at_once(timed: tuple[TestClient, Knobs]) -> None:
    client, _ = timed
    created = submit(client, prompt="[moderated-async]").json()

    assert poll(client, created["polling_url"]).json()["status"] == "Request Moderated"


def test_hang_and_latency_markers(timed: tuple[TestClient, Knobs], clock: Clock) -> None:
    client, _ = timed
    hanging = submit(client, prompt="[hang]").json()
    quick = submit(client, prompt="[latency=1]").json()

    clock.now += 3600

    assert poll(client, hanging["polling_url"]).json()["status"] == "Pending"
    assert poll(client, quick["polling_url"]).json()["result"]["duration"] == 1.0


@pytest.mark.parametrize(
    ("knob", "status"), [("error_rate", 500), ("rate_limit_rate", 429)], ids=["error", "rate-limit"]
)
def test_random_fault_knobs(bfl: TestClient, knob: str, status: int) -> None:
    bfl.put("/_emulator/config", json={"bfl": {knob: 1.0}})

    assert submit(bfl).status_code == status


def test_failure_rate_ends_tasks_in_error(bfl: TestClient) -> None:
    bfl.put("/_emulator/config", json={"bfl": {"failure_rate": 1.0}})
    created = submit(bfl).json()

    assert poll(bfl, created["polling_url"]).json()["status"] == "Error"


def test_24_active_tasks_then_429_until_one_finishes(timed: tuple[TestClient, Knobs], clock: Clock) -> None:
    client, knobs = timed
    assert knobs.config.bfl.concurrency_limit == 24
    for _ in range(23):
        assert submit(client).status_code == 200
    assert submit(client, prompt="[hang]").status_code == 200

    refused = submit(client)
    clock.now += 10
    accepted = submit(client)

    assert refused.status_code == 429
    assert "active tasks" in refused.json()["detail"]
    assert accepted.status_code == 200
    assert knobs.stats.bfl.rejected == 1


def test_the_concurrency_limit_is_a_knob(bfl: TestClient) -> None:
    bfl.put("/_emulator/config", json={"bfl": {"concurrency_limit": 1}})
    assert submit(bfl, prompt="[hang]").status_code == 200

    assert submit(bfl).status_code == 429
    bfl.put("/_emulator/config", json={"bfl": {"concurrency_limit": None}})
    assert submit(bfl).status_code == 200
