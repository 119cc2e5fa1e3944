"""Byte ranges and artifact names, as pure functions (the HTTP side is in test_artifacts.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskq_core.api.routes.artifacts import byte_range
from taskq_core.artifacts import ArtifactNameError, check_content_type, check_name
from taskq_core.errors import RangeNotSatisfiableError


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", (0, 10)),
        ("bytes=10-", (10, 100)),
        ("bytes=-10", (90, 100)),
        ("bytes=-1000", (0, 100)),
        ("bytes=95-1000", (95, 100)),
        ("bytes=0-0", (0, 1)),
        ("bytes=0-9,20-29", None),  # several ranges: the whole file (allowed by RFC 9110)
        ("items=0-9", None),
        ("bytes=-", None),
    ],
)
def test_byte_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=200-300", "bytes=5-2", "bytes=-0"])
def test_unsatisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiableError):
        byte_range(header, 100)


@given(st.text(max_size=300))
def test_a_name_is_one_safe_path_segment(name: str) -> None:
    try:
        check_name(name)
    except ArtifactNameError:
        return
    assert "/" not in name
    assert "\\" not in name
    assert not name.startswith(".")
    assert name.isascii()
    assert name.isprintable()
    assert 1 <= len(name) <= 200


@pytest.mark.parametrize("name", ["report.csv\n", "a\nb", "..", ".env", "a/b", "a\\b", "é.csv", ""])
def test_names_refused(name: str) -> None:
    with pytest.raises(ArtifactNameError):
        check_name(name)


@pytest.mark.parametrize(
    "content_type", ["text/csv\n", "text/csv\r\nX-Evil: 1", "csv", "text/csv; charset=utf-8\n"]
)
def test_content_types_refused(content_type: str) -> None:
    with pytest.raises(ValueError, match="not a media type"):
        check_content_type(content_type)


def test_content_types_accepted() -> None:
    assert check_content_type("text/csv; charset=utf-8") == "text/csv; charset=utf-8"
    assert check_content_type("application/vnd.apache.parquet")
