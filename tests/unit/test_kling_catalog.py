"""The Kling catalog entries: every public name the gateways list, its operations and exact prices, and the 400s
naming the parameter."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from shared.catalog import ValidatedRequest, load_catalog, validate_request
from shared.errors import InvalidRequestError
from shared.jobs import ImageRequest

URL = "https://images.example.com/in.png"
SUBJECTS = [{"subject_image": URL}]
RATIOS = {f"{side}_expansion_ratio": 0.25 for side in ("up", "down", "left", "right")}

#: every Kling public name (the OpenAI-compatible gateway: kling-image, kling-omni-image, try-on, kling-image-v3;
#: the OpenAI-style Kling image API: kling-img-v1; the apimodels per-image price table)
SEED_NAMES = {
    "kling-image",
    "kling-omni-image",
    "kolors-virtual-try-on-v1",
    "kolors-virtual-try-on-v1-5",
    "kling-image-v3",
    "kling-img-v1",
    "kling-v2",
    "kling-v2-new",
    "kling-v2-1",
    "kling-v3-image",
    "kling-multi-image",
    "kling-expand",
    "kling-image-o1",
}


def _validate(model: str, **fields: Any) -> ValidatedRequest:
    return validate_request(ImageRequest.model_validate({"model": model, **fields}), catalog=load_catalog())


def test_every_kling_seed_name_is_in_the_catalog() -> None:
    kling = {name for name, entry in load_catalog().models.items() if entry.provider == "kling"}

    assert kling == SEED_NAMES


def test_every_kling_model_notes_its_price_source() -> None:
    for name in SEED_NAMES:
        assert "price table" in load_catalog().models[name].price_source, name


# model, fields → operation, upstream model, per, amount
PRICES: list[tuple[str, dict[str, Any], str, str, str, str]] = [
    # the apimodels per-image price table, exactly
    ("kling-v2", {"prompt": "p"}, "text2img", "kling-v2", "image", "0.076"),
    ("kling-v2", {"prompt": "p", "image": URL}, "img2img", "kling-v2", "image", "0.151"),
    ("kling-v2", {"subject_image_list": SUBJECTS}, "multi-img", "kling-v2", "image", "0.302"),
    ("kling-v2", {"image_urls": [URL, URL]}, "multi-img", "kling-v2", "image", "0.302"),
    ("kling-v2-new", {"prompt": "p", "image_url": URL}, "img2img", "kling-v2-new", "image", "0.151"),
    ("kling-v2-1", {"prompt": "p"}, "text2img", "kling-v2-1", "image", "0.076"),
    ("kling-v2-1", {"images": [URL, URL, URL]}, "multi-img", "kling-v2-1", "image", "0.302"),
    ("kling-v3-image", {"prompt": "p"}, "text2img", "kling-v3", "image", "0.151"),
    ("kling-v3-image", {"prompt": "p", "image": URL, "resolution": "2k"}, "img2img", "kling-v3", "image", "0.151"),
    ("kling-multi-image", {"subject_image_list": SUBJECTS}, "multi-img", "kling-v2-1", "image", "0.302"),
    ("kling-expand", {"image_url": URL, **RATIOS}, "expand", "kling-image-expand", "image", "0.151"),
    ("kling-image-o1", {"prompt": "p"}, "omni", "kling-image-o1", "image", "1.80"),
    ("kling-image-o1", {"prompt": "p", "image_urls": [URL, URL]}, "omni", "kling-image-o1", "image", "1.80"),
    # the OpenAI-compatible gateway's per-request price, exactly
    ("kling-image-v3", {"prompt": "p"}, "text2img", "kling-v3", "request", "0.05"),
    ("kling-image-v3", {"prompt": "p", "image": URL}, "img2img", "kling-v3", "request", "0.05"),
    # in neither price table: the apimodels unit basis (0.019 / unit) × Kling's units
    ("kling-img-v1", {"prompt": "p"}, "text2img", "kling-v1", "image", "0.019"),
    ("kling-v2-1", {"prompt": "p", "image": URL}, "img2img", "kling-v2-1", "image", "0.151"),
    ("kolors-virtual-try-on-v1", {"human_image": URL, "cloth_image": URL}, "try-on", "kolors-virtual-try-on-v1",
     "image", "0.019"),
    ("kolors-virtual-try-on-v1-5", {"human_image": URL, "cloth_image": URL}, "try-on", "kolors-virtual-try-on-v1-5",
     "image", "0.019"),
]  # fmt: skip

VARIANT_PRICES: list[tuple[str, str, dict[str, Any], str, str]] = [
    ("kling-image", "kling-v1", {"prompt": "p"}, "text2img", "0.019"),
    ("kling-image", "kling-v1-5", {"prompt": "p", "image": URL}, "img2img", "0.151"),
    ("kling-image", "kling-v2", {"subject_image_list": SUBJECTS}, "multi-img", "0.302"),
    ("kling-image", "kling-v2-1", {"image_urls": [URL, URL]}, "multi-img", "0.302"),
    ("kling-image", "kling-v2-1", {"prompt": "p", "image_urls": [URL]}, "img2img", "0.151"),
    ("kling-image", "kling-v2-new", {"prompt": "p", "image": URL}, "img2img", "0.151"),
    ("kling-image", "kling-v3", {"prompt": "p"}, "text2img", "0.151"),
    ("kling-image", "kling-v3", {"image": URL, "up_expansion_ratio": 0.5}, "expand", "0.151"),
    ("kling-image", "kling-v1", {"image_url": URL, **RATIOS}, "expand", "0.151"),
    ("kling-omni-image", "kling-image-o1", {"prompt": "p"}, "omni", "1.80"),
    ("kling-omni-image", "kling-v3-omni", {"prompt": "p"}, "omni", "0.151"),
    ("kling-omni-image", "kling-v3-omni", {"prompt": "p", "resolution": "2k"}, "omni", "0.151"),
    ("kling-omni-image", "kling-v3-omni", {"prompt": "p", "resolution": "4k"}, "omni", "0.302"),
]


@pytest.mark.parametrize(("model", "fields", "operation", "upstream", "per", "amount"), PRICES)
def test_alias_operation_and_price(
    model: str, fields: dict[str, Any], operation: str, upstream: str, per: str, amount: str
) -> None:
    validated = _validate(model, **fields)

    assert (validated.provider, validated.variant) == ("kling", None)
    assert (validated.operation, validated.upstream_model) == (operation, upstream)
    assert (validated.price.per, validated.price.unit_amount) == (per, Decimal(amount))
    assert validated.price.currency == "credits"


@pytest.mark.parametrize(("model", "model_name", "fields", "operation", "amount"), VARIANT_PRICES)
def test_variant_operation_and_price(
    model: str, model_name: str, fields: dict[str, Any], operation: str, amount: str
) -> None:
    validated = _validate(model, model_name=model_name, **fields)

    assert (validated.variant, validated.upstream_model, validated.operation) == (model_name, model_name, operation)
    assert validated.price.unit_amount == Decimal(amount)


def test_per_request_price_does_not_grow_with_n() -> None:
    validated = _validate("kling-image-v3", prompt="p", n=4)

    assert validated.image_count == 4
    assert validated.price.cost(images_delivered=4) == Decimal("0.05")


def test_multi_model_name_goes_upstream_as_model_name() -> None:
    assert _validate("kling-multi-image", subject_image_list=SUBJECTS).upstream_params["model_name"] == "kling-v2-1"
    chosen = _validate("kling-multi-image", subject_image_list=SUBJECTS, multi_model_name="kling-v2")
    assert chosen.upstream_params["model_name"] == "kling-v2"


def test_try_on_prompt_and_n_stay_with_us() -> None:
    validated = _validate("kolors-virtual-try-on-v1", prompt="x", n=1, human_image=URL, cloth_image=URL)

    assert validated.upstream_params == {"human_image": URL, "cloth_image": URL}


def test_image_url_goes_upstream_as_image() -> None:
    validated = _validate("kling-expand", image_url=URL, **RATIOS)

    assert validated.upstream_params["image"] == URL
    assert "image_url" not in validated.upstream_params


def test_prompt_is_optional_for_multi_image_and_outpainting() -> None:
    assert _validate("kling-image", model_name="kling-v2-1", subject_image_list=SUBJECTS).operation == "multi-img"
    assert _validate("kling-image", model_name="kling-v2-1", image=URL, down_expansion_ratio=1).operation == "expand"


KLING = {"model": "kling-image", "model_name": "kling-v2-1"}
OMNI = {"model": "kling-omni-image", "model_name": "kling-v3-omni", "prompt": "p"}
TRY_ON = {"model": "kolors-virtual-try-on-v1", "human_image": URL, "cloth_image": URL}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        # kling-image: generations
        pytest.param({**KLING}, "prompt", id="generation-needs-prompt"),
        pytest.param({**KLING, "prompt": "p", "image_reference": "face"}, "image_reference", id="reference-no-image"),
        pytest.param({**KLING, "prompt": "p", "image": URL, "negative_prompt": "n"}, "negative_prompt", id="neg-image"),
        pytest.param({**KLING, "prompt": "p", "image": URL, "image_url": URL}, "image_url", id="two-image-sources"),
        pytest.param({**KLING, "prompt": "p", "scene_image": URL}, "scene_image", id="scene-without-subjects"),
        pytest.param({**KLING, "prompt": "p", "image_urls": ["nope"]}, "image_urls", id="image-urls-not-images"),
        pytest.param({**KLING, "prompt": "p", "resolution": "4k"}, "resolution", id="resolution"),
        pytest.param({**KLING, "prompt": "p", "human_fidelity": -0.1}, "human_fidelity", id="human-fidelity"),
        # kling-image: multi-image
        pytest.param({**KLING, "subject_image_list": SUBJECTS * 5}, "subject_image_list", id="five-subjects"),
        pytest.param({**KLING, "image_urls": [URL] * 5}, "image_urls", id="five-image-urls"),
        pytest.param({**KLING, "subject_image_list": [{"image": URL}]}, "subject_image_list", id="subject-key"),
        pytest.param({**KLING, "subject_image_list": [{"subject_image": "x"}]}, "subject_image_list", id="subject"),
        pytest.param({**KLING, "subject_image_list": SUBJECTS, "resolution": "2k"}, "resolution", id="multi-res"),
        pytest.param({**KLING, "subject_image_list": SUBJECTS, "image": URL}, "subject_image_list",
                     id="multi-and-image"),
        pytest.param({**KLING, "model_name": "kling-v1", "subject_image_list": SUBJECTS}, "subject_image_list",
                     id="v1-no-multi"),
        pytest.param({**KLING, "model_name": "kling-v3", "images": [URL, URL]}, "images", id="v3-no-multi"),
        # kling-image: outpainting
        pytest.param({**KLING, "up_expansion_ratio": 0.5}, "image", id="expand-needs-image"),
        pytest.param({**KLING, "image_urls": [URL], "up_expansion_ratio": 0.5}, "image_urls", id="expand-image-urls"),
        pytest.param({**KLING, "image": URL, "left_expansion_ratio": 2.5}, "left_expansion_ratio", id="ratio-above-2"),
        pytest.param({**KLING, "image": URL, "down_expansion_ratio": -1}, "down_expansion_ratio", id="ratio-negative"),
        pytest.param({**KLING, "image": URL, "up_expansion_ratio": 1, "left_expansion_ratio": 0.6},
                     "up_expansion_ratio", id="area-above-3"),
        pytest.param({**KLING, "image": URL, "up_expansion_ratio": 1, "aspect_ratio": "1:1"}, "aspect_ratio",
                     id="expand-aspect"),
        pytest.param({**KLING, "model_name": "kling-v2-new", "image": URL, "up_expansion_ratio": 1},
                     "up_expansion_ratio", id="v2-new-no-expand"),
        # kling-omni-image
        pytest.param({**OMNI, "prompt": None}, "prompt", id="omni-prompt"),
        pytest.param({**OMNI, "model_name": None}, "model_name", id="omni-model-name-missing"),
        pytest.param({**OMNI, "model_name": "kling-v3"}, "model_name", id="omni-model-name-unknown"),
        pytest.param({**OMNI, "resolution": "8k"}, "resolution", id="omni-resolution"),
        pytest.param({**OMNI, "aspect_ratio": "5:4"}, "aspect_ratio", id="omni-aspect"),
        pytest.param({**OMNI, "result_type": "many"}, "result_type", id="omni-result-type"),
        pytest.param({**OMNI, "series_amount": 10}, "series_amount", id="omni-series-amount"),
        pytest.param({**OMNI, "n": 10}, "n", id="omni-n"),
        pytest.param({**OMNI, "image_list": [{"image": URL}] * 11}, "image_list", id="omni-11-images"),
        pytest.param({**OMNI, "image_list": [{"image": URL}] * 6, "element_list": [{"element_id": 1}] * 5},
                     "element_list", id="omni-images-plus-elements"),
        pytest.param({**OMNI, "image_urls": [URL] * 6, "element_list": [{"element_id": 1}] * 5}, "element_list",
                     id="omni-urls-plus-elements"),
        pytest.param({**OMNI, "element_list": [{"element_id": "abc"}]}, "element_list", id="omni-element-id"),
        pytest.param({**OMNI, "image_list": [{"image": "x"}]}, "image_list", id="omni-image-item"),
        pytest.param({**OMNI, "negative_prompt": "n"}, "negative_prompt", id="omni-negative"),
        # try-on
        pytest.param({**TRY_ON, "cloth_image": None}, "cloth_image", id="try-on-cloth"),
        pytest.param({**TRY_ON, "human_image": None}, "human_image", id="try-on-human"),
        pytest.param({**TRY_ON, "human_image": "not an image"}, "human_image", id="try-on-human-not-image"),
        pytest.param({**TRY_ON, "n": 2}, "n", id="try-on-n"),
        pytest.param({**TRY_ON, "model_name": "kling-v1"}, "model_name", id="try-on-model-name"),
        pytest.param({**TRY_ON, "aspect_ratio": "1:1"}, "aspect_ratio", id="try-on-aspect"),
        # aliases
        pytest.param({"model": "kling-img-v1", "prompt": "p", "aspect_ratio": "21:9"}, "aspect_ratio", id="v1-21-9"),
        pytest.param({"model": "kling-v2-new", "prompt": "p"}, "image", id="v2-new-needs-image"),
        pytest.param({"model": "kling-v2-new", "prompt": "p", "image": URL, "resolution": "2k"}, "resolution",
                     id="v2-new-1k-only"),
        pytest.param({"model": "kling-v3-image", "prompt": "p", "subject_image_list": SUBJECTS}, "subject_image_list",
                     id="v3-image-no-multi"),
        pytest.param({"model": "kling-v3-image", "prompt": "p", "image_urls": [URL, URL]}, "image_urls",
                     id="v3-image-one-image"),
        pytest.param({"model": "kling-v3-image", "prompt": "p", "model_name": "kling-v3"}, "model_name",
                     id="alias-takes-no-model-name"),
        pytest.param({"model": "kling-v2", "prompt": "x" * 2501}, "prompt", id="alias-prompt-too-long"),
        pytest.param({"model": "kling-multi-image", "prompt": "p"}, "subject_image_list", id="multi-needs-subjects"),
        pytest.param({"model": "kling-multi-image", "subject_image_list": SUBJECTS, "multi_model_name": "kling-v3"},
                     "multi_model_name", id="multi-model-name"),
        pytest.param({"model": "kling-multi-image", "subject_image_list": SUBJECTS, "image": URL}, "image",
                     id="multi-alias-no-image"),
        pytest.param({"model": "kling-expand", "image": URL, **RATIOS, "right_expansion_ratio": None},
                     "right_expansion_ratio", id="expand-alias-needs-all-ratios"),
        pytest.param({"model": "kling-expand", **RATIOS}, "image", id="expand-alias-needs-image"),
        pytest.param({"model": "kling-expand", "image": URL, **RATIOS, "up_expansion_ratio": 1.5},
                     "up_expansion_ratio", id="expand-alias-area"),
        pytest.param({"model": "kling-image-o1", "prompt": "p", "resolution": "4k"}, "resolution", id="o1-no-4k"),
        pytest.param({"model": "kling-image-o1", "prompt": "p", "result_type": "series"}, "result_type",
                     id="o1-no-series"),
        pytest.param({"model": "kling-image-o1", "prompt": "p", "series_amount": 3}, "series_amount",
                     id="o1-no-series-amount"),
    ],
)  # fmt: skip
def test_invalid_request_names_the_offending_param(fields: dict[str, Any], param: str) -> None:
    request = ImageRequest.model_validate({key: value for key, value in fields.items() if value is not None})

    with pytest.raises(InvalidRequestError) as caught:
        validate_request(request, catalog=load_catalog())

    assert caught.value.param == param
    assert param in caught.value.message
