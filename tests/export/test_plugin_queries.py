"""Export queries another package declares (the `taskq_export.queries` entry point group), end to
end: the API checks a request against the package's own parameter models (a 422 naming the field,
nothing stored or queued), a worker process runs the export, and the file downloaded holds the
rows the query reads."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from taskq_core.broker import PRIORITIES, queue_key
from tests.conftest import Processes, Servers, taskq, wait_for
from tests.export.conftest import plugin_env, source_url, start_api


@pytest.fixture
def env(clean: Servers, export_table: Servers, query_site: Path, tmp_path: Path) -> dict[str, str]:
    return plugin_env(clean, query_site, TASKQ_ARTIFACTS_URL=str(tmp_path / "artifacts"))


@pytest.fixture
def api(env: dict[str, str], processes: Processes) -> Iterator[httpx.Client]:
    http = start_api(processes, env)
    yield http
    http.close()


def submit(api: httpx.Client, input_data: dict[str, Any]) -> httpx.Response:
    return api.post("/tasks/", json={"task_type": "ExportTask", "input_data": input_data})


def finished(api: httpx.Client, task_id: int) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        task: dict[str, Any] = api.get(f"/tasks/{task_id}").json()
        return task if task["status"] in ("completed", "failed") else None

    found: dict[str, Any] = wait_for(done, timeout=60, what=f"export {task_id} to finish")
    return found


def expected_rows(servers: Servers, first: int, last: int, even_only: bool) -> list[tuple[Any]]:
    """What `rows_between` reads, read here by a query of the test's own."""
    with psycopg.connect(source_url(servers)) as conn:
        rows = conn.execute(
            "SELECT id, name, amount FROM export_rows WHERE id BETWEEN %s AND %s ORDER BY id",
            (first, last),
        ).fetchall()
    return [row for row in rows if not even_only or row[0] % 2 == 0]


def test_the_types_list_the_plugins_queries(api: httpx.Client) -> None:
    types = {t["name"]: t for t in api.get("/task-types").json()["task_types"]}
    schema = json.dumps(types["ExportTask"]["input_schema"])
    for said in ("rows_between", "padded", "The first id.", "Rows whose id is in a range"):
        assert said in schema


def test_a_plugin_query_runs_in_a_worker(
    api: httpx.Client, env: dict[str, str], processes: Processes, clean: Servers
) -> None:
    params = {"first": 10, "last": 2_500, "even_only": True}
    as_csv = submit(api, {"query": "rows_between", "params": params})
    as_jsonl = submit(
        api, {"query": "rows_between", "params": params, "format": "jsonl", "gzip": False}
    )
    assert as_csv.status_code == 201, as_csv.text
    assert as_jsonl.status_code == 201, as_jsonl.text
    processes.spawn(taskq("worker", "--concurrency", "2"), env, "worker")
    rows = expected_rows(clean, 10, 2_500, even_only=True)
    assert len(rows) == 1_246  # ids 10, 12, ... 2500

    csv_task = finished(api, as_csv.json()["id"])
    assert csv_task["status"] == "completed", csv_task["error"]
    assert csv_task["result"]["rows"] == len(rows)
    (listed,) = csv_task["artifacts"]
    assert listed["name"] == "rows_between.csv"
    download = api.get(f"/tasks/{csv_task['id']}/artifacts/rows_between.csv")
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == listed["sha256"]
    records = list(csv.reader(io.StringIO(download.content.decode())))
    assert records[0] == ["id", "name", "amount"]
    assert records[1:] == [[str(i), name or "", str(amount)] for i, name, amount in rows]

    jsonl_task = finished(api, as_jsonl.json()["id"])
    assert jsonl_task["status"] == "completed", jsonl_task["error"]
    download = api.get(f"/tasks/{jsonl_task['id']}/artifacts/rows_between.jsonl")
    assert download.status_code == 200
    lines = [json.loads(line) for line in download.text.splitlines()]
    assert lines == [{"id": i, "name": name, "amount": str(amount)} for i, name, amount in rows]


GOOD = {"rows": 3, "width": 1}


def loc_and_msg(response: httpx.Response) -> tuple[list[Any], str]:
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    return error["loc"], error["msg"]


@pytest.mark.parametrize(
    ("input_data", "loc", "said"),
    [
        (
            {"query": "no_such_query"},
            ["body", "input_data"],
            "'no_such_query' found using 'query' does not match any of the expected tags: "
            "'rows_between', 'padded'",
        ),
        (
            {"query": "rows_between", "params": {"first": 0, "last": 5}},
            ["body", "input_data", "rows_between", "params", "first"],
            "greater than or equal to 1",
        ),
        (
            {"query": "rows_between", "params": {"first": "ten", "last": 5}},
            ["body", "input_data", "rows_between", "params", "first"],
            "valid integer",
        ),
        (
            {"query": "rows_between", "params": {"first": 9, "last": 5}},
            ["body", "input_data", "rows_between", "params"],
            "last (5) is before first (9)",
        ),
        (
            {"query": "rows_between", "params": {"first": 1, "last": 5, "sql": "DELETE"}},
            ["body", "input_data", "rows_between", "params", "sql"],
            "Extra inputs are not permitted",
        ),
        (
            {"query": "rows_between"},
            ["body", "input_data", "rows_between", "params"],
            "Field required",
        ),
        (
            {"query": "padded", "params": {"rows": 2_000_000, "width": 1}},
            ["body", "input_data", "padded", "params", "rows"],
            "less than or equal to 1000000",
        ),
        (
            {"query": "padded", "params": {"rows": 1, "width": 1}, "filename": "../x"},
            ["body", "input_data", "padded", "filename"],
            "should match pattern",
        ),
    ],
)
def test_bad_requests_are_refused_by_field_and_nothing_is_stored(
    api: httpx.Client,
    clean: Servers,
    input_data: dict[str, Any],
    loc: list[Any],
    said: str,
) -> None:
    found_loc, msg = loc_and_msg(submit(api, input_data))
    assert found_loc == loc
    assert said in msg
    # In a batch, beside a good request: the whole batch is refused, naming the bad one.
    good = {"task_type": "ExportTask", "input_data": {"query": "padded", "params": GOOD}}
    bad = {"task_type": "ExportTask", "input_data": input_data}
    found_loc, msg = loc_and_msg(api.post("/tasks/batch", json={"tasks": [good, bad]}))
    assert found_loc == ["body", "tasks", 1, *loc[1:]]
    assert said in msg
    assert clean.sql("SELECT count(*) FROM tasks") == [(0,)]
    with clean.redis() as client:
        assert [client.llen(queue_key("default", p)) for p in PRIORITIES] == [0] * 5
