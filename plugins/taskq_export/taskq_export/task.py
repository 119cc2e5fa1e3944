"""ExportTask: run a named query on a named source in a read-only transaction and write its rows
to an artifact, reporting progress as they go."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel, create_model, model_validator

from taskq_core import PermanentError, Task, TaskContext
from taskq_export.queries import ExportQuery, collect
from taskq_export.settings import ExportSettings

if TYPE_CHECKING:
    import psycopg

    from taskq_export import writers

Format = Literal["csv", "jsonl", "parquet"]
FILENAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,150}$"
CONTENT_TYPES = {
    "csv": "text/csv",
    "jsonl": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}
CONNECT_TIMEOUT = 10  # seconds


class ExportOutput(BaseModel):
    artifact: str = Field(description="Download it from GET /tasks/{id}/artifacts/{artifact}.")
    rows: int
    bytes: int = Field(description="Bytes written before compression.")
    format: Format
    gzip: bool


def _request_model(query: ExportQuery) -> type[BaseModel]:
    """The input of an export of `query`: its parameters, typed, and the output's shape."""
    tag: Any = Literal[query.name]  # a literal made at run time: typed loosely on purpose
    has_required = any(f.is_required() for f in query.params.model_fields.values())
    params_default: Any = ... if has_required else Field(default_factory=query.params)
    model: type[BaseModel] = create_model(
        f"Export_{query.name}",
        __config__=ConfigDict(extra="forbid", title=f"export {query.name}"),
        __doc__=query.description or f"Export the rows of query {query.name}.",
        query=(tag, Field(description="The named query to run.")),
        params=(query.params, params_default),
        format=(Format, "csv"),
        gzip=(
            bool,
            Field(
                default=False,
                description="gzip the CSV or JSON Lines file; for Parquet, gzip its pages "
                "instead of snappy.",
            ),
        ),
        filename=(
            str | None,
            Field(
                default=None,
                pattern=FILENAME_PATTERN,
                description="The artifact's name; default: the query's name and extension.",
            ),
        ),
    )
    return model


