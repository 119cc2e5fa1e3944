"""A table to export, in the suite's PostgreSQL, and ExportTask runs in this process."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from taskq_core import TaskContext
from taskq_core.artifacts import AttemptArtifacts
from tests.conftest import Servers

ROWS = 25_000  # more than one fetch batch and several progress reports

_TABLE = """
CREATE SCHEMA IF NOT EXISTS export_src;
SET search_path = export_src;
DROP TABLE IF EXISTS export_rows;
CREATE TABLE export_rows (
    id bigint PRIMARY KEY,
    name text,
    amount numeric(12, 2),
    ratio double precision,
    flag boolean,
    created timestamptz,
    day date,
    payload jsonb
);
INSERT INTO export_rows
SELECT i,
       CASE WHEN i % 7 = 0 THEN NULL ELSE 'row ' || i || E', "quoted"\\nnewline é' END,
       (i * 1.25)::numeric(12, 2),
       i / 3.0,
       i % 2 = 0,
       timestamptz '2026-01-01 00:00:00+00' + make_interval(secs => i),
       date '2026-01-01' + (i % 365),
       jsonb_build_object('i', i, 'tags', jsonb_build_array('a', 'b'))
FROM generate_series(1, %(rows)s) AS i;
DROP SEQUENCE IF EXISTS export_seq;
CREATE SEQUENCE export_seq;
CREATE OR REPLACE FUNCTION export_delete_all() RETURNS bigint LANGUAGE sql
    AS 'WITH d AS (DELETE FROM export_rows RETURNING 1) SELECT count(*) FROM d';
"""


@pytest.fixture(scope="session")
def export_table(servers: Servers) -> Servers:
    # A schema of its own: the suite's schema stays the migrations' (tests/db/test_db.py).
    servers.sql(_TABLE.replace("%(rows)s", str(ROWS)))
    return servers


def source_url(servers: Servers) -> str:
    """The suite's database as an export source whose search path finds the export schema."""
    separator = "&" if "?" in servers.database_url else "?"
    return f"{servers.database_url}{separator}options=-csearch_path%3Dexport_src"


@dataclass
class Recorder:
    """A reporter writing artifacts into a real local store, keeping every progress report."""

    artifacts: AttemptArtifacts
    reports: list[tuple[float, float | None, str | None]] = field(default_factory=list)

    def progress(self, done: float, total: float | None, message: str | None) -> None:
        self.reports.append((done, total, message))

    def artifact(self, name: str, content_type: str) -> BinaryIO:
        return self.artifacts.open(name, content_type)


@dataclass
class Run:
    output: Any
    recorder: Recorder
    folder: Path

    def file(self, name: str) -> bytes:
        record = next(r for r in self.recorder.artifacts.published() if r["name"] == name)
        key: str = record["key"]
        return (self.folder / key).read_bytes()


Exporter = Callable[..., Run]


@pytest.fixture
def export(export_table: Servers, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Exporter:
    """`export(input, queries={...}, **settings)`: build ExportTask from that configuration (as a
    worker does at start) and run it here, on the suite's database as source `main`."""
    monkeypatch.chdir(tmp_path)  # no .env

    def run(data: dict[str, Any], queries: dict[str, Any], **settings: str) -> Run:
        from taskq_export import build_task

        monkeypatch.setenv("TASKQ_EXPORT_SOURCES", json.dumps({"main": source_url(export_table)}))
        monkeypatch.setenv("TASKQ_EXPORT_QUERIES", json.dumps(queries))
        for key, value in settings.items():
            monkeypatch.setenv(f"TASKQ_EXPORT_{key.upper()}", value)
        task_class = build_task()
        payload = task_class.Input.model_validate(data)
        store = tmp_path / "store"
        recorder = Recorder(AttemptArtifacts(str(store), 1, 1))
        ctx = TaskContext(
            task_id=1,
            task_type="ExportTask",
            attempt=1,
            max_attempts=1,
            priority=3,
            worker_id="test",
            reporter=recorder,
        )
        output = task_class().run(payload, ctx)
        return Run(output, recorder, store)

    return run
