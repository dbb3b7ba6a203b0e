"""``stream: true`` answers: the events a job turns into, in OpenAI's shapes, checked with the SDK's own types."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from openai.types import ImageEditStreamEvent, ImageGenStreamEvent
from pydantic import TypeAdapter

from producer.http.image_events import EventKind, job_events
from shared.views import ErrorView, ImageView, JobView

USAGE = {
    "input_tokens": 12,
    "input_tokens_details": {"image_tokens": 0, "text_tokens": 12},
    "output_tokens": 544,
    "total_tokens": 556,
}


def _view(status: str = "succeeded", images: int = 2, **reported: Any) -> JobView:
    return JobView(
        id="job1",
        task_id="job1",
        status=status,
        model="gpt-image-1",
        model_name=None,
        upstream_model="gpt-image-1",
        operation="text2img",
        priority="normal",
        external_task_id=None,
        created=0,
        created_at=0,
        updated_at=0,
        finished_at=None,
        poll_count=0,
        submit_attempts=1,
        data=[ImageView(url=f"http://files/{i}", content_type="image/png", width=64, height=32) for i in range(images)],
        cost=None,
        error=ErrorView(code="content_policy_violation", message="blocked") if status == "failed" else None,
        **reported,
    )


def _events(
    view: JobView, *, done: bool = True, partials: int = 0, kind: EventKind = "image_generation"
) -> list[tuple[str, dict[str, Any]]]:
    async def finished() -> bool:
        return done

    async def load(_job_id: str) -> JobView:
        return view

    async def images(_job_id: str) -> list[bytes]:
        return [b"final-%d" % i for i in range(len(view.data))]

    async def partial_images(_job_id: str) -> list[bytes]:
        return [b"partial-%d" % i for i in range(partials)]

    async def collect() -> list[bytes]:
        stream = job_events(
            "job1", kind=kind, finished=finished(), load=load, read_images=images, read_partials=partial_images
        )
        return [chunk async for chunk in stream]

    parsed = []
    for chunk in asyncio.run(collect()):
        event_line, data_line, blank = chunk.decode().split("\n", 2)
        assert event_line.startswith("event: ") and data_line.startswith("data: ") and blank == "\n"
        parsed.append((event_line.removeprefix("event: "), json.loads(data_line.removeprefix("data: "))))
    return parsed


def test_each_image_gets_its_partials_then_its_completed_event_in_the_sdks_shapes() -> None:
    view = _view(size="1024x1024", quality="low", background="opaque", output_format="png", usage=USAGE)

    events = _events(view, partials=4)

    assert [name for name, _ in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    adapter: TypeAdapter[Any] = TypeAdapter(ImageGenStreamEvent)
    typed = [adapter.validate_python(data) for _, data in events]
    assert [getattr(event, "partial_image_index", None) for event in typed] == [0, 1, None, 0, 1, None]
    assert typed[2].usage.output_tokens == 0 and typed[5].usage.output_tokens == 544  # counted once, on the last
    assert (typed[5].size, typed[5].quality, typed[5].background) == ("1024x1024", "low", "opaque")


def test_without_a_report_the_stored_image_decides_and_edits_are_image_edit_events() -> None:
    events = _events(_view(images=1), kind="image_edit")

    [(name, data)] = events
    event = TypeAdapter(ImageEditStreamEvent).validate_python(data)
    assert name == event.type == "image_edit.completed"
    assert (event.size, event.output_format, event.quality, event.background) == ("64x32", "png", "auto", "auto")


def test_a_failed_job_ends_the_stream_with_its_error() -> None:
    [(name, data)] = _events(_view(status="failed", images=0))

    assert name == "error"
    assert data["error"]["code"] == "content_policy_violation" and data["error"]["message"] == "blocked"


def test_a_job_still_running_at_the_timeout_ends_the_stream_naming_the_task() -> None:
    [(name, data)] = _events(_view(status="running", images=0), done=False)

    assert name == "error"
    assert data["error"]["code"] == "task_still_running" and data["error"]["task_id"] == "job1"
