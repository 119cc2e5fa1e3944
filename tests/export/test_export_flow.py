"""ExportTask end to end: declared in the environment, described by GET /task-types, refused with
a 422 for bad parameters, run by a worker, its file downloaded from the API."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Processes, Servers, taskq, wait_for
from tests.export.conftest import ROWS, source_url, start_api

QUERIES = {
    "rows_from": {
        "source": "main",
        "description": "Rows from an id on.",
        "sql": "SELECT id, name, amount FROM export_rows WHERE id >= %(first)s ORDER BY id",
        "params": {"first": {"type": "integer", "ge": 1, "description": "The first id."}},
    }
}


@pytest.fixture
def export_env(export_table: Servers, tmp_path: Path) -> dict[str, str]:
    return {
        "TASKQ_EXPORT_SOURCES": json.dumps({"main": source_url(export_table)}),
        "TASKQ_EXPORT_QUERIES": json.dumps(QUERIES),
        "TASKQ_ARTIFACTS_URL": str(tmp_path / "artifacts"),
    }


@pytest.fixture
def client(
    clean: Servers, export_env: dict[str, str], processes: Processes
) -> Iterator[httpx.Client]:
    http = start_api(processes, clean.env(**export_env))
    try:
        yield http
    finally:
        http.close()


def test_export_through_the_api(
    client: httpx.Client, clean: Servers, export_env: dict[str, str], processes: Processes
) -> None:
    types = {t["name"]: t for t in client.get("/task-types").json()["task_types"]}
    schema = json.dumps(types["ExportTask"]["input_schema"])
    assert "rows_from" in schema
    assert "The first id." in schema

    refused = client.post(
        "/tasks/",
        json={"task_type": "ExportTask", "input_data": {"query": "rows_from", "params": {}}},
    )
    assert refused.status_code == 422
    (error,) = refused.json()["detail"]
    assert error["loc"] == ["body", "input_data", "params", "first"]
    wrong = client.post(
        "/tasks/",
        json={
            "task_type": "ExportTask",
            "input_data": {"query": "rows_from", "params": {"first": 1}, "source": "x"},
        },
    )
    assert wrong.status_code == 422

    body = {"query": "rows_from", "params": {"first": 101}, "format": "csv"}
    created = client.post("/tasks/", json={"task_type": "ExportTask", "input_data": body})
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    processes.spawn(taskq("worker", "--concurrency", "2"), clean.env(**export_env), "worker")

    def finished() -> dict[str, Any] | None:
        task: dict[str, Any] = client.get(f"/tasks/{task_id}").json()
        return task if task["status"] in ("completed", "failed") else None

    task = wait_for(finished, timeout=60, what="the export to finish")
    assert task["status"] == "completed", task["error"]
    rows = ROWS - 100
    assert task["result"] == {
        "artifact": "rows_from.csv",
        "rows": rows,
        "bytes": task["artifacts"][0]["size"],
        "format": "csv",
        "gzip": False,
    }
    assert task["progress"]["done"] == rows
    assert task["progress"]["total"] == rows
    download = client.get(f"/tasks/{task_id}/artifacts/rows_from.csv")
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/csv")
    records = list(csv.reader(io.StringIO(download.text)))
    assert records[0] == ["id", "name", "amount"]
    assert records[1][0] == "101"
    assert len(records) == rows + 1
