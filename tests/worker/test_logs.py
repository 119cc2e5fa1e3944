"""What the processes say: one line per task event (JSON on request), one timestamp format,
outages logged when they start rather than on every retry, process titles that say what runs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskq_core.logs import Outage, TurnHandler, timestamp
from tests.conftest import Api, Processes, Servers, Workers, free_port, taskq, wait_for
from tests.worker.test_reliability import FAST, finished, post

TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
)
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def log_of(processes: Processes, index: int = -1) -> str:
    return processes.started[index][1].read_text()


def test_json_lines_with_one_event_per_attempt(
    api: Api, clean: Servers, processes: Processes, sites: dict[str, Path]
) -> None:
    Workers(clean, processes, [sites["taskq-testkit"]]).start(TASKQ_LOG_FORMAT="json", **FAST)
    task = post(api, {"task_type": "FailTask", "input_data": {}, "max_attempts": 2})
    finished(api, task["id"])
    lines = [json.loads(line) for line in log_of(processes).splitlines()]  # every line is JSON
    assert all(ISO_Z.match(line["ts"]) for line in lines)
    events = [line for line in lines if line.get("task_id") == task["id"]]
    assert [(e["attempt"], e["outcome"], e["status"]) for e in events] == [
        (1, "retry", "pending"),
        (2, "failed", "failed"),
    ]
    assert all(e["task_type"] == "FailTask" and e["duration_ms"] >= 0 for e in events)
    assert all(e["level"] == "INFO" and e["logger"] == "taskq.worker" for e in events)


def test_text_lines_share_one_timestamp_format(api: Api, workers: Workers) -> None:
    workers.start(**FAST)
    task = post(api, {"task_type": "FibonacciTask", "input_data": {"n": 5}})
    finished(api, task["id"])
    log = log_of(workers.processes)
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines
    assert all(TEXT_LINE.match(line) for line in lines), log
    assert any(f"task {task['id']} FibonacciTask completed in" in line for line in lines)
    # The API's answers: the fast path's and the routes' instants alike.
    created = api.client.post(
        "/tasks/", json={"task_type": "FibonacciTask", "input_data": {"n": 1}}
    )
    assert ISO_Z.match(created.json()["created_at"])
    got = api.client.get(f"/tasks/{task['id']}").json()
    assert all(ISO_Z.match(got[k]) for k in ("created_at", "started_at", "finished_at", "run_at"))
    assert ISO_Z.match(api.client.get("/tasks/").json()["tasks"][0]["created_at"])


def test_an_outage_is_logged_when_it_starts_not_on_every_retry(
    clean: Servers, processes: Processes, sites: dict[str, Path]
) -> None:
    down = f"postgresql://postgres@127.0.0.1:{free_port()}/taskq"
    env = clean.env(sites["taskq-testkit"], TASKQ_DATABASE_URL=down, **FAST)
    processes.spawn(taskq("worker"), env, "worker")
    wait_for(lambda: "sweeper) unavailable" in log_of(processes), what="the sweeper's outage")
    wait_for(lambda: "heartbeat: leases may lapse) unavailable" in log_of(processes))
    time.sleep(3)  # ten and more retries of each part at the back-off's start
    warnings = [line for line in log_of(processes).splitlines() if " WARNING " in line]
    # One line per part that met the outage (here the heartbeat, the sweeper and the scheduler;
    # taking tasks touches PostgreSQL only once Redis hands out an id), not one per retry:
    # before, this was 45 lines in 12 s.
    assert len(warnings) <= 4, "\n".join(warnings)
    assert all("unavailable" in line and "backing off" in line for line in warnings)


def test_outage_logs_its_start_and_its_end(caplog: pytest.LogCaptureFixture) -> None:
    outage = Outage(logging.getLogger("taskq.test"), "PostgreSQL (testing)", 5.0)
    with caplog.at_level(logging.DEBUG, logger="taskq.test"):
        for _ in range(10):
            outage.failed(ConnectionRefusedError("connection refused"), 0.2)
        outage.recovered()
        outage.recovered()  # nothing was down: nothing to say
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert warnings[0].startswith("PostgreSQL (testing) unavailable (connection refused)")
    assert "available again after" in warnings[1]
    assert "(10 failed attempt(s))" in warnings[1]
    assert len([r for r in caplog.records if r.levelno == logging.DEBUG]) == 9


def test_timestamps_are_utc_with_z() -> None:
    assert timestamp(0) == "1970-01-01T00:00:00.000Z"


@given(st.floats(min_value=0, max_value=4e9))
def test_timestamps_match_datetimes_format(seconds: float) -> None:
    # The whole second's text is kept between calls: each call's must still be its own second's.
    whole = datetime.fromtimestamp(int(seconds), UTC)
    got = timestamp(seconds)
    assert got[:20] == whole.strftime("%Y-%m-%dT%H:%M:%S."), (seconds, got)
    assert got[23:] == "Z"
    # datetime rounds to microseconds first: a millisecond apart at most.
    assert abs(int(got[20:23]) - (seconds - int(seconds)) * 1000) < 1.001


def _handler() -> tuple[TurnHandler, io.StringIO, logging.Logger]:
    stream = io.StringIO()
    handler = TurnHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"taskq.test.turns.{id(handler)}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    return handler, stream, logger


def test_lines_of_a_loop_turn_are_written_together_at_its_end() -> None:
    handler, stream, log = _handler()
    seen: list[str] = []

    async def main() -> None:
        log.info("one")
        log.info("two")
        seen.append(stream.getvalue())  # still within the turn
        await asyncio.sleep(0)
        seen.append(stream.getvalue())
        log.info("three")
        log.warning("four")  # a warning goes at once, after those waiting before it
        seen.append(stream.getvalue())

    asyncio.run(main())
    assert seen == ["", "INFO one\nINFO two\n", "INFO one\nINFO two\nINFO three\nWARNING four\n"]
    handler.close()


def test_lines_outside_the_loop_or_its_thread_are_written_at_once() -> None:
    handler, stream, log = _handler()
    log.info("before any loop")
    assert stream.getvalue() == "INFO before any loop\n"

    async def main() -> str:
        log.info("in the loop")
        await asyncio.to_thread(log.info, "from a thread")
        return stream.getvalue()

    # The thread's line is written at once, and the loop's line waiting before it with it.
    assert asyncio.run(main()).endswith("INFO in the loop\nINFO from a thread\n")
    handler.close()


def test_a_second_loop_gets_its_lines_written_too() -> None:
    handler, stream, log = _handler()

    async def last_words() -> None:
        log.info("scheduled, but the loop ends first")

    loop = asyncio.new_event_loop()
    loop.run_until_complete(last_words())
    loop.close()  # its end-of-turn callback never ran
    handler.flush()  # what logging.shutdown does at exit
    assert stream.getvalue() == "INFO scheduled, but the loop ends first\n"

    async def later() -> str:
        log.info("in the next loop")
        await asyncio.sleep(0)
        return stream.getvalue()

    assert asyncio.run(later()).endswith("INFO in the next loop\n")
    handler.close()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(proc.name))
    return found


def test_process_titles_say_what_runs(api: Api, workers: Workers) -> None:
    (worker,) = workers.start(concurrency=4, args=("--processes", "1"), **FAST)
    task = post(api, {"task_type": "SpinTask", "input_data": {"seconds": 30}})
    wait_for(
        lambda: _cmdline(worker.pid) == "taskq-worker default [1 of 5 busy]",  # 4 async, 1 runner
        what="the worker's title",
    )

    def runner_title() -> str | None:
        for server in _children(worker.pid):
            if _cmdline(server) == "taskq-forkserver":
                for runner in _children(server):
                    title = _cmdline(runner)
                    if title.startswith("taskq-runner [task"):
                        return title
        return None

    assert wait_for(runner_title, what="the runner's title") == (
        f"taskq-runner [task {task['id']} SpinTask]"
    )
    api.client.post(f"/tasks/{task['id']}/cancel")
