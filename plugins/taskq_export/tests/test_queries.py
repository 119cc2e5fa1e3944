"""Declaring export queries: the operator's JSON and other packages' entry points, and the input
model each becomes (no database needed)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from taskq_export.queries import ExportQueryError, collect, from_config
from taskq_export.task import input_model


@pytest.mark.parametrize(
    ("declared", "said"),
    [
        ({"q": {"source": "s"}}, "sql"),
        ({"q": {"source": "s", "sql": "SELECT 1", "extra": 1}}, "extra"),
        ({"q": {"source": "s", "sql": "SELECT 1", "params": {"a": {"type": "uuid"}}}}, "type"),
        ({"q": {"source": "s", "sql": ";"}}, "has no SQL"),
        ({"bad name": {"source": "s", "sql": "SELECT 1"}}, "letters, digits"),
        ({"q": {"source": "s", "sql": "SELECT 1", "params": {"a-b": {"type": "string"}}}}, "a-b"),
    ],
)
def test_bad_declarations_are_refused_by_name(declared: dict[str, object], said: str) -> None:
    with pytest.raises(ExportQueryError, match=said):
        from_config(declared)


def test_parameters_are_typed_and_constrained() -> None:
    (query,) = from_config(
        {
            "q": {
                "source": "s",
                "sql": "SELECT %(n)s, %(when)s, %(code)s",
                "params": {
                    "n": {"type": "integer", "ge": 1, "le": 10},
                    "when": {"type": "datetime"},
                    "code": {"type": "string", "pattern": "^[A-Z]{2}$", "required": False},
                },
            }
        }
    )
    ok = query.params.model_validate({"n": 3, "when": "2026-01-01T00:00:00Z"})
    assert ok.model_dump()["code"] is None
    for bad in (
        {"n": 0, "when": "2026-01-01T00:00:00Z"},
        {"n": 1, "when": "2026-01-01T00:00:00"},  # no time zone
        {"n": 1, "when": "2026-01-01T00:00:00Z", "code": "fra"},
        {"n": 1, "when": "2026-01-01T00:00:00Z", "other": 1},
    ):
        with pytest.raises(ValidationError):
            query.params.model_validate(bad)


def test_the_input_schema_shows_every_query() -> None:
    queries = collect(
        {
            "a": {"source": "s", "sql": "SELECT 1", "description": "The first."},
            "b": {"source": "s", "sql": "SELECT %(x)s", "params": {"x": {"type": "number"}}},
        },
        {"s"},
    )
    schema = json.dumps(input_model(queries).model_json_schema())
    assert "The first." in schema
    assert '"b"' in schema
    assert '"number"' in schema


@pytest.fixture
def declaring_package(tmp_path: Path) -> Iterator[None]:
    """A package declaring a query through the entry point group, as if pip-installed."""
    (tmp_path / "declaring.py").write_text(_DECLARING)
    info = tmp_path / "declaring-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: declaring\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[taskq_export.queries]\nmine = declaring:made\n")
    sys.path.insert(0, str(tmp_path))
    yield
    sys.path.remove(str(tmp_path))
    sys.modules.pop("declaring", None)


_DECLARING = """
from pydantic import BaseModel
from taskq_export import ExportQuery

class Window(BaseModel):
    days: int

def made():
    return [ExportQuery(name="recent", source="s", sql="SELECT %(days)s", params=Window)]
"""


@pytest.mark.usefixtures("declaring_package")
def test_queries_from_an_entry_point() -> None:
    queries = collect({}, {"s"})
    assert list(queries) == ["recent"]
    assert queries["recent"].params.model_validate({"days": 3})
    with pytest.raises(ExportQueryError, match="declared twice"):
        collect({"recent": {"source": "s", "sql": "SELECT 1"}}, {"s"})
    with pytest.raises(ExportQueryError, match="source 's'"):
        collect({}, {"other"})
