"""Writing rows out: CSV straight from `COPY ... TO STDOUT`, JSON Lines and Parquet from a
server-side cursor, each in batches, so memory holds one batch whatever the row count."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, BinaryIO

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from psycopg import sql

from taskq_core import PermanentError

BATCH_ROWS = 20_000  # rows per fetch from the server-side cursor, and per Parquet row group part
FLUSH_BYTES = 1024 * 1024  # CSV rows are gathered up to this before each write
PROGRESS_ROWS = 10_000  # rows between two progress reports
GZIP_LEVEL = 6

Progress = Callable[[int], None]


class LimitError(PermanentError):
    """An export went past a row or byte cap (the artifact is not published)."""


class Output:
    """The artifact's writer behind optional gzip, counting bytes against the cap."""

    def __init__(self, artifact: BinaryIO, compress: bool, max_bytes: int) -> None:
        self.artifact = artifact
        self.sink: BinaryIO = (
            gzip.GzipFile(fileobj=artifact, mode="wb", compresslevel=GZIP_LEVEL, mtime=0)  # type: ignore[assignment]
            if compress
            else artifact
        )
        self.max_bytes = max_bytes
        self.bytes = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.bytes += len(data)
        if self.bytes > self.max_bytes:
            raise LimitError(f"the export is larger than its cap of {self.max_bytes} bytes")
        return self.sink.write(data)

    # What pyarrow asks of a file it writes to.
    def tell(self) -> int:
        return self.bytes

    @property
    def closed(self) -> bool:
        return False

    def flush(self) -> None:
        pass

    def finish(self) -> None:
        if self.sink is not self.artifact:
            self.sink.close()  # the gzip trailer; the artifact itself is closed by its owner


@dataclass(frozen=True)
class Export:
    """What a writer is given, whatever the format: the statement, where the bytes go, the row
    cap and whom to tell how many rows are out."""

    query: sql.Composed
    params: dict[str, Any]
    out: Output
    max_rows: int
    progress: Progress

    def check_rows(self, rows: int) -> None:
        if rows > self.max_rows:
            raise LimitError(f"the query returned more than its cap of {self.max_rows} rows")


def write_csv(cursor: psycopg.Cursor[Any], export: Export) -> int:
    """COPY the rows out as CSV with a header; one COPY message is one row."""
    statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER)").format(export.query)
    rows = -1  # the header
    pending = bytearray()
    with cursor.copy(statement, export.params) as copy:
        for data in copy:
            rows += 1
            export.check_rows(rows)
            pending += data
            if len(pending) >= FLUSH_BYTES:
                export.out.write(pending)
                pending.clear()
            if rows and rows % PROGRESS_ROWS == 0:
                export.progress(rows)
    export.out.write(pending)
    return max(rows, 0)


def _batches(cursor: psycopg.Cursor[Any], export: Export) -> Iterator[list[tuple[Any, ...]]]:
    rows = 0
    while batch := cursor.fetchmany(BATCH_ROWS):
        rows += len(batch)
        export.check_rows(rows)
        yield batch
        export.progress(rows)


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID | dt.timedelta):
        return str(value)
    if isinstance(value, bytes | memoryview):
        return base64.b64encode(bytes(value)).decode()
    raise TypeError(f"cannot write a {type(value).__name__} as JSON")


def write_jsonl(cursor: psycopg.Cursor[Any], export: Export) -> int:
    """One JSON object per row, keys in column order."""
    cursor.execute(export.query, export.params)
    names = [column.name for column in cursor.description or ()]
    encode = json.JSONEncoder(default=_json_default, ensure_ascii=False, separators=(",", ":"))
    rows = 0
    for batch in _batches(cursor, export):
        lines = "".join(encode.encode(dict(zip(names, row, strict=True))) + "\n" for row in batch)
        export.out.write(lines.encode())
        rows += len(batch)
    return rows


# PostgreSQL type oid -> Arrow type; anything else is written as its text.
_ARROW_TYPES: dict[int, pa.DataType] = {
    16: pa.bool_(),
    20: pa.int64(),
    21: pa.int16(),
    23: pa.int32(),
    26: pa.int64(),
    700: pa.float32(),
    701: pa.float64(),
    25: pa.string(),
    1043: pa.string(),
    1042: pa.string(),
    19: pa.string(),
    1082: pa.date32(),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
    17: pa.binary(),
}
_JSON_OIDS = {114, 3802}


def _column(values: Sequence[Any], oid: int, kind: pa.DataType) -> pa.Array:
    if oid in _ARROW_TYPES:
        return pa.array(values, type=kind)
    if oid in _JSON_OIDS:
        values = [None if v is None else json.dumps(v, default=_json_default) for v in values]
    else:
        values = [None if v is None else str(v) for v in values]
    return pa.array(values, type=pa.string())


def write_parquet(cursor: psycopg.Cursor[Any], export: Export, compression: str) -> int:
    """Parquet with a schema from the columns' PostgreSQL types; one row group per batch, its
    pages compressed with `compression` (gzip or snappy)."""
    cursor.execute(export.query, export.params)
    columns = list(cursor.description or ())
    oids = [column.type_code for column in columns]
    kinds = [_ARROW_TYPES.get(oid, pa.string()) for oid in oids]
    schema = pa.schema([pa.field(c.name, k) for c, k in zip(columns, kinds, strict=True)])
    rows = 0
    with pq.ParquetWriter(export.out, schema, compression=compression) as writer:
        for batch in _batches(cursor, export):
            by_column = list(zip(*batch, strict=True))
            arrays = [
                _column(values, oid, kind)
                for values, oid, kind in zip(by_column, oids, kinds, strict=True)
            ]
            writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
            rows += len(batch)
    return rows
