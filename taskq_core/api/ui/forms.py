"""Forms generated from a task type's JSON Schema: fields to render, posted values to input_data,
and validation errors sorted to the field they belong to."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

FORM_ERRORS = "_form"  # errors that belong to no one field


@dataclass
class FormField:
    """One input of a generated form."""

    name: str
    label: str
    kind: str  # integer, number, string, boolean, choice, lines (a list of strings), json
    required: bool
    description: str = ""
    default: Any = None
    choices: list[Any] = field(default_factory=list)
    minimum: float | None = None
    maximum: float | None = None

    @property
    def default_text(self) -> str:
        """The default as the input shows it before the user types."""
        if self.default is None:
            return ""
        if self.kind == "lines" and isinstance(self.default, list):
            return "\n".join(map(str, self.default))
        if self.kind == "json":
            return json.dumps(self.default)
        return str(self.default)


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        resolved: dict[str, Any] = schema.get("$defs", {}).get(ref.rsplit("/", 1)[1], {})
        return {**resolved, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _kind(schema: dict[str, Any], node: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    node = _resolve(schema, node)
    options = [_resolve(schema, o) for o in node.get("anyOf", [])]
    non_null = [o for o in options if o.get("type") != "null"]
    if len(non_null) == 1:
        return _kind(schema, {**non_null[0], **{k: v for k, v in node.items() if k != "anyOf"}})
    if options:
        return "json", node  # a real union: the user writes JSON
    if "enum" in node:
        return "choice", node
    kind = node.get("type")
    if kind in ("integer", "number", "string", "boolean"):
        return str(kind), node
    if kind == "array" and _resolve(schema, node.get("items", {})).get("type") == "string":
        return "lines", node
    return "json", node


def fields_of(schema: dict[str, Any]) -> list[FormField]:
    """The inputs for an object schema's properties, in declaration order."""
    required = set(schema.get("required", []))
    result = []
    for name, raw in schema.get("properties", {}).items():
        kind, node = _kind(schema, raw)
        result.append(
            FormField(
                name=name,
                label=str(raw.get("title") or node.get("title") or name),
                kind=kind,
                required=name in required,
                description=str(raw.get("description") or node.get("description") or ""),
                default=raw.get("default", node.get("default")),
                choices=list(node.get("enum", [])),
                minimum=node.get("minimum", node.get("exclusiveMinimum")),
                maximum=node.get("maximum", node.get("exclusiveMaximum")),
            )
        )
    return result


def _number(raw: str, convert: type[int] | type[float]) -> Any:
    try:
        value = convert(raw)
    except ValueError:
        return raw  # left as typed: validation says what is wrong with it, beside the field
    return value if not isinstance(value, float) or math.isfinite(value) else raw


def parse(fields: list[FormField], form: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """input_data from the posted values, and errors of values that are not even JSON.

    Empty optional inputs are left out so the model's defaults apply; empty required ones too,
    so validation reports them missing."""
    data: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for spec in fields:
        raw = form.get(spec.name, "")
        if spec.kind == "boolean":
            data[spec.name] = raw in ("on", "true", "1")
            continue
        if raw.strip() == "":
            continue
        if spec.kind == "integer":
            data[spec.name] = _number(raw.strip(), int)
        elif spec.kind == "number":
            data[spec.name] = _number(raw.strip(), float)
        elif spec.kind == "choice":
            # An enum of numbers posts their text: give back the value it names.
            data[spec.name] = next((c for c in spec.choices if str(c) == raw), raw)
        elif spec.kind == "lines":
            data[spec.name] = [line.strip() for line in raw.splitlines() if line.strip()]
        elif spec.kind == "json":
            try:
                data[spec.name] = json.loads(raw)
            except ValueError as exc:
                errors[spec.name] = f"Not valid JSON: {exc}"
        else:
            data[spec.name] = raw
    return data, errors


def errors_by_field(errors: list[dict[str, Any]], fields: list[FormField]) -> dict[str, str]:
    """Validation errors (loc, msg) keyed by the form input they concern."""
    kinds = {f.name: f.kind for f in fields}
    result: dict[str, str] = {}
    for error in errors:
        loc = tuple(error.get("loc", ()))
        if len(loc) >= 2 and loc[0] == "input_data" and loc[1] in kinds:
            name = str(loc[1])
            if kinds[name] == "lines" and len(loc) == 3 and isinstance(loc[2], int):
                detail = f"line {loc[2] + 1}"  # the textarea's own numbering, not the index
            else:
                detail = ".".join(map(str, loc[2:]))
            message = f"{detail}: {error['msg']}" if detail else str(error["msg"])
        elif loc and loc[0] in ("priority", "delay_seconds"):
            name, message = str(loc[0]), str(error["msg"])
        else:
            name = FORM_ERRORS
            where = ".".join(map(str, loc[1:])) if loc[:1] == ("input_data",) else ""
            message = f"{where}: {error['msg']}" if where else str(error["msg"])
        result[name] = f"{result[name]}; {message}" if name in result else message
    return result
