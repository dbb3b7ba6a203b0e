"""Validation of OpenAI Images parameters (``/v1/images/generations`` JSON and ``/v1/images/edits`` form).

Problems raise ``OpenAIParamError``; the route answers ``{"error": {"message", "type", "param", "code"}}``
(400 ``invalid_request_error`` with the offending ``param``; 404 ``model_not_found`` for unknown models).
Unknown keys are ignored, so OpenAI-compatible extension fields pass.

DALL·E was removed from the API on 2026-05-12 (https://platform.openai.com/docs/deprecations). With
``dalle_retired`` (the emulator's default) ``dall-e-2``/``dall-e-3`` answer 404 ``model_not_found`` and a
request without ``model`` gets ``gpt-image-1.5`` (the SDK 3.3.1 default for edits; the post-retirement default
of generations is UNVERIFIED). Without it, DALL·E is served as before: ``dall-e-2`` is the default unless a
GPT-image-only parameter is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from emulator.render import ImageFormat

GPT_MODELS = (
    "gpt-image-1",
    "gpt-image-1-mini",
    "gpt-image-1.5",
    "gpt-image-2",
    "gpt-image-2-2026-04-21",
    "chatgpt-image-latest",
)
DALL_E_2 = "dall-e-2"
DALL_E_3 = "dall-e-3"
DEFAULT_AFTER_RETIREMENT = "gpt-image-1.5"
# Sending any of these makes the default model a GPT image model (and is refused for DALL·E).
GPT_ONLY = ("background", "output_format", "output_compression", "moderation", "stream", "partial_images")
_SIZES = {
    "gpt": ("1024x1024", "1536x1024", "1024x1536", "auto"),
    DALL_E_2: ("256x256", "512x512", "1024x1024"),
    DALL_E_3: ("1024x1024", "1792x1024", "1024x1792"),
}
_QUALITIES = {"gpt": ("auto", "high", "medium", "low"), DALL_E_2: ("standard",), DALL_E_3: ("standard", "hd")}
_PROMPT_LIMITS = {"gpt": 32000, DALL_E_2: 1000, DALL_E_3: 4000}
_GPT_IMAGE_2_MAX_EDGE = 3840
_GPT_IMAGE_2_PIXELS = (655_360, 8_294_400)


Background = Literal["opaque", "transparent"]


class OpenAIParamError(ValueError):
    def __init__(self, message: str, param: str | None, *, status: int = 400, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code


@dataclass(frozen=True, slots=True)
class OpenAIImageRequest:
    model: str
    prompt: str
    n: int
    width: int
    height: int
    quality: str  # as reported back: low|medium|high (GPT image), standard|hd (DALL·E)
    response_format: Literal["url", "b64_json"]
    output_format: ImageFormat
    background: Background
    #: ``size`` was ``auto`` (or omitted on a GPT image model): an edit may follow the input's shape
    auto_size: bool = False
    #: answer Server-Sent Events, with this many partial images before each final one
    stream: bool = False
    partial_images: int = 0

    @property
    def is_gpt(self) -> bool:
        return self.model in GPT_MODELS

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


def _family(model: str) -> str:
    return "gpt" if model in GPT_MODELS else model


def _str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise OpenAIParamError(f"Invalid type for '{key}': expected a string.", key)
    return value


def _choice(body: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str | None:
    value = _str(body, key)
    if value is not None and value not in allowed:
        supported = ", ".join(f"'{item}'" for item in allowed)
        raise OpenAIParamError(f"Invalid value: '{value}'. Supported values are: {supported}.", key)
    return value


def _int(body: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise OpenAIParamError(f"Invalid type for '{key}': expected an integer.", key)
    if not low <= value <= high:
        raise OpenAIParamError(f"Invalid '{key}': expected a value in [{low}, {high}], got {value}.", key)
    return value


def _model(body: Mapping[str, Any], *, edit: bool, dalle_retired: bool) -> str:
    model = _str(body, "model")
    if model is None:
        if dalle_retired:
            return DEFAULT_AFTER_RETIREMENT
        gpt_hints = (*GPT_ONLY, "input_fidelity") if edit else GPT_ONLY
        return "gpt-image-1" if any(body.get(key) is not None for key in gpt_hints) else DALL_E_2
    if model not in (*GPT_MODELS, DALL_E_2, DALL_E_3):
        message = f"The model `{model}` does not exist or you do not have access to it."
        raise OpenAIParamError(message, None, status=404, code="model_not_found")
    if dalle_retired and model in (DALL_E_2, DALL_E_3):
        message = (
            f"The model `{model}` has been deprecated, learn more here: https://platform.openai.com/docs/deprecations"
        )
        raise OpenAIParamError(message, None, status=404, code="model_not_found")
    if edit and model == DALL_E_3:
        raise OpenAIParamError("Invalid value: 'dall-e-3'. Edits support dall-e-2 and GPT image models.", "model")
    return model


def _custom_size(size: str) -> tuple[int, int] | None:
    """gpt-image-2's arbitrary ``WxH``: multiples of 16, the longer edge at most 3840 and at most 3× the shorter,
    655,360 to 8,294,400 pixels (https://platform.openai.com/docs/guides/image-generation)."""
    width_s, _, height_s = size.partition("x")
    if not (width_s.isdigit() and height_s.isdigit()):
        return None
    width, height = int(width_s), int(height_s)
    long, short = max(width, height), min(width, height)
    if short == 0 or width % 16 or height % 16 or long > 3 * short or long > _GPT_IMAGE_2_MAX_EDGE:
        return None
    if not _GPT_IMAGE_2_PIXELS[0] <= width * height <= _GPT_IMAGE_2_PIXELS[1]:
        return None
    return width, height


def _size(body: Mapping[str, Any], model: str) -> tuple[int, int, bool]:
    """``(width, height, auto)``; ``auto`` renders 1024x1024 unless an edit's input decides."""
    family = _family(model)
    raw = _str(body, "size") or ("auto" if family == "gpt" else "1024x1024")
    if model.startswith("gpt-image-2") and raw not in _SIZES["gpt"] and (custom := _custom_size(raw)):
        return (*custom, False)
    if raw not in _SIZES[family]:
        supported = ", ".join(f"'{item}'" for item in _SIZES[family])
        raise OpenAIParamError(f"Invalid value: '{raw}'. Supported values are: {supported}.", "size")
    width, _, height = ("1024x1024" if raw == "auto" else raw).partition("x")
    return int(width), int(height), raw == "auto"


def _gpt_options(body: Mapping[str, Any], model: str, *, edit: bool) -> tuple[ImageFormat, Background]:
    """Check the GPT-image-only options; returns ``(output_format, background)``."""
    only = (*GPT_ONLY, "input_fidelity") if edit else GPT_ONLY
    if model not in GPT_MODELS:
        for key in only:
            if body.get(key) is not None:
                raise OpenAIParamError(f"'{key}' is not supported for model {model}.", key)
        return "png", "opaque"
    output_format = _choice(body, "output_format", ("png", "jpeg", "webp")) or "png"
    background = _choice(body, "background", ("transparent", "opaque", "auto")) or "auto"
    if background == "transparent" and output_format == "jpeg":
        raise OpenAIParamError("Transparent background requires output_format png or webp.", "background")
    _int(body, "output_compression", 100, 0, 100)
    _choice(body, "moderation", ("low", "auto"))
    _int(body, "partial_images", 0, 0, 3)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise OpenAIParamError("Invalid type for 'stream': expected a boolean.", "stream")
    if edit and _choice(body, "input_fidelity", ("high", "low")) and model == "gpt-image-1-mini":
        raise OpenAIParamError("input_fidelity is not supported for gpt-image-1-mini.", "input_fidelity")
    fmt: ImageFormat = "jpeg" if output_format == "jpeg" else "webp" if output_format == "webp" else "png"
    return fmt, "transparent" if background == "transparent" else "opaque"


def parse_image_request(
    body: Mapping[str, Any], *, edit: bool = False, dalle_retired: bool = False
) -> OpenAIImageRequest:
    """Validate a generations body (JSON) or the typed non-file fields of an edits form."""
    prompt = _str(body, "prompt")
    if not prompt:
        raise OpenAIParamError("Missing required parameter: 'prompt'.", "prompt")
    model = _model(body, edit=edit, dalle_retired=dalle_retired)
    limit = _PROMPT_LIMITS[_family(model)]
    if len(prompt) > limit:
        message = f"Invalid 'prompt': string too long. Expected a maximum length of {limit}, got {len(prompt)}."
        raise OpenAIParamError(message, "prompt")
    n = _int(body, "n", 1, 1, 10)
    if model == DALL_E_3 and n != 1:
        raise OpenAIParamError("You must provide n=1 for this model.", "n")
    width, height, auto_size = _size(body, model)
    quality = _choice(body, "quality", _QUALITIES[_family(model)]) or ("auto" if model in GPT_MODELS else "standard")
    response_format = _choice(body, "response_format", ("url", "b64_json"))
    if model in GPT_MODELS and response_format == "url":
        raise OpenAIParamError("response_format 'url' is not supported for GPT image models.", "response_format")
    if _choice(body, "style", ("vivid", "natural")) and model != DALL_E_3:
        raise OpenAIParamError(f"'style' is not supported for model {model}.", "style")
    _str(body, "user")
    output_format, background = _gpt_options(body, model, edit=edit)
    return OpenAIImageRequest(
        model=model,
        prompt=prompt,
        n=n,
        width=width,
        height=height,
        quality="high" if quality == "auto" else quality,
        response_format="b64_json" if model in GPT_MODELS or response_format == "b64_json" else "url",
        output_format=output_format,
        background=background,
        auto_size=auto_size,
        stream=body.get("stream") is True,
        partial_images=_int(body, "partial_images", 0, 0, 3),
    )
