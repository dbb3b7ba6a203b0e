"""A JSON Schema (draft 2020-12, https://json-schema.org/draft/2020-12/json-schema-validation) of a model's
parameters, derived from its catalog rules, for playgrounds and clients (``GET /v1/models``).

It describes the fields the model takes (types, bounds, choices, defaults, what is required); gateway fields
every model accepts (``callback_url``, ``external_task_id``, ``priority``, …) are not repeated in it. Cross-field
``checks`` cannot be expressed per field and are named in ``x-checks``.
"""

from __future__ import annotations

from typing import Any

from shared.catalog.entries import ModelEntry, ParamRule

DIALECT = "https://json-schema.org/draft/2020-12/schema"

_IMAGE = {"type": "string", "description": "an http(s) URL, a data URI or base64 image data"}
_BASE: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "image": _IMAGE,
    "image_list": {"type": "array", "items": _IMAGE},
    "object_list": {"type": "array", "items": {"type": "object"}},
}


def rule_schema(rule: ParamRule) -> dict[str, Any]:
    """The schema of one parameter."""
    schema: dict[str, Any] = dict(_BASE[rule.type])
    if rule.min is not None:
        schema["minimum"] = _number(rule.min)
    if rule.max is not None:
        schema["maximum"] = _number(rule.max)
    if rule.max_length is not None:
        schema["maxLength"] = rule.max_length
    if rule.required and rule.type in ("string", "image"):
        schema["minLength"] = 1  # "" is treated as not given
    if rule.max_items is not None:
        schema["maxItems"] = rule.max_items
    if rule.choices is not None:
        schema["enum"] = list(rule.choices)
    if rule.also:
        schema = {"anyOf": [schema, {"enum": list(rule.also)}]}
    if rule.default is not None:
        schema["default"] = rule.default
    return schema


def parameters_schema(entry: ModelEntry, variant: str | None = None) -> dict[str, Any]:
    """The schema of ``entry``'s parameters (as one ``variant`` of it takes them, when given)."""
    rules = dict(entry.params)
    if variant is not None:
        rules |= entry.variants[variant].params
    properties = {name: rule_schema(rule) for name, rule in rules.items()}
    required = [name for name, rule in rules.items() if rule.required]
    if entry.variant_param is not None:
        choices = [variant] if variant is not None else list(entry.variants)
        properties[entry.variant_param] = {"type": "string", "enum": choices}
        required.append(entry.variant_param)
    schema: dict[str, Any] = {"$schema": DIALECT, "type": "object", "properties": properties, "required": required}
    if entry.checks:
        schema["x-checks"] = list(entry.checks)
    return schema


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value
