"""The commands users type: help, tasks clear, db upgrade, demo, the unconfigured case."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from alembic.script import ScriptDirectory

from taskq_core.client import Client
from taskq_core.db.engines import MIGRATIONS_DIR
from tests.conftest import Servers, free_port, taskq, wait_for

COMMANDS = [
    ["api"],
    ["worker"],
    ["db"],
    ["db", "upgrade"],
    ["tasks"],
    ["tasks", "show"],
    ["tasks", "get"],
    ["tasks", "cancel"],
    ["tasks", "retry"],
    ["tasks", "clear"],
    ["submit"],
    ["tasks", "purge"],
    ["schedules"],
    ["schedules", "create"],
    ["task-types"],
    ["task-types", "pause"],
    ["plugins"],
    ["demo"],
    ["dev"],
]


def run(
    args: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command: list[str]) -> None:
    result = run(taskq(*command, "--help"), dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: taskq " + " ".join(command))


def test_taskq_worker_script_has_help() -> None:
    script = Path(sys.executable).parent / "taskq-worker"
    result = run([str(script), "--help"], dict(os.environ))
    assert result.returncode == 0
    assert "--concurrency" in result.stdout


# What `taskq-worker` does without until its first task at least: each would be paid for in the
# start-up of every worker scaled from zero (the API, the command line's client and rendering, the
# database layer of the API and migrations, the embedded servers, the artifact store's fsspec).
NOT_FOR_A_WORKER = (
    "taskq_core.api",
    "taskq_core.db.engines",
    "taskq_core.embedded",
    "taskq_client",
    "fastapi",
    "sqlalchemy",
    "alembic",
    "rich",
    "httpx",
    "fsspec",
)


def test_taskq_worker_runs_a_task_without_what_a_worker_does_not_need(
    clean: Servers, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    modules = tmp_path / "modules"
    # The worker process's modules as it exits (its fork server and runners leave by os._exit).
    (site / "sitecustomize.py").write_text(
        "import atexit, sys\n"
        f"atexit.register(lambda: open({str(modules)!r}, 'w').write('\\n'.join(sys.modules)))\n"
    )
    client = Client(redis_url=clean.redis_url, database_url=clean.database_url)
    try:
        task_id = client.enqueue("FibonacciTask", {"n": 10})
    finally:
        client.close()
    script = Path(sys.executable).parent / "taskq-worker"
    worker = subprocess.Popen(
        [str(script), "--processes", "1"],
        env=clean.env(site),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: (
                clean.sql("SELECT status FROM tasks WHERE id = %s", (task_id,)) == [("completed",)]
            ),
            what="the task to complete",
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    imported = set(modules.read_text().split())
    assert {"taskq_core.worker.loop", "psycopg", "redis"} <= imported  # the list is the worker's
    packages = tuple(f"{name}." for name in NOT_FOR_A_WORKER)
    assert {m for m in imported if m in NOT_FOR_A_WORKER or m.startswith(packages)} == set()


def test_nothing_configured_and_no_dev_running_is_a_clear_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_")}
    env["TASKQ_DATA_DIR"] = str(tmp_path)  # where a running `taskq dev` would have left its state
    for command in (["tasks", "clear", "5"], ["db", "upgrade"], ["worker"], ["api"]):
        result = run(taskq(*command), env)
        assert result.returncode == 2, (command, result.stderr)
        assert "TASKQ_DATABASE_URL" in result.stderr
        assert "taskq dev" in result.stderr
    for command in (["tasks", "show"], ["submit", "FibonacciTask"], ["tasks", "get", "1"]):
        result = run(taskq(*command), env)
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr.count("\n") == 1
        assert "TASKQ_API_URL" in result.stderr
        assert "taskq dev" in result.stderr


def test_half_configured_names_the_missing_variable(servers: Servers) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_")}
    env["TASKQ_DATABASE_URL"] = servers.database_url
    result = run(taskq("tasks", "clear", "1"), env)
    assert result.returncode == 2
    assert "TASKQ_REDIS_URL is not set" in result.stderr


def test_tasks_clear(clean: Servers) -> None:
    clean.sql(
        "INSERT INTO tasks (task_type, priority, input_data, max_attempts) "
        "SELECT 'FibonacciTask', 3, jsonb_build_object('n', i), 3 FROM generate_series(1, 5) i"
    )
    env = clean.env()
    clean.sql("UPDATE tasks SET status = 'completed' WHERE id IN (2, 3, 5)")
    cleared = run(taskq("tasks", "clear", "2"), env)
    assert cleared.stdout.splitlines() == [
        "deleted the 2 oldest finished task(s)",
        "kept 1 older pending or running task(s); --include-unfinished deletes them too",
    ]
    assert clean.sql("SELECT id FROM tasks ORDER BY id") == [(1,), (4,), (5,)]
    assert run(taskq("tasks", "clear", "0"), env).returncode == 2  # argparse: N must be >= 1


def test_db_upgrade_is_idempotent(servers: Servers) -> None:
    result = run(taskq("db", "upgrade"), servers.env())
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert servers.sql("SELECT version_num FROM alembic_version") == [(head,)]


def test_demo_drains_its_tasks_with_worker_processes(clean: Servers) -> None:
    result = run(
        taskq("demo", "--tasks", "60", "--workers", "2", "--export-rows", "0", "--exit"),
        clean.env(COLUMNS="200"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "done: 60/60 tasks finished" in result.stdout
    assert "dashboard: http://localhost:" in result.stdout
    assert "/ui" in result.stdout
    assert "alembic" not in result.stdout + result.stderr  # no library chatter at INFO
    counts = clean.sql("SELECT status, count(*) FROM tasks GROUP BY status")
    assert counts == [("completed", 60)]
    assert {p for (p,) in clean.sql("SELECT DISTINCT priority FROM tasks")} == {1, 2, 3, 4, 5}


def test_demo_keeps_the_dashboard_up_until_ctrl_c(clean: Servers, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "demo.log"
    command = taskq("demo", "--tasks", "10", "--workers", "1", "--export-rows", "0")
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [*command, "--port", str(port)],
            env=clean.env(COLUMNS="200"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def serving() -> bool:
            assert demo.poll() is None, log.read_text()
            return "still serving" in log.read_text()

        wait_for(serving, timeout=120, interval=0.1, what="the demo to finish its tasks")
        text = log.read_text()
        assert "done: 10/10 tasks finished" in text
        assert f"dashboard http://localhost:{port}/ui" in text
        assert "Ctrl-C stops" in text
        # The tasks are done and the dashboard still answers, with them in it.
        page = httpx.get(f"http://127.0.0.1:{port}/ui/tasks?status=completed", timeout=10)
        assert page.status_code == 200
        listed = httpx.get(f"http://127.0.0.1:{port}/tasks/", params={"limit": 100}).json()
        assert [t["status"] for t in listed["tasks"]] == ["completed"] * 10
        demo.send_signal(signal.SIGINT)
        assert demo.wait(60) == 0, log.read_text()  # the demo succeeded; Ctrl-C ended it
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()


def test_demo_shows_exports_moving(clean: Servers, tmp_path: Path) -> None:
    command = taskq("demo", "--tasks", "20", "--workers", "2", "--export-rows", "30000", "--exit")
    env = clean.env(COLUMNS="200", TASKQ_ARTIFACTS_URL=str(tmp_path / "artifacts"))
    result = run(command, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "done: 23/23 tasks finished" in result.stdout
    assert "exports" in result.stdout
    exports = clean.sql(
        "SELECT t.status, t.progress->>'done', a.name, a.size FROM tasks t "
        "JOIN task_artifacts a ON a.task_id = t.id WHERE t.task_type = 'ExportTask' ORDER BY t.id"
    )
    assert [(status, done, name) for status, done, name, _ in exports] == [
        ("completed", "30000", "demo_series.csv.gz"),
        ("completed", "15000", "demo_series.jsonl"),
        ("completed", "30000", "demo_series.parquet"),
    ]
    for _, _, name, size in exports:
        stored = list((tmp_path / "artifacts").rglob(name))
        assert [p.stat().st_size for p in stored] == [size]


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "uvicorn", "taskq_core.api:app", "--port"],
        ["-m", "taskq_core.cli", "api", "--workers", "2", "--port"],
    ],
    ids=["uvicorn", "api --workers 2"],
)
def test_the_api_serves_through_uvicorn_and_with_several_processes(
    clean: Servers, tmp_path: Path, command: list[str]
) -> None:
    port = free_port()
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, *command, str(port)],
            env=clean.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return httpx.get(f"{url}/health").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, what="the API to start")
        for n in range(4):
            response = httpx.post(
                f"{url}/tasks/", json={"task_type": "FibonacciTask", "input_data": {"n": n}}
            )
            assert response.status_code == 201, response.text + log.read_text()
        assert clean.sql("SELECT count(*) FROM tasks") == [(4,)]
    finally:
        proc.terminate()
        proc.wait(15)
