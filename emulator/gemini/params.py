"""Validation of a Gemini ``generateContent`` body for the image models.

The rules are those of https://ai.google.dev/gemini-api/docs/image-generation.

The body is proto JSON: field names are accepted in camelCase and snake_case, unknown names are refused
(``Invalid JSON payload received. Unknown name …``), bytes are base64 (standard or URL-safe alphabet).
Problems raise ``GeminiParamError``; the route answers Google's error envelope, 400 ``INVALID_ARGUMENT``
with a ``google.rpc.BadRequest`` detail naming the field (404 ``NOT_FOUND`` for unknown models).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
EXTRA_ASPECT_RATIOS = ("1:4", "4:1", "1:8", "8:1")
#: long side of a square image per ``imageSize`` tier (other ratios keep about the same pixel count)
TIER_SIDE = {"512": 512, "1K": 1024, "2K": 2048, "4K": 4096}
MAX_INLINE_BYTES = 7 * 1024 * 1024
_INPUT_MIME_TYPES = ("image/png", "image/jpeg", "image/webp", "image/heic", "image/heif")
_MODALITIES = ("TEXT", "IMAGE")
_TOP_LEVEL = {
    "contents",
    "generationConfig",
    "safetySettings",
    "tools",
    "toolConfig",
    "systemInstruction",
    "cachedContent",
}
_GENERATION_CONFIG = {
    "responseModalities",
    "imageConfig",
    "candidateCount",
    "temperature",
    "topP",
    "topK",
    "maxOutputTokens",
    "seed",
    "stopSequences",
    "thinkingConfig",
    "responseMimeType",
    "presencePenalty",
    "frequencyPenalty",
}
_IMAGE_CONFIG = {"aspectRatio", "imageSize"}
_CONTENT = {"role", "parts"}
_PART = {"text", "inlineData", "fileData", "thought", "thoughtSignature"}
_BLOB = {"mimeType", "data"}
_CAMEL = re.compile(r"_([a-z])")


@dataclass(frozen=True, slots=True)
class GeminiModel:
    """What one image model accepts and how it answers."""

    image_sizes: tuple[str, ...]
    aspect_ratios: tuple[str, ...]
    max_input_images: int
    #: Gemini 3 image models think: interim ``thought: true`` parts come before the final image
    thinks: bool
    output_mime_type: str
    #: output tokens per image, by ``imageSize``
    output_tokens: Mapping[str, int]
    input_image_tokens: int


_FLASH_25 = GeminiModel(
    image_sizes=("1K",),
    aspect_ratios=ASPECT_RATIOS,
    max_input_images=14,
    thinks=False,
    output_mime_type="image/png",
    output_tokens={"1K": 1290},
    input_image_tokens=258,
)
_PRO_3 = GeminiModel(
    image_sizes=("1K", "2K", "4K"),
    aspect_ratios=ASPECT_RATIOS,
    max_input_images=14,
    thinks=True,
    output_mime_type="image/jpeg",
    output_tokens={"1K": 1120, "2K": 1120, "4K": 2000},
    input_image_tokens=560,
)
_FLASH_31 = GeminiModel(
    image_sizes=("512", "1K", "2K", "4K"),
    aspect_ratios=ASPECT_RATIOS + EXTRA_ASPECT_RATIOS,
    max_input_images=14,
    thinks=True,
    output_mime_type="image/png",
    output_tokens={"512": 747, "1K": 1120, "2K": 1680, "4K": 2520},
    input_image_tokens=560,
)
MODELS: dict[str, GeminiModel] = {
    "gemini-2.5-flash-image": _FLASH_25,
    "gemini-2.5-flash-image-preview": _FLASH_25,
    "gemini-3-pro-image-preview": _PRO_3,
    "gemini-3-pro-image": _PRO_3,
    "nano-banana-pro-preview": _PRO_3,
    "gemini-3.1-flash-image-preview": _FLASH_31,
    "gemini-3.1-flash-image": _FLASH_31,
}


class GeminiParamError(ValueError):
    """A refused request: HTTP status, Google RPC status name, message and (for 400s) the offending field."""

    def __init__(
        self, message: str, field: str | None = None, *, status: int = 400, status_name: str = "INVALID_ARGUMENT"
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status
        self.status_name = status_name


@dataclass(frozen=True, slots=True)
class InputImage:
    mime_type: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class GeminiImageRequest:
    model_id: str
    model: GeminiModel
    prompt: str
    images: tuple[InputImage, ...]
    aspect_ratio: str
    image_size: str
    modalities: tuple[str, ...]

    @property
    def size(self) -> tuple[int, int]:
        return pixel_size(self.aspect_ratio, self.image_size)


def pixel_size(aspect_ratio: str, image_size: str) -> tuple[int, int]:
    """``(width, height)`` for a ``"W:H"`` ratio at a tier: about ``side²`` pixels, multiples of 16."""
    w, _, h = aspect_ratio.partition(":")
    ratio = int(w) / int(h)
    side = TIER_SIDE.get(image_size, 1024)
    return _multiple_of_16(side * math.sqrt(ratio)), _multiple_of_16(side / math.sqrt(ratio))


def nearest_aspect_ratio(width: int, height: int, allowed: tuple[str, ...]) -> str:
    """The supported ratio closest to ``width:height`` (in log space)."""
    target = math.log(width / height)

    def distance(ratio: str) -> float:
        w, _, h = ratio.partition(":")
        return abs(math.log(int(w) / int(h)) - target)

    return min(allowed, key=distance)


def _multiple_of_16(value: float) -> int:
    return max(16, round(value / 16) * 16)


def _camel(name: str) -> str:
    return _CAMEL.sub(lambda match: match.group(1).upper(), name)


def _fields(obj: Any, allowed: set[str], where: str) -> dict[str, Any]:
    """The object's fields under camelCase names; an unknown name is refused as Google's parser does."""
    if not isinstance(obj, dict):
        raise GeminiParamError(f"Invalid JSON payload received. Expected an object at '{where}'.", where or None)
    fields: dict[str, Any] = {}
    for key, value in obj.items():
        name = _camel(key)
        if name not in allowed:
            at = f" at '{where}'" if where else ""
            raise GeminiParamError(f'Invalid JSON payload received. Unknown name "{key}"{at}: Cannot find field.', key)
        fields[name] = value
    return fields


def _decode_bytes(data: Any, where: str) -> bytes:
    if not isinstance(data, str):
        raise GeminiParamError(f"Invalid value at '{where}' (TYPE_BYTES), expected a base64 string", where)
    text = "".join(data.split())
    try:
        return base64.b64decode(text, altchars=b"-_" if ("-" in text or "_" in text) else None, validate=True)
    except (binascii.Error, ValueError):
        raise GeminiParamError(
            f"Invalid value at '{where}' (TYPE_BYTES), Base64 decoding failed for \"{text[:20]}...\"", where
        ) from None


def _inline_image(blob: Any, where: str) -> InputImage:
    fields = _fields(blob, _BLOB, where)
    mime_type = fields.get("mimeType")
    if not isinstance(mime_type, str) or not mime_type:
        raise GeminiParamError(
            f"* GenerateContentRequest.{where}.mime_type: mime_type is required", f"{where}.mime_type"
        )
    raw = _decode_bytes(fields.get("data"), f"{where}.data")
    if mime_type not in _INPUT_MIME_TYPES:
        raise GeminiParamError(f"Unsupported MIME type: {mime_type}", f"{where}.mime_type")
    if len(raw) > MAX_INLINE_BYTES:
        raise GeminiParamError(
            f"* GenerateContentRequest.{where}.data: inline data is larger than {MAX_INLINE_BYTES} bytes",
            f"{where}.data",
        )
    try:
        with Image.open(io.BytesIO(raw)) as picture:
            width, height = picture.size
    except (UnidentifiedImageError, OSError):
        raise GeminiParamError(
            "Unable to process input image. Please retry or report in "
            "https://developers.generativeai.google/guide/troubleshooting",
            f"{where}.data",
        ) from None
    return InputImage(mime_type=mime_type, width=width, height=height)


def _parts(contents: Any) -> tuple[list[str], list[InputImage]]:
    if not isinstance(contents, list) or not contents:
        raise GeminiParamError("* GenerateContentRequest.contents: contents is not specified", "contents")
    texts: list[str] = []
    images: list[InputImage] = []
    for i, content in enumerate(contents):
        fields = _fields(content, _CONTENT, f"contents[{i}]")
        role = fields.get("role", "user")
        if role not in ("user", "model"):
            raise GeminiParamError(
                f"* GenerateContentRequest.contents[{i}].role: Please use a valid role: user, model.",
                f"contents[{i}].role",
            )
        parts = fields.get("parts")
        if not isinstance(parts, list) or not parts:
            raise GeminiParamError(
                f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.",
                f"contents[{i}].parts",
            )
        for j, part in enumerate(parts):
            where = f"contents[{i}].parts[{j}]"
            part_fields = _fields(part, _PART, where)
            data_fields = [name for name in ("text", "inlineData", "fileData") if name in part_fields]
            if len(data_fields) != 1:
                raise GeminiParamError(
                    f"* GenerateContentRequest.{where}.data: required oneof field 'data' must have one initialized "
                    "field",
                    f"{where}.data",
                )
            if role != "user":
                continue
            if "text" in part_fields:
                if not isinstance(part_fields["text"], str):
                    raise GeminiParamError(f"Invalid value at '{where}.text' (TYPE_STRING)", f"{where}.text")
                texts.append(part_fields["text"])
            elif "inlineData" in part_fields:
                images.append(_inline_image(part_fields["inlineData"], f"{where}.inline_data"))
            else:
                raise GeminiParamError(
                    f"* GenerateContentRequest.{where}.file_data: the emulator has no Files API; send inline_data",
                    f"{where}.file_data",
                )
    return texts, images


def _modalities(config: dict[str, Any]) -> tuple[str, ...]:
    raw = config.get("responseModalities")
    if raw is None:
        return _MODALITIES
    if not isinstance(raw, list) or not raw:
        raise GeminiParamError(
            "* GenerateContentRequest.generation_config.response_modalities: must be a non-empty list",
            "responseModalities",
        )
    modalities: list[str] = []
    for i, value in enumerate(raw):
        name = value.upper() if isinstance(value, str) else None
        if name not in _MODALITIES:
            raise GeminiParamError(
                f"Invalid value at 'generation_config.response_modalities[{i}]' "
                f'(type.googleapis.com/google.ai.generativelanguage.v1beta.GenerationConfig.Modality), "{value}"',
                "responseModalities",
            )
        modalities.append(name)
    return tuple(modalities)


def _image_config(config: dict[str, Any], model_id: str, model: GeminiModel) -> tuple[str | None, str]:
    image_config = _fields(config.get("imageConfig", {}), _IMAGE_CONFIG, "generation_config.image_config")
    aspect_ratio = image_config.get("aspectRatio")
    if aspect_ratio is not None and aspect_ratio not in model.aspect_ratios:
        raise GeminiParamError(
            f"* GenerateContentRequest.generation_config.image_config.aspect_ratio: aspectRatio '{aspect_ratio}' is "
            f"not supported by models/{model_id}; supported values: {', '.join(model.aspect_ratios)}.",
            "generation_config.image_config.aspect_ratio",
        )
    image_size = image_config.get("imageSize", "1K")
    if image_size not in model.image_sizes:
        raise GeminiParamError(
            f"* GenerateContentRequest.generation_config.image_config.image_size: imageSize '{image_size}' is not "
            f"supported by models/{model_id}; supported values: {', '.join(model.image_sizes)}.",
            "generation_config.image_config.image_size",
        )
    return aspect_ratio, image_size


def model_for(model_id: str) -> GeminiModel:
    """The image model behind a path segment (``gemini-…`` or ``models/gemini-…``); 404 when unknown."""
    model = MODELS.get(model_id.removeprefix("models/"))
    if model is None:
        raise GeminiParamError(
            f"models/{model_id} is not found for API version v1beta, or is not supported for generateContent. "
            "Call ListModels to see the list of available models and their supported methods.",
            status=404,
            status_name="NOT_FOUND",
        )
    return model


def parse_generate_request(model_id: str, body: Any) -> GeminiImageRequest:
    """Validate a ``generateContent`` body for an image model."""
    model = model_for(model_id)
    fields = _fields(body, _TOP_LEVEL, "")
    texts, images = _parts(fields.get("contents"))
    config = _fields(fields.get("generationConfig", {}), _GENERATION_CONFIG, "generation_config")
    modalities = _modalities(config)
    candidate_count = config.get("candidateCount", 1)
    if candidate_count != 1:
        raise GeminiParamError(
            f"* GenerateContentRequest.generation_config.candidate_count: Multiple candidates is not enabled for "
            f"models/{model_id}",
            "generation_config.candidate_count",
        )
    aspect_ratio, image_size = _image_config(config, model_id, model)
    if len(images) > model.max_input_images:
        raise GeminiParamError(
            f"* GenerateContentRequest.contents: at most {model.max_input_images} input images are supported by "
            f"models/{model_id}, got {len(images)}",
            "contents",
        )
    if aspect_ratio is None:  # the model picks: the first input image's shape, else square
        first = images[0] if images else None
        aspect_ratio = nearest_aspect_ratio(first.width, first.height, model.aspect_ratios) if first else "1:1"
    return GeminiImageRequest(
        model_id=model_id.removeprefix("models/"),
        model=model,
        prompt="\n".join(texts),
        images=tuple(images),
        aspect_ratio=aspect_ratio,
        image_size=image_size,
        modalities=modalities,
    )
