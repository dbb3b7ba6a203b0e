"""IMAGEJOBS_CATALOG_DIR: operators add models and override prices, limits and polling of shipped ones; every
problem is one error line naming the file, the model and the field."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from shared.catalog import ModelEntry, catalog_for, load_catalog, validate_request
from shared.catalog.loading import CatalogFile, parse_catalog
from shared.errors import ConfigurationError, InvalidRequestError
from shared.jobs import ImageRequest
from tests.conftest import make_settings

PROVIDERS = ("kling", "openai", "gemini", "ark", "bfl", "relay")


def _catalog_dir(tmp_path: Path, **files: str) -> Path:
    folder = tmp_path / "catalog"
    folder.mkdir()
    for name, text in files.items():
        (folder / f"{name}.toml").write_text(text, encoding="utf-8")
    return folder


def _with(tmp_path: Path, **files: str) -> dict[str, ModelEntry]:
    return load_catalog(_catalog_dir(tmp_path, **files), providers=frozenset(PROVIDERS)).models


def _error(tmp_path: Path, **files: str) -> str:
    with pytest.raises(ConfigurationError) as caught:
        _with(tmp_path, **files)
    message = str(caught.value)
    assert "\n" not in message  # one line
    return message


def _price(entry: ModelEntry, request: dict[str, object]) -> Decimal:
    catalog = parse_catalog(CatalogFile("x", "")).model_copy(update={"models": {entry.name: entry}})
    validated = validate_request(ImageRequest.model_validate({"model": entry.name, **request}), catalog=catalog)
    return validated.price.unit_amount


def test_without_a_catalog_dir_the_shipped_catalog_is_served() -> None:
    assert load_catalog(None).names() == load_catalog().names()
    assert catalog_for(make_settings()).names() == load_catalog().names()


def test_an_operator_file_adds_a_model_that_extends_a_shipped_one(tmp_path: Path) -> None:
    models = _with(
        tmp_path,
        house="""
[models."house-style"]
extends = "gpt-image-1"
price_source = "our contract with OpenAI"

[models."house-style".params]
quality = { type = "string", choices = ["high"], default = "high" }
""",
    )

    entry = models["house-style"]
    assert entry.provider == "openai" and entry.upstream_model == "gpt-image-1"
    assert entry.params["quality"].choices == ("high",)
    assert "gpt-image-1" in models  # the shipped model is still there, unchanged
    assert models["gpt-image-1"].params["quality"].choices == ("auto", "low", "medium", "high")


def test_an_operator_file_overrides_prices_limits_and_polling_of_a_shipped_model(tmp_path: Path) -> None:
    shipped = load_catalog().models["gpt-image-1"]
    models = _with(
        tmp_path,
        prices="""
[[models."gpt-image-1".operations]]
name = "text2img"
price = { per = "request", amount = "0.5" }

[models."gpt-image-1".params]
n = { max = 2 }
prompt = { max_length = 1000 }

[models."gpt-image-1".polling]
deadline_s = 120
""",
    )

    entry = models["gpt-image-1"]
    text2img = next(op for op in entry.operations if op.name == "text2img")
    edit = next(op for op in entry.operations if op.name == "edit")
    assert text2img.price is not None and (text2img.price.per, text2img.price.amount) == ("request", Decimal("0.5"))
    assert text2img.price.by is None  # a price is replaced as a whole, not merged with the shipped one
    assert edit == next(op for op in shipped.operations if op.name == "edit")  # untouched operation kept
    assert [op.name for op in entry.operations] == [op.name for op in shipped.operations]  # order kept
    assert entry.params["n"].max == 2 and entry.params["n"].type == "integer"  # a rule merges field by field
    assert entry.params["prompt"].required and entry.params["prompt"].max_length == 1000
    assert entry.polling.deadline_s == 120 and entry.polling.first_poll_s == shipped.polling.first_poll_s
    assert _price(entry, {"prompt": "a fox", "quality": "high"}) == Decimal("0.5")
    with pytest.raises(InvalidRequestError, match="at most 2"):
        _price(entry, {"prompt": "a fox", "n": 3})


def test_an_override_of_a_variant_price_replaces_that_price(tmp_path: Path) -> None:
    models = _with(
        tmp_path,
        kling="""
