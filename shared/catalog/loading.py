"""Reading the catalog: the TOML files shipped in ``models/``, then the operator's own (``IMAGEJOBS_CATALOG_DIR``).

An operator file has the shipped files' format. A model it names that is not shipped is a new model (it may
``extends`` a shipped one); a model that is shipped is *overridden*: the file gives only what changes, e.g.

    [models."gpt-image-1".polling]
    deadline_s = 300

    [[models."gpt-image-1".operations]]
    name = "text2img"
    price = { per = "image", amount = "0.05" }

Tables merge key by key (``params.<name>`` rule by rule and field by field, ``polling``, ``variants``);
``operations`` merge by ``name``; a ``price`` (and each of a variant's ``prices``) is replaced as a whole.
An override cannot change ``provider`` or ``extends`` (give the model a new name instead).

Every problem is one ``ConfigurationError`` line naming the file, the model and the field.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from shared.catalog.entries import Availability, Catalog, ModelEntry
from shared.config import Settings
from shared.errors import ConfigurationError

Raw = dict[str, Any]

#: what an override of a shipped model may not change
_FIXED_KEYS = ("provider", "extends")


@dataclass(frozen=True, slots=True)
class CatalogFile:
    """One catalog TOML text and the name its errors are reported under."""

    name: str
    text: str


@dataclass
class _Draft:
    """The raw entries before they are resolved and checked."""

    #: shipped entries and the operator's new ones, by name
    raw: dict[str, Raw] = field(default_factory=dict)
    #: the file that defines each entry, then the operator files that change it
    origins: dict[str, list[str]] = field(default_factory=dict)
    #: the operator's changes to shipped entries, in file order
    overrides: dict[str, list[tuple[str, Raw]]] = field(default_factory=dict)
    operator_files: set[str] = field(default_factory=set)

    def add_shipped(self, source: CatalogFile) -> None:
        for name, entry in _models_of(source).items():
            if name in self.raw:
                _fail(source.name, f"model {name!r} is defined twice (also in {self.origins[name][0]})")
            self.raw[name], self.origins[name] = entry, [source.name]

    def add_operator(self, source: CatalogFile, *, named_by: dict[str, str]) -> None:
        self.operator_files.add(source.name)
        for name, entry in _models_of(source).items():
            if name in named_by:
                _fail(source.name, f"model {name!r} is defined twice (also in {named_by[name]})")
            named_by[name] = source.name
            if name not in self.raw:
                self.raw[name], self.origins[name] = entry, [source.name]
                continue
            if fixed := [key for key in _FIXED_KEYS if key in entry]:
                _fail(source.name, f"models.{name}.{fixed[0]}: a shipped model's {fixed[0]} cannot be overridden")
            self.overrides.setdefault(name, []).append((source.name, entry))
            self.origins[name].append(source.name)

    def blamed_file(self, chain: list[str]) -> str:
        """Where an error in the last model of ``chain`` is reported: the last operator file that touched it or
        a model it extends (the shipped files are checked by the tests), else its own file."""
        touched = [file for step in chain for file in self.origins[step] if file in self.operator_files]
        return touched[-1] if touched else self.origins[chain[-1]][0]


def parse_catalog(
    *texts: str | CatalogFile,
    operator_files: Iterable[CatalogFile] = (),
    providers: Collection[str] | None = None,
) -> Catalog:
    """The catalog from shipped TOML texts, then ``operator_files`` applied on top.

    ``providers``: when given, every model's provider must be one of them. Raises ``ConfigurationError``.
    """
    draft = _Draft()
    for index, item in enumerate(texts):
        draft.add_shipped(item if isinstance(item, CatalogFile) else CatalogFile(f"catalog text {index + 1}", item))
    named_by: dict[str, str] = {}
    for source in operator_files:
        draft.add_operator(source, named_by=named_by)
    resolved: dict[str, Raw] = {}
    models = {}
    for name in draft.raw:
        chain = _extends_chain(name, draft.raw, draft.origins)
        for step in chain:
            if step not in resolved:
                parent = draft.raw[step].get("extends")
                base = resolved[parent] if parent else None
                resolved[step] = _resolve(step, draft.raw[step], base, draft.overrides.get(step, ()))
        where = draft.blamed_file(chain)
        try:
            models[name] = ModelEntry.model_validate(resolved[name])
        except ValidationError as exc:
            _fail(where, "; ".join(_describe(name, error) for error in exc.errors(include_url=False)))
        if providers is not None and models[name].provider not in providers:
            _fail(where, f"models.{name}.provider: {models[name].provider!r} is not one of {', '.join(providers)}")
    return Catalog(models=models)


def _models_of(source: CatalogFile) -> Raw:
    try:
        document = tomllib.loads(source.text)
    except tomllib.TOMLDecodeError as exc:
        _fail(source.name, f"not valid TOML: {exc}")
    models = document.get("models", {})
    unknown = set(document) - {"models"}
    if unknown or not isinstance(models, dict):
        _fail(source.name, f'holds {sorted(unknown) or "models"} where only [models."<name>"] tables are allowed')
    for name, entry in models.items():
        if not isinstance(entry, dict):
            _fail(source.name, f"models.{name}: expected a table")
    return dict(models)


def _merge(base: Any, change: Any, *, source: str, path: tuple[str, ...]) -> Any:
    """``change`` laid over ``base`` (see the module docstring for which parts merge and which replace)."""
    whole = path[-1] == "price" or (len(path) >= 2 and path[-2] == "prices")
    if whole or type(base) is not type(change):
        return change
    if isinstance(base, dict) and isinstance(change, dict):
        merged = dict(base)
        for key, value in change.items():
            merged[key] = _merge(base[key], value, source=source, path=(*path, key)) if key in base else value
        return merged
    if path[-1] != "operations" or not isinstance(base, list) or not isinstance(change, list):
        return change
    by_name = {operation.get("name"): index for index, operation in enumerate(base) if isinstance(operation, dict)}
    operations = list(base)
    for operation in change:
        index = by_name.get(operation.get("name")) if isinstance(operation, dict) else None
        if index is None:
            known = ", ".join(str(name) for name in by_name)
            name = operation.get("name") if isinstance(operation, dict) else operation
            _fail(source, f"{'.'.join(path)}: no operation {name!r} to override (the model has: {known})")
        operations[index] = _merge(base[index], operation, source=source, path=(*path, str(index)))
    return operations


def _extends_chain(name: str, raw: Mapping[str, Raw], origins: Mapping[str, list[str]]) -> list[str]:
    """``name`` and the models it extends, base first."""
    chain = [name]
    while (parent := raw[chain[-1]].get("extends")) is not None:
        where = origins[chain[-1]][0]
        if parent in chain:
            _fail(where, f"models.{chain[-1]}.extends: extends cycle {' → '.join((*reversed(chain), parent))}")
        if parent not in raw:
            _fail(where, f"models.{chain[-1]}.extends: unknown model {parent!r}")
        chain.append(parent)
    return chain[::-1]


def _resolve(name: str, entry: Raw, parent: Raw | None, overrides: Iterable[tuple[str, Raw]]) -> Raw:
    """The entry laid over the (resolved) model it ``extends`` (``params`` and ``polling`` merge key by key,
    everything else replaces), then the operator's overrides of it."""
    merged: Raw = dict(parent or {})
    for key, value in entry.items():
        if key == "extends":
            continue
        if key in ("params", "polling") and isinstance(value, dict):
            merged[key] = {**merged.get(key, {}), **value}
        else:
            merged[key] = value
    for source, change in overrides:
        merged = _merge(merged, change, source=source, path=("models", name))
    return {**merged, "name": name}


