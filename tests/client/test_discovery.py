"""Which API `TaskQClient()` talks to without a URL: TASKQ_API_URL, else the API of a running
`taskq dev` (its state file), else http://127.0.0.1:8000, in a process configured as a user's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from taskq_client import _devstate

from taskq_core import devstate
from taskq_core.settings import Settings
from tests.conftest import Api, Servers

# Builds each client without arguments and prints where it goes; with `submit`, submits a task
# with each and prints the ids too.
PROGRAM = """
import asyncio, json, sys
from taskq_client import AsyncTaskQClient, TaskQClient

submit = sys.argv[1:] == ["submit"]

async def submit_async():
    async with AsyncTaskQClient(retries=0) as taskq:
        sent = (await taskq.submit("FibonacciTask", {"n": 2})).id if submit else None
        return taskq.config.base_url, sent

with TaskQClient(retries=0) as taskq:
    sync = taskq.config.base_url, taskq.submit("FibonacciTask", {"n": 1}).id if submit else None
print(json.dumps([sync, asyncio.run(submit_async())]))
"""


def run_client(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_")}
    environment.update(TASKQ_DATA_DIR=str(data_dir), **env)
    return subprocess.run(
        [sys.executable, "-c", PROGRAM, *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_state(clean: Servers, data_dir: Path, pid: int, api_url: str) -> None:
    # The file as `taskq dev` writes it, with its own writer.
    state = devstate.DevState(pid, clean.database_url, clean.redis_url, api_url)
    devstate.write(data_dir / devstate.STATE_FILE, state)


def test_without_a_url_the_client_finds_a_running_taskq_dev(
    api: Api, clean: Servers, tmp_path: Path
) -> None:
    write_state(clean, tmp_path, os.getpid(), api.url)  # this test's process stands for it
    result = run_client(tmp_path, "submit")
    assert result.returncode == 0, result.stderr
    (sync_url, sync_id), (async_url, async_id) = json.loads(result.stdout)
    assert sync_url == async_url == api.url
    stored = clean.sql("SELECT id, input_data FROM tasks ORDER BY id")
    assert stored == [(sync_id, {"n": 1}), (async_id, {"n": 2})]


def test_taskq_api_url_comes_before_a_running_taskq_dev(
    api: Api, clean: Servers, tmp_path: Path
) -> None:
    write_state(clean, tmp_path, os.getpid(), "http://127.0.0.1:9")  # nothing listens there
    result = run_client(tmp_path, TASKQ_API_URL=api.url)
    assert result.returncode == 0, result.stderr
    assert [url for url, _ in json.loads(result.stdout)] == [api.url, api.url]


def test_the_state_of_a_dead_taskq_dev_is_ignored(clean: Servers, tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_state(clean, tmp_path, gone.pid, "http://127.0.0.1:9")
    result = run_client(tmp_path)
    assert result.returncode == 0, result.stderr
    default = "http://127.0.0.1:8000"
    assert [url for url, _ in json.loads(result.stdout)] == [default, default]


@pytest.mark.parametrize("configured", [True, False], ids=["TASKQ_DATA_DIR", "default"])
def test_the_client_looks_where_taskq_dev_writes(
    configured: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if configured:
        monkeypatch.setenv("TASKQ_DATA_DIR", str(tmp_path))
    else:
        monkeypatch.delenv("TASKQ_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert _devstate.data_dir() == devstate.data_dir(Settings(_env_file=None))  # type: ignore[call-arg]
