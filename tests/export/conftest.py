"""A table to export, in the suite's PostgreSQL, ExportTask runs in this process, and the pieces
of the end-to-end tests: a package declaring queries, an API process configured for exports."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import pytest

from taskq_core import TaskContext
from taskq_core.artifacts import AttemptArtifacts
from tests.conftest import PLUGIN_SOURCES, Processes, Servers, free_port, taskq, wait_for

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


@pytest.fixture(scope="session")
def query_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder that, on PYTHONPATH, makes tests/plugins/taskq_testqueries.py look pip-installed:
    a package declaring export queries through the `taskq_export.queries` entry point group."""
    folder = tmp_path_factory.mktemp("query-site")
    shutil.copy(PLUGIN_SOURCES / "taskq_testqueries.py", folder / "taskq_testqueries.py")
    info = folder / "taskq_testqueries-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: taskq-testqueries\nVersion: 0.1.0\n"
    )
    (info / "entry_points.txt").write_text(
        "[taskq_export.queries]\ntestqueries = taskq_testqueries:QUERIES\n"
    )
    return folder


def start_api(processes: Processes, env: dict[str, str]) -> httpx.Client:
    """An API process with `env`, once it answers; the caller closes the client."""
    port = free_port()
    proc = processes.spawn(taskq("api", "--port", str(port)), env, "api")
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(processes.output())
        try:
            return http.get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, what="the API to start")
    return http


def plugin_env(servers: Servers, site: Path, **extra: str) -> dict[str, str]:
    """A taskq process's environment with source `main` declared and no query of the operator's:
    every query comes from the declaring package at `site` (see `query_site`)."""
    sources = json.dumps({"main": source_url(servers)})
    return servers.env(site, TASKQ_EXPORT_SOURCES=sources, **extra)