[models."kling-image".variants."kling-v3".prices]
text2img = { per = "image", amount = "9" }
""",
    )

    variant = models["kling-image"].variants["kling-v3"]
    shipped = load_catalog().models["kling-image"].variants["kling-v3"]
    assert variant.prices["text2img"].amount == Decimal("9")
    assert variant.upstream_model == shipped.upstream_model
    assert {name: price for name, price in variant.prices.items() if name != "text2img"} == {
        name: price for name, price in shipped.prices.items() if name != "text2img"
    }


def test_a_model_extending_an_overridden_one_sees_the_override(tmp_path: Path) -> None:
    models = _with(
        tmp_path,
        a="""
[models."gpt-image-1".polling]
deadline_s = 77
""",
        b="""
[models."gpt-image-1-house"]
extends = "gpt-image-1"
""",
    )

    assert models["gpt-image-1-house"].polling.deadline_s == 77


@pytest.mark.parametrize(
    ("text", "names"),
    [
        pytest.param(
            '[[models."gpt-image-1".operations]]\nname = "text2img"\nprice = { per = "image", amount = "-1" }\n',
            ("models.gpt-image-1.operations.", "price.amount"),
            id="negative-price",
        ),
        pytest.param(
            '[models."gpt-image-1".params]\nn = { max = "many" }\n',
            ("models.gpt-image-1.params.n.max",),
            id="limit-of-the-wrong-type",
        ),
        pytest.param(
            '[models."gpt-image-1".polling]\ndeadline_s = 0\n',
            ("models.gpt-image-1.polling.deadline_s",),
            id="polling-out-of-range",
        ),
        pytest.param(
            '[models."gpt-image-1".polling]\nfirst_pol_s = 3\n',
            ("models.gpt-image-1.polling.first_pol_s", "Extra inputs"),
            id="misspelt-field",
        ),
        pytest.param(
            '[[models."gpt-image-1".operations]]\nname = "upscale"\nprice = { per = "image", amount = "1" }\n',
            ("models.gpt-image-1.operations", "'upscale'"),
            id="unknown-operation",
        ),
        pytest.param('[models."gpt-image-1"]\nprovider = "kling"\n', ("models.gpt-image-1.provider",), id="provider"),
        pytest.param(
            '[models."mine"]\nprovider = "openai"\nupstream_model = "x"\ncurrency = "USD"\nprice_source = "us"\n'
            "params = {}\n",
            ("models.mine.operations", "Field required"),
            id="new-model-missing-a-field",
        ),
        pytest.param(
            '[models."mine"]\nextends = "gpt-image-1"\nprovider = "midjourney"\n',
            ("models.mine.provider", "midjourney"),
            id="unknown-provider",
        ),
        pytest.param(
            '[models."mine"]\nextends = "gpt-image-9"\n', ("models.mine.extends", "gpt-image-9"), id="unknown-extends"
        ),
        pytest.param('[models."mine"\nprovider = ', ("not valid TOML",), id="toml-syntax"),
        pytest.param('title = "prices"\n', ("title",), id="not-a-models-table"),
    ],
)
def test_a_bad_operator_file_is_one_error_naming_the_file_model_and_field(
    tmp_path: Path, text: str, names: tuple[str, ...]
) -> None:
    message = _error(tmp_path, ops=text)

    assert message.startswith(f"invalid model catalog: {tmp_path / 'catalog' / 'ops.toml'}: ")
    for name in names:
        assert name in message


def test_the_same_new_model_in_two_operator_files_is_refused_naming_both(tmp_path: Path) -> None:
    entry = '[models."mine"]\nextends = "gpt-image-1"\n'

    message = _error(tmp_path, a=entry, b=entry)

    assert "a.toml" in message and "b.toml" in message and "'mine'" in message


def test_a_catalog_dir_that_is_not_a_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="IMAGEJOBS_CATALOG_DIR"):
        load_catalog(tmp_path / "missing")


def test_the_setting_reaches_the_served_catalog(tmp_path: Path) -> None:
    folder = _catalog_dir(tmp_path, house='[models."house-style"]\nextends = "gpt-image-1"\n')

    catalog = catalog_for(make_settings(catalog_dir=folder))

    assert "house-style" in catalog.names()
