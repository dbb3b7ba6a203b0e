"""The multipart side of OpenAI's ``POST /v1/images/edits``: reading the form and checking the files.

Images come as ``image`` (one file) or ``image[]`` (the SDK's list form), plus an optional ``mask``.
GPT image models take 1–16 PNG/JPEG/WebP files under 50 MB; dall-e-2 takes one square PNG under 4 MB.
The mask must be a PNG under 4 MB with the first image's dimensions.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile

from emulator.openai.params import DALL_E_2, OpenAIImageRequest, OpenAIParamError

_INT_FIELDS = ("n", "output_compression", "partial_images")
_MB = 1024 * 1024
_GPT_FORMATS = ("PNG", "JPEG", "WEBP")
_GPT_MAX_IMAGES = 16


@dataclass(frozen=True, slots=True)
class EditForm:
    fields: dict[str, Any]  # non-file fields, typed like the JSON body of a generation
    images: list[bytes]
    mask: bytes | None


def _typed(key: str, value: str) -> Any:
    if key in _INT_FIELDS:
        try:
            return int(value)
        except ValueError:
            raise OpenAIParamError(f"Invalid type for '{key}': expected an integer.", key) from None
    if key == "stream":
        return value.strip().lower() in ("true", "1")
    return value


async def read_edit_form(request: Request) -> EditForm:
    """Parse the multipart body; raises ``OpenAIParamError`` for a wrong content type or missing files."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise OpenAIParamError("Invalid Content-Type header: expected multipart/form-data.", None)
    try:
        async with request.form() as form:
            images: list[bytes] = []
            mask: bytes | None = None
            fields: dict[str, Any] = {}
            for key, value in form.multi_items():
                if key in ("image", "image[]"):
                    if not isinstance(value, UploadFile):
                        raise OpenAIParamError("Expected 'image' to be a file upload.", "image")
                    images.append(await value.read())
                elif key == "mask":
                    if not isinstance(value, UploadFile):
                        raise OpenAIParamError("Expected 'mask' to be a file upload.", "mask")
                    mask = await value.read()
                elif isinstance(value, str):
                    fields[key] = _typed(key, value)
    except OpenAIParamError:
        raise
    except Exception as exc:  # python-multipart raises several types for malformed bodies
        raise OpenAIParamError(f"Could not parse the multipart body: {exc}", None) from None
    if not images:
        raise OpenAIParamError("Missing required parameter: 'image'.", "image")
    return EditForm(fields=fields, images=images, mask=mask)


def _probe(data: bytes, param: str) -> tuple[str, tuple[int, int]]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return str(image.format), image.size
    except (UnidentifiedImageError, OSError):
        raise OpenAIParamError(f"Invalid image file or mode for '{param}'.", param) from None


def check_edit_files(request: OpenAIImageRequest, form: EditForm) -> tuple[int, int]:
    """Model-specific rules for the uploaded images and mask; returns the first image's ``(width, height)``."""
    if request.model == DALL_E_2:
        if len(form.images) != 1:
            raise OpenAIParamError("dall-e-2 accepts exactly one image.", "image")
        fmt, (width, height) = _probe(form.images[0], "image")
        if fmt != "PNG" or width != height or len(form.images[0]) >= 4 * _MB:
            raise OpenAIParamError("Uploaded image must be a square PNG less than 4 MB.", "image")
    else:
        if len(form.images) > _GPT_MAX_IMAGES:
            raise OpenAIParamError(f"At most {_GPT_MAX_IMAGES} images may be provided.", "image")
        for data in form.images:
            fmt, _ = _probe(data, "image")
            if fmt not in _GPT_FORMATS or len(data) >= 50 * _MB:
                raise OpenAIParamError("Images must be PNG, JPEG or WebP files less than 50 MB.", "image")
    _, image_size = _probe(form.images[0], "image")
    if form.mask is not None:
        fmt, mask_size = _probe(form.mask, "mask")
        if fmt != "PNG" or len(form.mask) >= 4 * _MB:
            raise OpenAIParamError("Invalid mask image format - the mask must be a PNG less than 4 MB.", "mask")
        if mask_size != image_size:
            raise OpenAIParamError("Invalid mask image format - mask size does not match image size.", "mask")
    return image_size