class _NoQueries(BaseModel):
    """No export query is declared: every request is refused."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _refuse(cls, value: Any) -> Any:
        raise ValueError(
            "no export queries are declared on this server (TASKQ_EXPORT_QUERIES, "
            "TASKQ_EXPORT_QUERIES_FILE or the taskq_export.queries entry points)"
        )


def input_model(queries: dict[str, ExportQuery]) -> type[BaseModel]:
    """One branch per query, told apart by `query`: a request with an unknown query, or the
    wrong parameters for its query, is refused at submission (422)."""
    if not queries:
        return _NoQueries
    branches = [_request_model(q) for q in queries.values()]
    if len(branches) == 1:
        root: Any = branches[0]
    else:
        root = Annotated[Union[tuple(branches)], Field(discriminator="query")]  # noqa: UP007
    model: type[BaseModel] = create_model(
        "ExportInput", __base__=RootModel[root], __doc__="Which query to export, and how."
    )
    return model


class ExportTask(Task):
    """Rows of a named query to CSV, JSON Lines or Parquet (optionally gzipped), as an artifact."""

    name = "ExportTask"
    description = (
        "Export the rows of a named, typed query on an operator-declared PostgreSQL source to "
        "CSV, JSON Lines or Parquet, as a downloadable artifact; memory stays flat."
    )
    Input: ClassVar[type[BaseModel]] = _NoQueries
    Output = ExportOutput
    max_attempts = 2
    settings: ClassVar[ExportSettings]
    queries: ClassVar[dict[str, ExportQuery]]

    def run(self, data: Any, ctx: TaskContext) -> ExportOutput:
        # Here, not at the top: every worker and its runners' fork server load this plugin
        # before their first task, and psycopg and the writers (pyarrow) would add a tenth of a
        # second to that for a task type a worker may never run.
        import psycopg
        from psycopg import sql

        from taskq_export import writers

        request = data.root if isinstance(data, RootModel) else data
        query = self.queries[request.query]
        settings = self.settings
        source = settings.sources[query.source].get_secret_value()
        max_rows = min(settings.max_rows, query.max_rows or settings.max_rows)
        timeout = query.timeout_seconds or settings.statement_timeout_seconds
        fmt: Format = request.format
        compress = bool(request.gzip) and fmt != "parquet"
        name = request.filename or f"{query.name}.{fmt}" + (".gz" if compress else "")
        content_type = "application/gzip" if compress else CONTENT_TYPES[fmt]
        params = request.params.model_dump()
        statement = sql.SQL("SELECT * FROM ({}) AS export LIMIT {}").format(
            sql.SQL(query.statement),  # the operator's SQL, never a request's
            sql.Literal(max_rows + 1),
        )
        try:
            conn = psycopg.connect(source, connect_timeout=CONNECT_TIMEOUT, autocommit=True)
        except psycopg.OperationalError as exc:
            # Unreachable may be temporary: an ordinary error, so the task is retried.
            message = f"export source {query.source!r} unreachable: {_line(exc)}"
            raise ConnectionError(message) from None
        with conn, _database_errors(query.name, timeout):
            # One read-only snapshot for the count and the rows; nothing can be written.
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            conn.execute(
                "SELECT set_config('statement_timeout', %s, true)", (f"{int(timeout * 1000)}",)
            )
            total = None
            if query.count:
                counted = sql.SQL("SELECT count(*) FROM ({}) AS export").format(statement)
                row = conn.execute(counted, params).fetchone()
                total = min(row[0], max_rows + 1) if row else None
            ctx.progress(0, total, f"exporting {query.name}")
            report = functools.partial(_report, ctx, total)
            with ctx.artifact(name, content_type) as artifact:
                out = writers.Output(artifact, compress, settings.max_bytes)
                export = writers.Export(statement, params, out, max_rows, report)
                rows = _write(conn, fmt, export, gzip=bool(request.gzip))
                out.finish()
            conn.execute("COMMIT")
        ctx.progress(rows, total, f"{rows} rows written")
        return ExportOutput(artifact=name, rows=rows, bytes=out.bytes, format=fmt, gzip=compress)


def _write(conn: psycopg.Connection[Any], fmt: str, export: writers.Export, gzip: bool) -> int:
    from taskq_export import writers

    if fmt == "csv":
        with conn.cursor() as cursor:
            return writers.write_csv(cursor, export)
    # A server-side cursor: the rows stay on the server until fetched, a batch at a time.
    with conn.cursor(name="taskq_export", binary=True) as cursor:
        if fmt == "jsonl":
            return writers.write_jsonl(cursor, export)
        # Parquet compresses its own pages: gzip there, not around the file.
        return writers.write_parquet(cursor, export, "gzip" if gzip else "snappy")


@contextlib.contextmanager
def _database_errors(query: str, timeout: float) -> Iterator[None]:
    """What PostgreSQL refuses, as the task's error: permanent unless the connection failed."""
    import psycopg

    try:
        yield
    except psycopg.errors.QueryCanceled as exc:
        raise PermanentError(f"the export ran past its {timeout:g}s limit") from exc
    except psycopg.errors.ReadOnlySqlTransaction as exc:
        raise PermanentError(f"the query tried to write: {_line(exc)}") from exc
    except psycopg.OperationalError:
        raise  # the connection: perhaps temporary, so retried
    except psycopg.Error as exc:
        # The declared SQL itself is wrong (a column that is gone, say): no retry can fix it.
        raise PermanentError(f"query {query!r} failed: {_line(exc)}") from exc


def _report(ctx: TaskContext, total: int | None, rows: int) -> None:
    ctx.progress(rows, total, f"{rows} rows")


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def build_task() -> type[ExportTask]:
    """ExportTask bound to this process's settings and declared queries."""
    settings = ExportSettings()
    queries = collect(settings.declared_queries(), set(settings.sources))
    return type(
        "ExportTask",
        (ExportTask,),
        {"Input": input_model(queries), "settings": settings, "queries": queries},
    )
