"""The whole chain through the official ``openai`` SDK: API → Redis → worker → emulator → files → webhook → DB."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from PIL import Image
from standardwebhooks.webhooks import Webhook

from shared.catalog import load_catalog
from tests.e2e.conftest import Stack
from tests.integration.harness import WebhookReceiver, wait_for_requests
from tests.support import API_KEY, tenant_webhook_secret

pytestmark = pytest.mark.e2e

KLING_PRICE = load_catalog().models["kling-image"].variants["kling-v2-1"].prices["text2img"].amount


def sdk(stack: Stack, api_key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.api_url}/v1", api_key=api_key, max_retries=0, timeout=120)


def open_png(data: bytes) -> Image.Image:
    picture = Image.open(io.BytesIO(data))
    picture.load()
    assert picture.format == "PNG"
    return picture


def download_png(url: str) -> Image.Image:
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return open_png(response.content)


@pytest.fixture
def stack(start_stack: Callable[[str], Stack], database_url: str) -> Stack:
    return start_stack(database_url)


def test_sync_generations_through_the_openai_sdk(stack: Stack) -> None:
    client = sdk(stack)

    kling = client.images.generate(
        model="kling-image", prompt="a red fox in the snow", extra_body={"model_name": "kling-v2-1"}
    )

    assert kling.data is not None and len(kling.data) == 1
    url = kling.data[0].url
    assert url is not None and url.startswith(f"{stack.api_url}/v1/files/")
    extra = kling.model_extra or {}
    [stored] = stack.rows.images(extra["id"])
    assert download_png(url).size == (stored.width, stored.height)
    assert extra["status"] == "succeeded"
    assert extra["model_name"] == "kling-v2-1"
    assert extra["poll_count"] >= 1
    assert Decimal(str(extra["cost"]["amount"])) == KLING_PRICE
    assert extra["cost"]["currency"] == "credits"
    assert httpx.get(url.replace("signature=", "signature=0"), timeout=10).status_code == 403

    gpt = client.images.generate(model="gpt-image-1", prompt="a blue whale", response_format="b64_json")

    assert gpt.data is not None and len(gpt.data) == 1
    assert gpt.data[0].url is None
    b64 = gpt.data[0].b64_json
    assert b64 is not None
    gpt_extra = gpt.model_extra or {}
    [stored_gpt] = stack.rows.images(gpt_extra["id"])
    assert open_png(base64.b64decode(b64)).size == (stored_gpt.width, stored_gpt.height)
    assert gpt_extra["status"] == "succeeded" and gpt_extra["poll_count"] == 0
    assert stack.rows.job(gpt_extra["id"]).status == "succeeded"
    assert stack.rows.job(extra["id"]).status == "succeeded"

    model_ids = {model.id for model in client.models.list()}
    assert {"kling-image", "gpt-image-1"} <= model_ids

    with pytest.raises(openai.BadRequestError) as refused:
        client.images.generate(model="kling-image", prompt="a fox", extra_body={"model_name": "kling-v9"})
    assert refused.value.status_code == 400
    assert isinstance(refused.value.body, dict) and refused.value.body["param"] == "model_name"
    with pytest.raises(openai.BadRequestError) as moderated:
        client.images.generate(model="kling-image", prompt="[moderated] a fox", extra_body={"model_name": "kling-v2-1"})
    assert moderated.value.code == "content_policy_violation"
    assert moderated.value.response.headers["x-task-id"]
    assert stack.rows.job(moderated.value.response.headers["x-task-id"]).error_code == "content_policy_violation"
    with pytest.raises(openai.AuthenticationError):
        sdk(stack, api_key="sk-test-" + "z" * 24).images.generate(model="gpt-image-1", prompt="a whale")


def test_async_job_with_a_webhook_through_the_openai_sdk(
    stack: Stack, webhook_receiver: Callable[..., WebhookReceiver]
) -> None:
    receiver = webhook_receiver()
    client = sdk(stack)

    raw = client.images.with_raw_response.generate(
        model="kling-image",
        prompt="a lighthouse at dusk",
        extra_body={"callback_url": receiver.url, "model_name": "kling-v2-1"},
    )

    assert raw.status_code == 202
    accepted: dict[str, Any] = raw.parse().model_extra or {}
    task_id = accepted["id"]
    assert accepted["object"] == "image.generation.task"
    assert accepted["status"] in ("queued", "submitting", "running")  # the worker may already have it
    assert accepted["cost"] is None

    [delivery] = wait_for_requests(receiver, 1, timeout_s=60)
    event: dict[str, Any] = Webhook(tenant_webhook_secret()).verify(delivery.body, delivery.headers)
    assert event["type"] == "job.succeeded"
    assert event["data"]["id"] == task_id

    task = stack.task(task_id)
    assert task["status"] == "succeeded"
    assert task["error"] is None
    assert task["poll_count"] >= 1
    assert Decimal(str(task["cost"]["amount"])) == KLING_PRICE
    assert (task["cost"]["per"], task["cost"]["quantity"]) == ("image", 1)
    assert len(task["data"]) == 1
    download_png(task["data"][0]["url"])
    by_query = stack.get("/v1/images/generations", task_id=task_id)
    assert by_query.status_code == 200
    assert {key: by_query.json()[key] for key in ("id", "status", "cost", "poll_count")} == {
        key: task[key] for key in ("id", "status", "cost", "poll_count")
    }
    for key in ("status", "cost", "poll_count", "finished_at", "model_name"):
        assert event["data"][key] == task[key], key

    rows = stack.rows
    job = rows.job(task_id)
    assert job.status == "succeeded"
    assert job.callback_url == receiver.url
    assert job.poll_count == task["poll_count"]
    assert job.finished_at is not None and int(job.finished_at.timestamp()) == task["finished_at"]
    assert rows.event_path(task_id) == ["queued", "submitting", "running", "succeeded"]
    [cost] = rows.costs(task_id)
    assert Decimal(cost.amount) == KLING_PRICE and cost.currency == "credits"
    [webhook_row] = rows.deliveries(task_id)
    assert (webhook_row.state, webhook_row.response_status, webhook_row.attempt) == ("delivered", 200, 1)
    assert webhook_row.webhook_id == delivery.headers["webhook-id"] == f"msg_{task_id}"
    assert webhook_row.url == receiver.url
    assert len(receiver.received()) == 1


def _png_file(name: str, size: tuple[int, int], *, transparent: bool = False) -> tuple[str, bytes, str]:
    buffer = io.BytesIO()
    Image.new("RGBA", size, (0, 0, 0, 0) if transparent else (200, 40, 40, 255)).save(buffer, "PNG")
    return name, buffer.getvalue(), "image/png"


def test_gpt_image_answers_b64_json_with_what_openai_reports_and_costs_its_usage(stack: Stack) -> None:
    client = sdk(stack)

    answer = client.images.generate(model="gpt-image-1", prompt="a lighthouse at dusk")

    assert answer.data is not None and len(answer.data) == 1
    assert answer.data[0].url is None and answer.data[0].b64_json is not None
    image = open_png(base64.b64decode(answer.data[0].b64_json))
    assert (answer.size, answer.quality, answer.background, answer.output_format) == (
        f"{image.width}x{image.height}",
        "high",  # the emulator answers auto quality as high, as OpenAI may
        "opaque",
        "png",
    )
    assert answer.usage is not None and answer.usage.output_tokens > 0
    extra = answer.model_extra or {}
    [cost] = stack.rows.costs(extra["id"])
    rates = load_catalog().models["gpt-image-1"].operations[-1].price
    assert rates is not None and rates.usage is not None
    assert cost.basis == "usage" and Decimal(cost.amount) == rates.usage.cost(answer.usage.model_dump())
    assert extra["cost"]["basis"] == "usage" and extra["cost"]["inputs"]["usage"] == answer.usage.model_dump()

    dalle = client.images.generate(model="dall-e-3", prompt="a lighthouse", size="1792x1024", quality="hd")
    assert dalle.data is not None and dalle.data[0].url is not None and dalle.data[0].b64_json is None
    dalle_cost = (dalle.model_extra or {})["cost"]
    assert (dalle_cost["basis"], Decimal(str(dalle_cost["amount"]))) == ("per_image", Decimal("0.12"))
    assert dalle_cost["inputs"] == {"quality": "hd", "size": "1792x1024"}


def test_stream_true_yields_partial_and_completed_events_through_the_sdk_iterator(stack: Stack) -> None:
    client = sdk(stack)

    events = list(
        client.images.generate(model="gpt-image-2", prompt="a fox", size="1280x720", n=2, stream=True, partial_images=2)
    )

    assert [event.type for event in events] == [
        *["image_generation.partial_image"] * 2,
        "image_generation.completed",
        *["image_generation.partial_image"] * 2,
        "image_generation.completed",
    ]
    partials = [event for event in events if event.type == "image_generation.partial_image"]
    assert [event.partial_image_index for event in partials] == [0, 1, 0, 1]
    completed = [event for event in events if event.type == "image_generation.completed"]
    for event in events:
        assert open_png(base64.b64decode(event.b64_json)).size == (1280, 720)
        assert (event.size, event.output_format) == ("1280x720", "png")
    assert completed[-1].usage.output_tokens > 0 and completed[0].usage.output_tokens == 0
    task_id = (events[-1].model_extra or {})["task_id"]
    assert stack.rows.job(task_id).status == "succeeded"
    assert len(stack.rows.images(task_id)) == 2  # partials are not results: two images, priced as two

    plain = list(client.images.generate(model="gpt-image-1", prompt="a fox", stream=True))
    assert [event.type for event in plain] == ["image_generation.completed"]
    kling = list(
        client.images.generate(
            model="kling-image", prompt="a fox", stream=True, extra_body={"model_name": "kling-v2-1"}
        )
    )
    assert [event.type for event in kling] == ["image_generation.completed"]  # an upstream without partials

    edit_events = list(
        client.images.edit(
            model="gpt-image-1", image=[_png_file("a.png", (64, 64))], prompt="make it blue", stream=True
        )
    )
    assert [event.type for event in edit_events] == ["image_edit.completed"]

    with pytest.raises(openai.APIError) as failed:
        list(client.images.generate(model="gpt-image-1", prompt="[moderated-async] a fox", stream=True))
    assert isinstance(failed.value.body, dict) and failed.value.body["code"] == "content_policy_violation"

    with pytest.raises(openai.BadRequestError) as refused:
        client.images.generate(model="gpt-image-1", prompt="a fox", stream=True, partial_images=4)
    assert isinstance(refused.value.body, dict) and refused.value.body["param"] == "partial_images"


def test_edit_with_two_images_and_a_mask_through_the_sdk(stack: Stack) -> None:
    client = sdk(stack)

    answer = client.images.edit(
        model="gpt-image-1",
        image=[_png_file("a.png", (64, 64)), _png_file("b.png", (64, 64))],
        mask=_png_file("mask.png", (64, 64), transparent=True),
        prompt="put them side by side",
    )

    assert answer.data is not None and answer.data[0].b64_json is not None
    open_png(base64.b64decode(answer.data[0].b64_json))
    extra = answer.model_extra or {}
    job = stack.rows.job(extra["id"])
    assert (job.status, job.operation) == ("succeeded", "edit")
    assert answer.usage is not None and answer.usage.input_tokens_details.image_tokens > 0
    assert stack.emulator.stats()["openai"]["requests"] >= 1
