"""ExportTask against the suite's real PostgreSQL: formats, gzip, parameters, progress, and the
safety rails (read-only, timeout, row and byte caps, named sources and queries only)."""

from __future__ import annotations

import csv
import gzip
import io
import json
from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from taskq_export import ExportQueryError

from taskq_core import PermanentError
from tests.conftest import Servers
from tests.export.conftest import ROWS, Exporter

ALL = {"all_rows": {"source": "main", "sql": "SELECT * FROM export_rows ORDER BY id"}}
SINCE = {
    "rows_from": {
        "source": "main",
        "description": "Rows from an id on, up to a day.",
        "sql": "SELECT id, name, day FROM export_rows WHERE id >= %(first)s AND day <= %(until)s "
        "ORDER BY id;",
        "params": {
            "first": {"type": "integer", "ge": 1},
            "until": {"type": "date", "required": False, "default": "2026-12-31"},
        },
    }
}


def check_progress(reports: list[tuple[float, float | None, str | None]], rows: int) -> None:
    done = [d for d, _, _ in reports]
    assert done == sorted(done)
    assert done[0] == 0
    assert done[-1] == rows
    assert all(total == rows for _, total, _ in reports)
    assert len(reports) >= rows // 20_000  # reported as rows are written, not only at the end


def test_csv_is_what_copy_gives(export: Exporter, export_table: Servers) -> None:
    run = export({"query": "all_rows"}, ALL)
    assert run.output.rows == ROWS
    assert run.output.artifact == "all_rows.csv"
    data = run.file("all_rows.csv")
    assert run.output.bytes == len(data)
    records = list(csv.reader(io.StringIO(data.decode())))
    assert records[0] == ["id", "name", "amount", "ratio", "flag", "created", "day", "payload"]
    assert len(records) == ROWS + 1
    assert records[1][1] == 'row 1, "quoted"\nnewline é'
    assert records[7][1] == ""  # NULL
    (published,) = run.recorder.artifacts.published()
    assert published["content_type"] == "text/csv"
    check_progress(run.recorder.reports, ROWS)


def test_jsonl_keeps_types_readable(export: Exporter) -> None:
    run = export({"query": "all_rows", "format": "jsonl"}, ALL)
    lines = run.file("all_rows.jsonl").decode().splitlines()
    assert len(lines) == ROWS
    first = json.loads(lines[0])
    assert first == {
        "id": 1,
        "name": 'row 1, "quoted"\nnewline é',
        "amount": "1.25",
        "ratio": pytest.approx(1 / 3),
        "flag": False,
        "created": "2026-01-01T00:00:01+00:00",
        "day": "2026-01-02",
        "payload": {"i": 1, "tags": ["a", "b"]},
    }
    assert json.loads(lines[6])["name"] is None
    check_progress(run.recorder.reports, ROWS)


def test_parquet_has_the_columns_types(export: Exporter) -> None:
    run = export({"query": "all_rows", "format": "parquet"}, ALL)
    table = pq.read_table(io.BytesIO(run.file("all_rows.parquet")))
    assert table.num_rows == ROWS
    schema = table.schema
    assert schema.field("id").type == pa.int64()
    assert schema.field("flag").type == pa.bool_()
    assert schema.field("created").type == pa.timestamp("us", tz="UTC")
    assert schema.field("day").type == pa.date32()
    assert schema.field("amount").type == pa.string()  # numeric: exact, as text
    assert table.column("amount")[3].as_py() == "5.00"
    assert table.column("name")[6].as_py() is None
    assert json.loads(table.column("payload")[0].as_py()) == {"i": 1, "tags": ["a", "b"]}
    check_progress(run.recorder.reports, ROWS)


def test_gzip(export: Exporter) -> None:
    plain = export({"query": "all_rows"}, ALL).file("all_rows.csv")
    run = export({"query": "all_rows", "gzip": True, "filename": "rows.csv.gz"}, ALL)
    packed = run.file("rows.csv.gz")
    assert gzip.decompress(packed) == plain
    assert len(packed) < len(plain) / 2
    assert run.output.gzip is True
    assert run.recorder.artifacts.published()[0]["content_type"] == "application/gzip"