def _describe(name: str, error: Any) -> str:
    """``models.<name>.<field path>: message`` for one pydantic error."""
    where = ".".join(str(part) for part in error["loc"])
    return f"models.{name}{'.' + where if where else ''}: {error['msg']}"


def _fail(source: str, problem: str) -> NoReturn:
    raise ConfigurationError(f"invalid model catalog: {source}: {problem}")


def operator_files(folder: Path) -> list[CatalogFile]:
    """Every ``*.toml`` in the operator's catalog folder, by name; a folder that cannot be read is an error."""
    if not folder.is_dir():
        raise ConfigurationError(f"IMAGEJOBS_CATALOG_DIR: {folder} is not a folder")
    try:
        return [CatalogFile(str(path), path.read_text(encoding="utf-8")) for path in sorted(folder.glob("*.toml"))]
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"IMAGEJOBS_CATALOG_DIR: cannot read {folder}: {exc}") from None


@lru_cache(maxsize=8)
def load_catalog(catalog_dir: Path | None = None, *, providers: frozenset[str] | None = None) -> Catalog:
    """The catalog shipped with the package (every ``models/*.toml``), with ``catalog_dir``'s files applied."""
    folder = resources.files("shared.catalog").joinpath("models")
    shipped = sorted((item for item in folder.iterdir() if item.name.endswith(".toml")), key=lambda item: item.name)
    return parse_catalog(
        *(CatalogFile(f"shared/catalog/models/{item.name}", item.read_text(encoding="utf-8")) for item in shipped),
        operator_files=operator_files(catalog_dir) if catalog_dir is not None else (),
        providers=sorted(providers) if providers is not None else None,
    )


def catalog_for(settings: Settings) -> Catalog:
    """The catalog a process serves: shipped + ``IMAGEJOBS_CATALOG_DIR``, and which providers are available."""
    sections = settings.provider_sections()
    catalog = load_catalog(settings.catalog_dir, providers=frozenset(sections))
    return catalog.with_providers(
        {
            name: Availability(
                mode=section.mode, missing=section.credential_settings(name) if section.mode == "disabled" else ()
            )
            for name, section in sections.items()
        }
    )
