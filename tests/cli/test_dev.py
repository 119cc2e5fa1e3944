"""`taskq dev` as a user runs it: embedded servers, API and workers; Ctrl-C and SIGKILL clean up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import free_port, taskq, wait_for


def descendants(root: int) -> set[int]:
    """Every live process below `root`."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        children = {child for child, parent in parents.items() if parent == pid}
        found |= children
        frontier.extend(children)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_dev(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            taskq("dev", "--port", str(port), "--workers", "1"),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def running() -> bool:
        assert proc.poll() is None, log.read_text()
        return "taskq is running" in log.read_text()

    wait_for(running, timeout=90, interval=0.1, what="taskq dev to start")
    return proc


def test_dev_runs_everything_and_cleans_up_after_sigkill_and_ctrl_c(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_")}
    env["TASKQ_DATA_DIR"] = str(tmp_path / "state")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    dev = start_dev(env, port, tmp_path / "dev-1.log")
    banner = (tmp_path / "dev-1.log").read_text()
    assert f"dashboard  http://localhost:{port}/ui" in banner
    # Not a terminal: no line folded at 80 columns, whatever COLUMNS says.
    assert any(
        line.startswith("  curl -X POST") and line.endswith("}'") for line in banner.splitlines()
    )
    created = httpx.post(
        f"{url}/tasks/",
        json={"task_type": "FibonacciTask", "input_data": {"n": 10}, "priority": 4},
    )
    assert created.status_code == 201
    task = wait_for(
        lambda: (t := httpx.get(f"{url}/tasks/1").json())["status"] == "completed" and t
    )
    assert task["result"] == {"result": 55}

    # Another terminal, no configuration: it finds the servers of the running `taskq dev`.
    shown = subprocess.run(taskq("tasks", "show", "10"), env=env, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "FibonacciTask" in shown.stdout
    assert "completed" in shown.stdout
    # And so does the Python client, given no URL.
    found = subprocess.run(
        [sys.executable, "-c", "from taskq_client import TaskQClient; print(TaskQClient().get(1))"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert found.returncode == 0, found.stderr
    assert "status='completed'" in found.stdout

    # SIGKILL: servers, API and workers all follow it down, and nothing blocks the next start.
    family = descendants(dev.pid)
    assert len(family) >= 4  # PostgreSQL, Valkey, the API, a worker (and PostgreSQL's children)
    dev.kill()
    dev.wait()
    wait_for(lambda: not any(alive(pid) for pid in family), timeout=10, what="orphans to exit")

    log = tmp_path / "dev-2.log"
    dev = start_dev(env, port, log)
    again = httpx.get(f"{url}/tasks/1").json()  # the data survived: the dev servers are durable
    assert again["result"] == {"result": 55}

    # Ctrl-C: everything stops, exit code 0, the state file is gone.
    family = descendants(dev.pid)
    dev.send_signal(signal.SIGINT)
    assert dev.wait(60) == 0, log.read_text()
    wait_for(lambda: not any(alive(pid) for pid in family), timeout=10, what="children to exit")
    assert not (tmp_path / "state" / "dev.json").exists()
    orphan_check = subprocess.run(
        taskq("tasks", "show", "1"), env=env, capture_output=True, text=True
    )
    assert orphan_check.returncode == 2
    assert "taskq dev" in orphan_check.stderr