def test_typed_parameters(export: Exporter) -> None:
    run = export({"query": "rows_from", "params": {"first": ROWS - 9}, "format": "jsonl"}, SINCE)
    lines = [json.loads(line) for line in run.file("rows_from.jsonl").decode().splitlines()]
    assert [row["id"] for row in lines] == list(range(ROWS - 9, ROWS + 1))
    run = export(
        {"query": "rows_from", "params": {"first": 1, "until": "2026-01-03"}, "format": "jsonl"},
        SINCE,
    )
    days = {json.loads(line)["day"] for line in run.file("rows_from.jsonl").decode().splitlines()}
    assert max(date.fromisoformat(d) for d in days) == date(2026, 1, 3)


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"query": "rows_from", "params": {"first": 0}}, "params.first"),
        ({"query": "rows_from", "params": {"first": "x"}}, "params.first"),
        ({"query": "rows_from", "params": {}}, "params.first"),
        ({"query": "rows_from", "params": {"first": 1, "drop": "table"}}, "params.drop"),
        ({"query": "rows_from", "params": {"first": 1}, "format": "xlsx"}, "format"),
        ({"query": "nope"}, "'query' does not match any of the expected tags: 'rows_from'"),
        ({"query": "rows_from", "params": {"first": 1}, "filename": "../x"}, "filename"),
        ({"query": "rows_from", "params": {"first": 1}, "sql": "SELECT 1"}, "sql"),
    ],
)
def test_bad_requests_are_refused_with_their_field(
    export: Exporter, data: dict[str, object], where: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        export(data, {**SINCE, **ALL})
    errors = refused.value.errors()
    paths = [".".join(str(p) for p in e["loc"]) for e in errors]
    # An unknown query has no field path below the input: its message names the tag and the
    # known queries instead.
    said = [f"{path} {e['msg']}" for path, e in zip(paths, errors, strict=True)]
    assert any(where in line for line in said), said


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize(
    "statement", ["SELECT export_delete_all() AS n", "SELECT nextval('export_seq') AS n"]
)
def test_an_export_cannot_write(
    export: Exporter, export_table: Servers, statement: str, fmt: str
) -> None:
    writer = {"sneaky": {"source": "main", "sql": statement, "count": False}}
    with pytest.raises(PermanentError, match="tried to write"):
        export({"query": "sneaky", "format": fmt}, writer)
    assert export_table.sql("SELECT count(*) FROM export_src.export_rows")[0][0] == ROWS
    sequence = export_table.sql("SELECT last_value, is_called FROM export_src.export_seq")
    assert sequence == [(1, False)]


def test_broken_sql_is_a_permanent_error(export: Exporter) -> None:
    broken = {"broken": {"source": "main", "sql": "SELECT no_such_column FROM export_rows"}}
    with pytest.raises(PermanentError, match="query 'broken' failed: column"):
        export({"query": "broken"}, broken)


def test_statement_timeout(export: Exporter) -> None:
    slow = {
        "slow": {
            "source": "main",
            "sql": "SELECT pg_sleep(30) AS slept",
            "count": False,
            "timeout_seconds": 0.2,
        }
    }
    with pytest.raises(PermanentError, match=r"past its 0\.2s limit"):
        export({"query": "slow"}, slow)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_row_cap(export: Exporter, fmt: str) -> None:
    with pytest.raises(PermanentError, match="more than its cap of 1000 rows") as failed:
        export({"query": "all_rows", "format": fmt}, ALL, max_rows="1000")
    assert type(failed.value).__name__ == "LimitError"


def test_byte_cap(export: Exporter) -> None:
    with pytest.raises(PermanentError, match="larger than its cap of 100000 bytes"):
        export({"query": "all_rows", "format": "jsonl"}, ALL, max_bytes="100000")


def test_queries_must_name_a_configured_source(export: Exporter) -> None:
    elsewhere = {"q": {"source": "warehouse", "sql": "SELECT 1"}}
    with pytest.raises(ExportQueryError, match="source 'warehouse'"):
        export({"query": "q"}, elsewhere)


def test_no_declared_query_refuses_every_request(export: Exporter) -> None:
    with pytest.raises(ValidationError, match="no export queries are declared"):
        export({"query": "anything"}, {})
