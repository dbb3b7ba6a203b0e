"""An OpenAI-style ``size`` on Kling models: checked at submit, mapped to Kling's nearest aspect ratio."""

from __future__ import annotations

import pytest

from shared.catalog import load_catalog, validate_request
from shared.errors import InvalidRequestError
from shared.jobs import ImageRequest
from worker.providers.kling import _apply_size


@pytest.mark.parametrize(
    ("size", "aspect_ratio"),
    [("1024x1024", "1:1"), ("1792x1024", "16:9"), ("1024x1792", "9:16"), ("1536x1024", "3:2"), ("2560x1080", "21:9")],
)
def test_size_maps_to_the_nearest_kling_aspect_ratio(size: str, aspect_ratio: str) -> None:
    request = ImageRequest(model="kling-image", model_name="kling-v2-1", prompt="a fox", size=size)

    params = _apply_size(dict(validate_request(request, catalog=load_catalog()).upstream_params))

    assert params["aspect_ratio"] == aspect_ratio
    assert "size" not in params


def test_an_explicit_aspect_ratio_wins_over_size() -> None:
    assert _apply_size({"size": "1024x1792", "aspect_ratio": "1:1"}) == {"aspect_ratio": "1:1"}


@pytest.mark.parametrize("size", ["big", "1024", "10x10", "1024x99999"])
def test_a_size_that_is_not_width_x_height_is_a_400_naming_size(size: str) -> None:
    request = ImageRequest(model="kling-v3-image", prompt="a fox", size=size)

    with pytest.raises(InvalidRequestError) as refused:
        validate_request(request, catalog=load_catalog())

    assert refused.value.param == "size"
