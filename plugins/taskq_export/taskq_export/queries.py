"""Named, typed export queries: declared by the operator (TASKQ_EXPORT_QUERIES) or by a plugin
(the `taskq_export.queries` entry point group), each with a Pydantic model of its parameters."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, create_model

ENTRY_POINT_GROUP = "taskq_export.queries"
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
PARAM_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "date": dt.date,
    "datetime": AwareDatetime,
}


class ExportQueryError(ValueError):
    """An export query declaration that cannot be used (the plugin refuses to load)."""


@dataclass(frozen=True)
class ExportQuery:
    """One query an export may run: `sql` with `%(name)s` placeholders bound from `params`."""

    name: str
    source: str
    sql: str
    params: type[BaseModel]
    description: str = ""
    count: bool = True  # count the rows first, so progress has a total
    max_rows: int | None = None  # lower than the global cap, if set
    timeout_seconds: float | None = None

    def __post_init__(self) -> None:
        if not NAME.fullmatch(self.name):
            raise ExportQueryError(f"export query name {self.name!r}: letters, digits, _")
        if not self.sql.strip().rstrip(";").strip():
            raise ExportQueryError(f"export query {self.name!r} has no SQL")

    @property
    def statement(self) -> str:
        return self.sql.strip().rstrip(";").strip()


class ParamConfig(BaseModel):
    """One parameter as the operator declares it in JSON."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["string", "integer", "number", "boolean", "date", "datetime"]
    description: str = ""
    default: Any = None
    required: bool = True
    ge: float | None = None
    le: float | None = None
    max_length: int | None = Field(default=None, ge=1)
    pattern: str | None = None


class QueryConfig(BaseModel):
    """One query as the operator declares it in JSON."""

    model_config = ConfigDict(extra="forbid")
    source: str
    sql: str
    description: str = ""
    params: dict[str, ParamConfig] = Field(default_factory=dict)
    count: bool = True
    max_rows: int | None = Field(default=None, ge=1)
    timeout_seconds: float | None = Field(default=None, gt=0)


def params_model(name: str, params: dict[str, ParamConfig]) -> type[BaseModel]:
    """A Pydantic model of a declared query's parameters (unknown ones refused)."""
    fields: dict[str, Any] = {}
    for param, spec in params.items():
        if not NAME.fullmatch(param):
            raise ExportQueryError(f"export query {name!r}: bad parameter name {param!r}")
        constraints: dict[str, Any] = {
            key: value
            for key, value in {
                "ge": spec.ge,
                "le": spec.le,
                "max_length": spec.max_length,
                "pattern": spec.pattern,
            }.items()
            if value is not None
        }
        default = ... if spec.required and spec.default is None else spec.default
        annotation = PARAM_TYPES[spec.type]
        if default is None:
            annotation = annotation | None
        fields[param] = (
            annotation,
            Field(default=default, description=spec.description or None, **constraints),
        )
    model: type[BaseModel] = create_model(
        f"{name}_params", __config__=ConfigDict(extra="forbid", validate_default=True), **fields
    )
    return model


def from_config(declared: dict[str, Any]) -> list[ExportQuery]:
    """The queries the operator declared in JSON; ExportQueryError names what is wrong."""
    queries = []
    for name, raw in declared.items():
        try:
            config = QueryConfig.model_validate(raw)
        except ValueError as exc:
            raise ExportQueryError(f"export query {name!r}: {exc}") from exc
        queries.append(
            ExportQuery(
                name=name,
                source=config.source,
                sql=config.sql,
                params=params_model(name, config.params),
                description=config.description,
                count=config.count,
                max_rows=config.max_rows,
                timeout_seconds=config.timeout_seconds,
            )
        )
    return queries


def from_plugins() -> list[ExportQuery]:
    """Queries other packages declare: each entry point of the group is an ExportQuery, a list
    of them, or a callable returning either."""
    found: list[ExportQuery] = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        value = entry.load()
        if callable(value) and not isinstance(value, ExportQuery):
            value = value()
        items = value if isinstance(value, list | tuple) else [value]
        for item in items:
            if not isinstance(item, ExportQuery):
                raise ExportQueryError(
                    f"entry point {entry.name!r} of {ENTRY_POINT_GROUP} gave {item!r}, "
                    "not an ExportQuery"
                )
            found.append(item)
    return found


def collect(declared: dict[str, Any], sources: set[str]) -> dict[str, ExportQuery]:
    """Every query, by name, each checked to read from a configured source."""
    queries: dict[str, ExportQuery] = {}
    for query in [*from_config(declared), *from_plugins()]:
        if query.name in queries:
            raise ExportQueryError(f"export query {query.name!r} is declared twice")
        if query.source not in sources:
            raise ExportQueryError(
                f"export query {query.name!r} reads from source {query.source!r}, which "
                f"TASKQ_EXPORT_SOURCES does not name (it names: {sorted(sources)})"
            )
        queries[query.name] = query
    return queries
