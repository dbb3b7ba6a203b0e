"""Reading an image-edit body: multipart as the openai SDK sends it, or JSON, into unified-request fields.

Multipart: a file in ``image`` (one) or ``image[]`` (several), an optional ``mask`` file, every other field
as text; files become data URIs (the worker hands each upstream the form it takes). List fields may repeat
(``image_urls`` twice, or ``image_urls[]``) or carry a JSON array; object lists (``subject_image_list`` …)
carry JSON. JSON: the unified request as is, input images as URL, data URI or raw base64.

Limits: each image at most ``max_image_bytes`` (413 naming the field), the body at most what the allowed
files and fields can add up to (413); files must be PNG, JPEG or WEBP (400 naming the field), a mask PNG.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any, Final, get_args, get_origin

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.types import Message

from producer.http.errors import ApiError
from shared.errors import InvalidRequestError
from shared.jobs import ImageRequest

#: fields that may be sent as files (everything else is text)
FILE_FIELDS: Final = frozenset({"image", "images", "mask", "human_image", "cloth_image", "scene_image", "style_image"})
#: fields whose text values are input images (size-checked when inline)
IMAGE_FIELDS: Final = frozenset({*FILE_FIELDS, "image_url", "image_urls"})
#: OpenAI takes up to 16 input images; one more for the mask
MAX_FILES: Final = 17
MAX_FIELDS: Final = 100
#: a text field (prompt, JSON lists of URLs) is at most this large
MAX_FIELD_BYTES: Final = 1024 * 1024
ACCEPTED_TYPES: Final = frozenset({"image/png", "image/jpeg", "image/webp"})
#: declared part types that say nothing (the bytes decide)
_UNTYPED: Final = frozenset({"", "application/octet-stream"})


def body_limit(max_image_bytes: int) -> int:
    """The largest edit body worth reading: every allowed file at its limit, plus the text fields."""
    return MAX_FILES * max_image_bytes + MAX_FIELDS * 1024 + MAX_FIELD_BYTES


async def read_edit_fields(request: Request, *, max_image_bytes: int) -> tuple[dict[str, Any], bool]:
    """The request's fields, and whether they are text that still needs type conversion (multipart)."""
    limited = _limited(request, body_limit(max_image_bytes))
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type == "multipart/form-data":
        form = await limited.form(max_files=MAX_FILES, max_fields=MAX_FIELDS, max_part_size=MAX_FIELD_BYTES)
        try:
            return await form_fields(form, max_image_bytes=max_image_bytes), True
        finally:
            await form.close()
    if media_type == "application/json" or media_type.endswith("+json"):
        fields = _json_object(await limited.body())
        check_inline_sizes(fields, max_image_bytes=max_image_bytes)
        return fields, False
    raise ApiError(
        400,
        "The request body must be multipart/form-data or application/json.",
        code="unsupported_content_type",
    )


async def form_fields(form: FormData, *, max_image_bytes: int) -> dict[str, Any]:
    """Multipart items → fields: files as data URIs, ``name[]`` and repeated names as lists."""
    collected: dict[str, list[Any]] = {}
    bracketed: set[str] = set()
    for key, value in form.multi_items():
        name = key.removesuffix("[]")
        if name != key:
            bracketed.add(name)
        if isinstance(value, UploadFile):
            if name not in FILE_FIELDS:
                raise InvalidRequestError(f"Invalid value for '{name}': expected text, got a file.", param=name)
            collected.setdefault(name, []).append(await _data_uri(name, value, max_image_bytes))
        else:
            collected.setdefault(name, []).append(value)
    images = collected.pop("image", [])
    fields: dict[str, Any] = {}
    if len(images) == 1 and "image" not in bracketed:
        fields["image"] = images[0]
    elif images:
        collected["images"] = images + collected.get("images", [])
    for name, values in collected.items():
        if _is_list_field(name):
            fields[name] = _list_value(name, values)
        elif len(values) > 1:
            raise InvalidRequestError(f"Invalid value for '{name}': given more than once.", param=name)
        else:
            fields[name] = values[0]
    return fields


def check_inline_sizes(fields: Mapping[str, Any], *, max_image_bytes: int) -> None:
    """413 naming the field for a data URI / base64 image larger than the limit once decoded."""
    for name in IMAGE_FIELDS & fields.keys():
        value = fields[name]
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and _decoded_size(item) > max_image_bytes:
                raise _too_large(name, max_image_bytes)


def sniff_image_type(data: bytes) -> str | None:
    """``image/png``, ``image/jpeg`` or ``image/webp`` from the file's first bytes; None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


async def _data_uri(name: str, upload: UploadFile, max_image_bytes: int) -> str:
    if upload.size is not None and upload.size > max_image_bytes:
        raise _too_large(name, max_image_bytes)
    declared = (upload.content_type or "").split(";", 1)[0].strip().lower()
    if declared not in ACCEPTED_TYPES | _UNTYPED:
        raise InvalidRequestError(
            f"Invalid file for '{name}': unsupported content type '{declared}' (expected PNG, JPEG or WEBP).",
            param=name,
            code="invalid_image_format",
        )
    data = await upload.read()
    if len(data) > max_image_bytes:
        raise _too_large(name, max_image_bytes)
    mime_type = sniff_image_type(data)
    if mime_type is None:
        raise InvalidRequestError(
            f"Invalid file for '{name}': not a PNG, JPEG or WEBP image.", param=name, code="invalid_image_format"
        )
    if name == "mask" and mime_type != "image/png":
        raise InvalidRequestError("Invalid file for 'mask': the mask must be a PNG image.", param="mask")
    return f"data:{mime_type};base64,{base64.b64encode(data).decode('ascii')}"


def _is_list_field(name: str) -> bool:
    field = ImageRequest.model_fields.get(name)
    if field is None:
        return False
    return any(get_origin(arg) is list for arg in (*get_args(field.annotation), field.annotation))


def _list_value(name: str, values: list[Any]) -> list[Any]:
    """Repeated values in order; a value holding a JSON array or object is expanded / decoded."""
    items: list[Any] = []
    for value in values:
        text = value.strip() if isinstance(value, str) else ""
        if not text.startswith(("[", "{")):
            items.append(value)
            continue
        try:
            decoded = json.loads(text)
        except json.JSONDecodeError:
            raise InvalidRequestError(f"Invalid value for '{name}': not valid JSON.", param=name) from None
        items.extend(decoded if isinstance(decoded, list) else [decoded])
    return items


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        decoded = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        position = exc.pos if isinstance(exc, json.JSONDecodeError) else 0
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body", position), "msg": "JSON decode error", "input": {}}]
        ) from None
    if not isinstance(decoded, dict):
        raise InvalidRequestError("The request body must be a JSON object.", param=None)
    return decoded


def _decoded_size(value: str) -> int:
    """Bytes a data URI or raw base64 string decodes to (0 for URLs)."""
    if value.startswith(("http://", "https://")):
        return 0
    encoded = "".join((value.split(",", 1)[1] if value.startswith("data:") else value).split())
    return len(encoded) * 3 // 4 - encoded[-2:].count("=")


def _too_large(name: str, limit: int) -> ApiError:
    return ApiError(413, f"The image in '{name}' is larger than {limit} bytes.", param=name, code="image_too_large")


def _limited(request: Request, limit: int) -> Request:
    """The same request, refusing (413) a body larger than ``limit`` as soon as it shows."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _body_too_large(limit)
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _body_too_large(limit)
        return message

    return Request(request.scope, receive)


def _body_too_large(limit: int) -> ApiError:
    return ApiError(413, f"The request body is larger than {limit} bytes.", code="request_too_large")
