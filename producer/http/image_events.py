"""``stream: true``: a job's answer as Server-Sent Events in OpenAI's shapes, for the official SDK's iterator.

Generations answer ``image_generation.*`` events, edits ``image_edit.*``: per image, the partial images the
upstream streamed for it (``*.partial_image``, when ``partial_images`` was asked for and the upstream has
partials), then its ``*.completed`` event, each with the image as ``b64_json`` and the size, quality,
background and output format the upstream reported (else what the stored image shows). An upstream without
partials gives one completed event per image. The events are sent once the job has ended — the worker keeps
the partials it received and this stream relays them in order, not as they arrive. The job's token ``usage``
rides on the last completed event (earlier ones carry zero) so a client summing usage counts it once. A job
that fails, is cancelled or is still running at the sync timeout ends the stream with an ``error`` event,
which the SDK raises as ``openai.APIError``.
Event shapes: https://platform.openai.com/docs/api-reference/images-streaming
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, Literal

from shared.jobs import JobStatus
from shared.views import ImageView, JobView

EventKind = Literal["image_generation", "image_edit"]

_FORMATS: Final = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}
_NO_USAGE: Final = {
    "input_tokens": 0,
    "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
    "output_tokens": 0,
    "total_tokens": 0,
}


async def job_events(
    job_id: str,
    *,
    kind: EventKind,
    finished: Awaitable[bool],
    load: Callable[[str], Awaitable[JobView]],
    read_images: Callable[[str], Awaitable[list[bytes]]],
    read_partials: Callable[[str], Awaitable[list[bytes]]],
) -> AsyncIterator[bytes]:
    """The events of one job: its completed images, or one error."""
    done = await finished
    view = await load(job_id)
    if not done:
        message = f"The task {job_id} is still running; get it at /v1/images/generations/{job_id}."
        yield _sse("error", _error(message, code="task_still_running", task_id=job_id))
        return
    if view.status != JobStatus.SUCCEEDED:
        code = view.error.code if view.error else f"task_{view.status}"
        message = view.error.message if view.error else f"The task ended as {view.status}."
        yield _sse("error", _error(message, code=code, task_id=job_id))
        return
    blobs = await read_images(job_id)
    partials = await read_partials(job_id)
    # the upstream streams each image's partials before it; an uneven count all go before the first image
    per_image = len(partials) // len(blobs) if blobs and len(partials) % len(blobs) == 0 else len(partials)
    last = len(blobs) - 1
    for index, (blob, image) in enumerate(zip(blobs, view.data, strict=True)):
        mine = partials[index * per_image : (index + 1) * per_image] if per_image else []
        for partial_index, partial in enumerate(mine):
            yield _sse(f"{kind}.partial_image", partial_event(view, image, partial, kind=kind, index=partial_index))
        event = completed_event(view, image, blob, kind=kind, with_usage=index == last)
        yield _sse(event["type"], event)


def completed_event(
    view: JobView, image: ImageView, blob: bytes, *, kind: EventKind, with_usage: bool
) -> dict[str, Any]:
    """``image_generation.completed`` / ``image_edit.completed`` for one stored image."""
    size = view.size or (f"{image.width}x{image.height}" if image.width and image.height else "auto")
    return {
        "type": f"{kind}.completed",
        "b64_json": base64.b64encode(blob).decode("ascii"),
        "created_at": int(time.time()),
        "size": size,
        "quality": view.quality or "auto",
        "background": view.background or "auto",
        "output_format": view.output_format or _FORMATS.get(image.content_type, "png"),
        "usage": (view.usage or _NO_USAGE) if with_usage else _NO_USAGE,
        "task_id": view.id,
    }


def partial_event(view: JobView, image: ImageView, blob: bytes, *, kind: EventKind, index: int) -> dict[str, Any]:
    """``image_generation.partial_image`` / ``image_edit.partial_image``: one partial image."""
    event = completed_event(view, image, blob, kind=kind, with_usage=False)
    del event["usage"]
    return event | {"type": f"{kind}.partial_image", "partial_image_index": index}


def _error(message: str, *, code: str, task_id: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "image_generation_error", "param": None, "code": code,
                      "task_id": task_id}}  # fmt: skip


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
