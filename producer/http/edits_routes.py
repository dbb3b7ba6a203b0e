"""The OpenAI Images edits endpoint: ``POST /v1/images/edits``, multipart (as the openai SDK sends it) or JSON.

The uploaded files become input images of the unified request; from there an edit is a generation with
input images: the same validation, job, sync wait or async task, and answer (``openai_routes``).
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse

from producer.http.auth import CurrentTenant
from producer.http.context import ApiContext, api_context
from producer.http.openai_routes import answer_images
from producer.http.tasks import parse_request
from producer.http.uploads import read_edit_fields
from shared.errors import InvalidRequestError
from shared.jobs import ImageRequest

router = APIRouter(tags=["OpenAI Images"])
Context = Annotated[ApiContext, Depends(api_context)]

#: request fields that carry input images; an edit needs at least one of them
INPUT_IMAGE_FIELDS: Final = (
    "image",
    "images",
    "image_url",
    "image_urls",
    "image_list",
    "subject_image_list",
    "human_image",
    "cloth_image",
)


def require_input_image(request: ImageRequest) -> None:
    if not any(getattr(request, name) for name in INPUT_IMAGE_FIELDS):
        raise InvalidRequestError("'image' is required: an edit needs at least one input image.", param="image")


@router.post("/v1/images/edits", response_model=None)
async def create_edit(
    request: Request, tenant: CurrentTenant, context: Context, prefer: Annotated[str | None, Header()] = None
) -> JSONResponse | StreamingResponse:
    """Edit input images; waits for the job unless asked to answer asynchronously (as generations do)."""
    fields, from_form = await read_edit_fields(request, max_image_bytes=context.settings.max_image_bytes)
    payload = parse_request(fields, lax=from_form)
    require_input_image(payload)
    return await answer_images(payload, tenant, context, prefer, events="image_edit")
