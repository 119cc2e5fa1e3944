"""Following a task's progress: the events stream sends `progress` events as a worker stores it,
`taskq tasks get ID --follow` prints them, and the client's `follow` yields them."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from typing import Any

import httpx
from taskq_client import TaskQClient

from tests.conftest import Api, Servers, Workers, taskq, wait_for
from tests.worker.test_progress import long_workers, open_gate, start, submit  # noqa: F401


def events(api: Api, task_id: int) -> list[tuple[str, dict[str, Any]]]:
    """Every event of the task's stream until it ends: (event name, task)."""
    seen: list[tuple[str, dict[str, Any]]] = []
    name = ""
    with httpx.stream("GET", f"{api.url}/tasks/{task_id}/events", timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                seen.append((name, json.loads(line.removeprefix("data: "))))
    return seen


def test_the_events_stream_carries_progress(
    api: Api,
    long_workers: Workers,  # noqa: F811
    clean: Servers,
) -> None:
    task_id = submit(api, "ProgressTask", {"reports": 100_000})
    found: list[tuple[str, dict[str, Any]]] = []
    reader = threading.Thread(target=lambda: found.extend(events(api, task_id)))
    reader.start()
    start(long_workers, api)

    def halfway() -> bool:
        progress = (api.client.get(f"/tasks/{task_id}").json().get("progress")) or {}
        return progress.get("message") == "halfway"

    wait_for(halfway, what="the last report to be stored")
    open_gate(clean, task_id)
    reader.join(60)
    assert not reader.is_alive()
    names = [name for name, _ in found]
    assert names[0] == "status"
    assert "progress" in names
    progress_events = [task for name, task in found if name == "progress"]
    assert all(task["status"] == "running" for task in progress_events)
    assert progress_events[-1]["progress"]["message"] == "halfway"
    assert found[-1][0] == "status"
    assert found[-1][1]["status"] == "completed"
    assert found[-1][1]["progress"]["message"] == "halfway"


def test_tasks_get_follow_prints_progress_then_the_task(
    api: Api,
    long_workers: Workers,  # noqa: F811
    clean: Servers,
) -> None:
    task_id = submit(api, "ProgressTask", {"reports": 100_000})
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_")}
    environment["TASKQ_API_URL"] = api.url
    follower = subprocess.Popen(
        taskq("tasks", "get", str(task_id), "--follow"),
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    start(long_workers, api)
    assert follower.stdout is not None
    lines = []
    for line in follower.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("running\t100000/200000 (50.0%)\thalfway"):
            open_gate(clean, task_id)
            break
    rest, errors = follower.communicate(timeout=60)
    assert follower.returncode == 0, errors
    assert lines[0].split("\t")[0] in ("pending", "running")
    output = rest.splitlines()
    assert output[0] == "completed\t100000/200000 (50.0%)\thalfway"
    fields = dict(line.split("\t", 1) for line in output[1:] if "\t" in line)
    assert fields["status"] == "completed"
    assert fields["progress"] == "100000/200000 (50.0%) halfway"


def test_the_client_follows(
    api: Api,
    long_workers: Workers,  # noqa: F811
    clean: Servers,
) -> None:
    task_id = submit(api, "ProgressTask", {"reports": 1000, "gate": False})
    start(long_workers, api)
    with TaskQClient(api.url) as client:
        seen = list(client.follow(task_id))
    assert seen[-1].status == "completed"
    assert seen[-1].progress is not None
    assert seen[-1].progress.message == "halfway"
