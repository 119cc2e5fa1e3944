"""Runner processes: sync tasks in real child processes, stopped by timeouts and cancellation."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydantic import BaseModel

from taskq_core import PermanentError, Task, TaskContext
from taskq_core.plugins import PluginInfo, TaskType
from taskq_core.worker import forkserver
from taskq_core.worker import pool as pool_module
from taskq_core.worker.execution import Instances, Job, Outcome
from taskq_core.worker.pool import RunnerError, RunnerPool
from tests.conftest import Api, Workers, wait_for
from tests.worker.test_reliability import FAST, finished, post

T = TypeVar("T")


def env_with(*sites: Path) -> dict[str, str]:
    """This process's environment with `sites` (plugin folders) on the runners' path."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(str(s) for s in sites)}


@pytest.fixture
def testkit(sites: dict[str, Path]) -> dict[str, str]:
    return env_with(sites["taskq-testkit"])


def job(task_type: str, input_data: dict[str, Any] | None = None, task_id: int = 1) -> Job:
    return Job(task_id, task_type, input_data or {}, 1, 3, 3, "test-worker")


def with_pool(env: dict[str, str], body: Callable[[RunnerPool], Awaitable[T]], size: int = 1) -> T:
    """Start a pool, run `body` with it, close it: the whole test in one event loop."""

    async def main() -> T:
        pool = RunnerPool(size, env=env)
        await pool.start()
        try:
            return await body(pool)
        finally:
            await pool.close()

    return asyncio.run(main())


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def parent_of(pid: int) -> int:
    """The parent process id of `pid`: for a runner, the fork server's."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


async def gone(*pids: int, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while any(running(pid) for pid in pids):
        if time.monotonic() > deadline:
            pytest.fail(f"still running after {within}s: {[p for p in pids if running(p)]}")
        await asyncio.sleep(0.02)


async def eventually(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within}s: {what}")
        await asyncio.sleep(0.005)


def test_sync_task_results(testkit: dict[str, str]) -> None:
    async def body(pool: RunnerPool) -> list[Outcome]:
        return await asyncio.gather(
            *(pool.run(job("FibonacciTask", {"n": n}, task_id=n), None) for n in range(30))
        )

    outcomes = with_pool(testkit, body, size=2)
    assert [o.result for o in outcomes[:8]] == [{"result": v} for v in (0, 1, 1, 2, 3, 5, 8, 13)]
    assert outcomes[29] == Outcome(result={"result": 514229}, error=None)
    assert all(o.error is None for o in outcomes)


def test_jobs_are_served_first_come_first_served(testkit: dict[str, str]) -> None:
    async def body(pool: RunnerPool) -> list[int]:
        served: list[int] = []

        async def one(n: int) -> None:
            await pool.run(job("SpinTask", {"seconds": 0.01}), None)
            served.append(n)

        tasks = []
        for n in range(8):
            tasks.append(asyncio.create_task(one(n)))
            await asyncio.sleep(0)  # each queues before the next is created
        await asyncio.gather(*tasks)
        return served

    assert with_pool(testkit, body) == list(range(8))


def test_errors_carry_traceback_and_the_plugins_wishes(testkit: dict[str, str]) -> None:
    async def body(pool: RunnerPool) -> dict[str, Outcome]:
        return {
            "fail": await pool.run(job("FailTask", {"message": "no luck"}), None),
            "retry": await pool.run(job("RetryTask"), None),
            "permanent": await pool.run(job("PermanentTask"), None),
            "bad input": await pool.run(job("FibonacciTask", {"n": -1}), None),
            "bad output": await pool.run(job("BadOutputTask"), None),
        }

    outcomes = with_pool(testkit, body)
    fail = outcomes["fail"].error
    assert outcomes["fail"].result is None
    assert fail is not None
    assert fail["type"] == "ValueError"
    assert fail["message"] == "no luck"
    assert "taskq_testkit.py" in fail["traceback"]
    assert fail["traceback"].rstrip().endswith("ValueError: no luck")
    assert "retry_after" not in fail
    assert "permanent" not in fail

    retry = outcomes["retry"].error
    assert retry is not None
    assert (retry["type"], retry["retry_after"]) == ("Retry", 5.0)
    assert retry["message"] == "the upstream is busy"
    assert "permanent" not in retry

    permanent = outcomes["permanent"].error
    assert permanent is not None
    assert (permanent["type"], permanent["permanent"]) == ("PermanentError", True)

    bad_input = outcomes["bad input"].error
    assert bad_input is not None
    assert (bad_input["type"], bad_input["permanent"]) == ("ValidationError", True)

    bad_output = outcomes["bad output"].error  # the task's bug, not its input's: may retry
    assert bad_output is not None
    assert bad_output["type"] == "ValidationError"
    assert "permanent" not in bad_output


def test_timeout_stops_cpu_bound_code_and_the_pool_keeps_serving(testkit: dict[str, str]) -> None:
    async def body(pool: RunnerPool) -> None:
        [old] = pool.pids
        outcome = await pool.run(job("SpinTask", {"seconds": 30}), timeout=0.5)
        assert outcome == Outcome(
            error={
                "type": "TaskTimeoutError",
                "message": "task exceeded its timeout of 0.5s and was stopped",
                "traceback": "",
            }
        )
        await gone(old)
        after = await pool.run(job("SpinTask", {"seconds": 0}), timeout=5)
        assert after.result is not None
        assert after.result["pid"] not in (old, os.getpid())
        assert pool.pids == [after.result["pid"]]

    with_pool(testkit, body)


def test_timeout_also_stops_the_tasks_subprocesses(testkit: dict[str, str], tmp_path: Path) -> None:
    pid_file = tmp_path / "sleep.pid"

    async def body(pool: RunnerPool) -> None:
        outcome = await pool.run(job("SpawnTask", {"pid_file": str(pid_file)}), timeout=0.5)
        assert outcome.error is not None
        assert outcome.error["type"] == "TaskTimeoutError"
        await gone(int(pid_file.read_text()))

    with_pool(testkit, body)


def test_cancellation_kills_and_replaces_the_runner(testkit: dict[str, str]) -> None:
    async def body(pool: RunnerPool) -> None:
        [old] = pool.pids
        spinning = asyncio.create_task(pool.run(job("SpinTask", {"seconds": 30}), None))
        queued = asyncio.create_task(pool.run(job("FibonacciTask", {"n": 5}), None))
        await asyncio.sleep(0.3)
        queued.cancel()  # queued behind it, not started: skipped, nothing to kill
        spinning.cancel()
        with pytest.raises(asyncio.CancelledError):
            await spinning
        with pytest.raises(asyncio.CancelledError):
            await queued
        await gone(old)
        after = await pool.run(job("FibonacciTask", {"n": 10}), timeout=5)
        assert after.result == {"result": 55}
        assert old not in pool.pids

    with_pool(testkit, body)


def test_a_crashed_runner_is_reported_and_replaced(testkit: dict[str, str]) -> None:
    async def body(pool: RunnerPool) -> None:
        crashed = await pool.run(job("CrashTask", {"code": 3}), None)
        assert crashed.error == {
            "type": "RunnerCrashedError",
            "message": "the process running the task exited with code 3",
            "traceback": "",
        }
        outcomes = await asyncio.gather(
            *(pool.run(job("FibonacciTask", {"n": 10}), None) for _ in range(4))
        )
        assert all(o.result == {"result": 55} for o in outcomes)
        # Forked in milliseconds, but those quick jobs may have been quicker.
        await eventually(lambda: len(pool.pids) == 2, 10.0, "the crashed runner's replacement")

    with_pool(testkit, body, size=2)


def test_a_runner_killed_while_idle_is_replaced(testkit: dict[str, str]) -> None:
    async def body(pool: RunnerPool) -> None:
        [old] = pool.pids
        os.kill(old, signal.SIGKILL)
        await gone(old)  # dead, maybe not yet reaped: found out when the job can't be written
        outcome = await pool.run(job("FibonacciTask", {"n": 10}), None)
        assert outcome.result == {"result": 55}
        assert old not in pool.pids

    with_pool(testkit, body)


def cmdline(pid: int) -> bytes:
    """`pid`'s command line. setproctitle empties it for an instant while it writes a title (a
    runner retitles itself for each task): an empty one is read again."""
    deadline = time.monotonic() + 5
    while True:
        line = Path(f"/proc/{pid}/cmdline").read_bytes()
        if line or time.monotonic() > deadline:
            return line
        time.sleep(0.005)


def test_a_killed_runner_is_replaced_by_a_fork_of_the_fork_server(
    testkit: dict[str, str],
) -> None:
    """Five kill-and-replace cycles, each replacement forked by the same fork server (a fork,
    not a new interpreter loading the plugins: its command line is the fork server's). How fast
    that is lives in the bench, not here."""

    async def body(pool: RunnerPool) -> None:
        [first] = pool.pids
        fork_server = parent_of(first)
        assert parent_of(fork_server) == os.getpid()
        seen = {first}
        for _ in range(5):
            outcome = await pool.run(job("SpinTask", {"seconds": 30}), timeout=0.1)
            assert outcome.error is not None
            assert outcome.error["type"] == "TaskTimeoutError"
            after = await pool.run(job("FibonacciTask", {"n": 10}), None)
            assert after.result == {"result": 55}
            [runner] = pool.pids
            assert runner not in seen  # the killed one was replaced
            seen.add(runner)
            # A child of the fork server (which only forks, never execs) titled as a runner.
            assert parent_of(runner) == fork_server
            assert cmdline(runner).startswith(b"taskq-runner")

    with_pool(testkit, body)


def test_a_killed_fork_server_is_replaced_and_so_are_its_runners(
    testkit: dict[str, str], tmp_path: Path
) -> None:
    pid_file = tmp_path / "sleep.pid"

    async def body(pool: RunnerPool) -> None:
        old = pool.pids
        fork_server = parent_of(old[0])
        spawning = asyncio.create_task(pool.run(job("SpawnTask", {"pid_file": str(pid_file)}), 60))
        await eventually(lambda: pid_file.exists() and pid_file.read_text() != "", 5, "the task")
        os.kill(fork_server, signal.SIGKILL)
        # Its runners die with it; the one running the task took the task's subprocess along.
        outcome = await asyncio.wait_for(spawning, 5)
        assert outcome.error == {
            "type": "RunnerCrashedError",
            "message": (
                "the process running the task was stopped when the task runner fork server died"
            ),
            "traceback": "",
        }
        await gone(fork_server, *old, int(pid_file.read_text()))
        outcomes = await asyncio.gather(
            *(pool.run(job("FibonacciTask", {"n": 10}), 5) for _ in range(8))
        )
        assert all(o.result == {"result": 55} for o in outcomes), outcomes
        await eventually(lambda: len(pool.pids) == 2, 5, "two runners again")
        assert not set(pool.pids) & set(old)
        [new_fork_server] = {parent_of(pid) for pid in pool.pids}
        assert new_fork_server != fork_server

    with_pool(testkit, body, size=2)


def test_a_stuck_fork_server_is_killed_and_replaced(
    testkit: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fork times out, and so does the pool's wait for the old runner's exit report.
    monkeypatch.setattr(forkserver, "FORK_TIMEOUT", 0.5)
    monkeypatch.setattr(pool_module, "FORK_TIMEOUT", 0.5)

    async def body(pool: RunnerPool) -> None:
        [old] = pool.pids
        fork_server = parent_of(old)
        os.kill(fork_server, signal.SIGSTOP)  # it can neither report the exit below nor fork
        os.kill(old, signal.SIGKILL)
        await gone(old)
        outcome = await asyncio.wait_for(pool.run(job("FibonacciTask", {"n": 10}), None), 10)
        assert outcome.result == {"result": 55}
        await gone(fork_server)
        [new] = pool.pids
        assert parent_of(new) not in (fork_server, os.getpid())

    with_pool(testkit, body)


def test_print_and_input_in_a_task_leave_the_protocol_alone(
    testkit: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    async def body(pool: RunnerPool) -> list[Outcome]:
        # With the job pipe as its stdin, the task's readline() would wait for a job forever.
        return [await pool.run(job("PrintTask"), timeout=5) for _ in range(3)]

    outcomes = with_pool(testkit, body)
    assert all(o.error is None for o in outcomes), outcomes
    assert outcomes[0].result is not None
    assert outcomes[0].result["stdin"] == ""
    err = capfd.readouterr().err  # runners share the worker's stderr
    assert err.count("a line a task printed") == 3


def test_a_runner_without_the_plugin_answers_with_a_clear_error() -> None:
    async def body(pool: RunnerPool) -> Outcome:
        return await pool.run(job("SpinTask"), None)

    error = with_pool(env_with(), body).error
    assert error is not None
    assert error["type"] == "UnknownTaskTypeError"
    assert "'SpinTask'" in error["message"]
    assert "FibonacciTask" in error["message"]


def test_runners_that_cannot_start_fail_start_clearly(
    sites: dict[str, Path], tmp_path: Path
) -> None:
    async def start(env: dict[str, str]) -> None:
        pool = RunnerPool(2, env=env)
        try:
            await pool.start()
        finally:
            assert pool.pids == []  # nothing left behind

    with pytest.raises(RunnerError, match="registered by both") as duplicate:
        asyncio.run(start(env_with(sites["taskq-dupe"])))
    assert "DuplicateTaskTypeError" in str(duplicate.value)

    dies = tmp_path / "dies"
    dies.mkdir()
    (dies / "sitecustomize.py").write_text("import os\nos._exit(7)\n")
    with pytest.raises(RunnerError, match="exited with code 7 before it was ready"):
        asyncio.run(start(env_with(dies)))


def test_output_at_interpreter_start_does_not_break_the_handshake(
    sites: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    chatty = tmp_path / "chatty"
    chatty.mkdir()
    (chatty / "sitecustomize.py").write_text("print('hello from sitecustomize')\n")

    async def body(pool: RunnerPool) -> Outcome:
        return await pool.run(job("FibonacciTask", {"n": 3}), None)

    env = env_with(chatty, sites["taskq-broken"])  # a broken plugin is logged, not fatal
    assert with_pool(env, body).result == {"result": 2}
    assert "hello from sitecustomize" in capfd.readouterr().err


# ---- several jobs in flight per runner -----------------------------------------------------


def fib(n: int) -> int | str:
    """What FibonacciTask answers: fib(n), as a string past 2**53."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a if a < 2**53 else str(a)


def append(path: Path, line: str, seconds: float = 0.0) -> Job:
    return job("AppendTask", {"path": str(path), "line": line, "seconds": seconds})


def runs(path: Path) -> list[str]:
    """The lines AppendTask wrote to `path`: one per execution."""
    return path.read_text().splitlines() if path.exists() else []


def test_many_concurrent_jobs_each_get_their_own_result(testkit: dict[str, str]) -> None:
    async def body(pool: RunnerPool) -> list[Outcome]:
        return await asyncio.gather(
            *(pool.run(job("FibonacciTask", {"n": n}, task_id=n), 5) for n in range(500))
        )

    outcomes = with_pool(testkit, body, size=2)
    assert [o.result for o in outcomes] == [{"result": fib(n)} for n in range(500)]
    assert all(o.error is None for o in outcomes)


def test_a_job_goes_to_an_idle_runner_not_behind_a_busy_one(testkit: dict[str, str]) -> None:
    async def body(pool: RunnerPool) -> None:
        slow = asyncio.create_task(pool.run(job("SpinTask", {"seconds": 10}), None))
        await eventually(lambda: pool.idle == 1, 10, "the slow job to occupy a runner")
        quick = [await pool.run(job("SpinTask"), None) for _ in range(5)]
        assert not slow.done()  # they did not wait behind it
        outcome = await slow
        assert outcome.result is not None
        assert all(o.result is not None and o.result["pid"] != outcome.result["pid"] for o in quick)

    with_pool(testkit, body, size=2)


def test_a_jobs_timeout_starts_when_it_starts_not_when_it_is_queued(
    testkit: dict[str, str], tmp_path: Path
) -> None:
    runs_file = tmp_path / "runs"

    async def body(pool: RunnerPool) -> list[Outcome]:
        # Sent together to the one runner: the second waits 0.3s behind the first, then runs 0.3s.
        return list(
            await asyncio.gather(
                pool.run(append(runs_file, "first", 0.3), timeout=0.5),
                pool.run(append(runs_file, "second", 0.3), timeout=0.5),
            )
        )

    outcomes = with_pool(testkit, body)
    assert all(o.error is None for o in outcomes), outcomes
    assert runs(runs_file) == ["first", "second"]


def test_a_timeout_sends_the_jobs_queued_behind_it_to_another_runner_once(
    testkit: dict[str, str], tmp_path: Path
) -> None:
    runs_file = tmp_path / "runs"

    async def body(pool: RunnerPool) -> None:
        [old] = pool.pids
        # One runner: the jobs behind the spinning one are queued in it when it times out.
        head = pool.run(append(runs_file, "head", 30), timeout=0.5)
        rest = [pool.run(append(runs_file, f"job {i}"), timeout=5) for i in range(6)]
        timed_out, *outcomes = await asyncio.gather(head, *rest)
        assert timed_out.error is not None
        assert timed_out.error["type"] == "TaskTimeoutError"
        assert all(o.result is not None and o.result["pid"] != old for o in outcomes), outcomes
        await gone(old)

    with_pool(testkit, body)
    assert sorted(runs(runs_file)) == ["head"] + [f"job {i}" for i in range(6)]


def test_a_crash_sends_the_jobs_queued_behind_it_to_another_runner_once(
    testkit: dict[str, str], tmp_path: Path
) -> None:
    runs_file = tmp_path / "runs"

    async def body(pool: RunnerPool) -> None:
        [old] = pool.pids
        crash = pool.run(job("CrashTask", {"code": 5}), None)
        rest = [pool.run(append(runs_file, f"job {i}"), None) for i in range(6)]
        crashed, *outcomes = await asyncio.gather(crash, *rest)
        assert crashed.error == {
            "type": "RunnerCrashedError",
            "message": "the process running the task exited with code 5",
            "traceback": "",
        }
        assert all(o.result is not None and o.result["pid"] != old for o in outcomes), outcomes

    with_pool(testkit, body)
    assert sorted(runs(runs_file)) == [f"job {i}" for i in range(6)]


def test_cancelling_a_job_queued_in_a_runner_never_runs_it(
    testkit: dict[str, str], tmp_path: Path
) -> None:
    runs_file = tmp_path / "runs"

    async def body(pool: RunnerPool) -> None:
        [pid] = pool.pids
        head = asyncio.create_task(pool.run(append(runs_file, "head", 0.5), None))
        queued = asyncio.create_task(pool.run(append(runs_file, "cancelled"), None))
        after = asyncio.create_task(pool.run(append(runs_file, "after"), None))
        await eventually(lambda: runs(runs_file) == ["head"], 10, "the first job to start")
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        # The runner was not stopped: the job before and the job after ran in it.
        assert (await head).result == {"pid": pid}
        assert (await after).result == {"pid": pid}
        assert pool.pids == [pid]

    with_pool(testkit, body)
    assert runs(runs_file) == ["head", "after"]


def test_cancelling_the_running_job_sends_those_behind_it_elsewhere_once(
    testkit: dict[str, str], tmp_path: Path
) -> None:
    runs_file = tmp_path / "runs"

    async def body(pool: RunnerPool) -> None:
        [old] = pool.pids
        head = asyncio.create_task(pool.run(append(runs_file, "head", 30), None))
        rest = [asyncio.create_task(pool.run(append(runs_file, f"job {i}"), 5)) for i in range(4)]
        await asyncio.sleep(0.2)
        head.cancel()
        with pytest.raises(asyncio.CancelledError):
            await head
        outcomes = await asyncio.gather(*rest)
        assert all(o.result is not None and o.result["pid"] != old for o in outcomes), outcomes
        await gone(old)

    with_pool(testkit, body)
    assert sorted(runs(runs_file)) == ["head"] + [f"job {i}" for i in range(4)]


# Starts a pool, keeps both runners busy spinning (an idle runner would also go on the EOF its
# parent's death puts on its stdin; a busy one has only the parent-death signal), prints the pids.
PARENT = """
import asyncio, json
from taskq_core.worker.execution import Job
from taskq_core.worker.pool import RunnerPool

async def main():
    pool = RunnerPool(2)
    await pool.start()
    spin = Job(1, "SpinTask", {"seconds": 60}, 1, 1, 3, "parent")
    busy = [asyncio.create_task(pool.run(spin, None)) for _ in range(2)]
    await asyncio.sleep(0.3)
    print(json.dumps(pool.pids), flush=True)
    await asyncio.gather(*busy)

asyncio.run(main())
"""


def test_runners_and_their_fork_server_die_with_their_parent(testkit: dict[str, str]) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], env=testkit, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        pids = json.loads(parent.stdout.readline())
        assert len(pids) == 2
        assert all(running(pid) for pid in pids)
        [fork_server] = {parent_of(pid) for pid in pids}
        assert parent_of(fork_server) == parent.pid
        parent.send_signal(signal.SIGKILL)
        parent.wait(5)
        asyncio.run(gone(fork_server, *pids))
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()  # type: ignore[union-attr]


def test_close_leaves_no_processes(testkit: dict[str, str]) -> None:
    async def main() -> None:
        pool = RunnerPool(2, env=testkit)
        await pool.start()
        pids = [*pool.pids, parent_of(pool.pids[0])]  # the runners and their fork server
        busy = asyncio.create_task(pool.run(job("SpinTask", {"seconds": 30}), None))
        await asyncio.sleep(0.2)
        await pool.close(grace=0.5)
        assert pool.pids == []
        assert not any(running(pid) for pid in pids)
        outcome = await busy  # stopped by close(): the worker drains before closing
        assert outcome.error is not None
        assert outcome.error["message"] == "the process running the task was killed by SIGKILL"
        await pool.close()  # idempotent
        with pytest.raises(RunnerError, match="closed"):
            await pool.run(job("FibonacciTask", {"n": 1}), None)

    asyncio.run(main())


def fork_servers_of(parent: int) -> list[int]:
    """Live child processes of `parent` running the fork server: its command line until it sets
    its title, the title after."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            pid = int(entry.name)
            try:
                if parent_of(pid) != parent or not running(pid):
                    continue
                line = cmdline(pid)
            except OSError:  # gone meanwhile
                continue
            if b"taskq_core.worker.zygote" in line or line.startswith(b"taskq-forkserver"):
                found.append(pid)
    return found


def cpu_seconds(pid: int) -> float:
    """The CPU time `pid` has used (user and system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_worker_forks_its_fork_server_and_spawns_the_replacement(
    api: Api, workers: Workers
) -> None:
    (worker,) = workers.start(args=("--processes", "1"), **FAST)
    first = post(api, {"task_type": "FibonacciTask", "input_data": {"n": 10}})
    assert finished(api, first["id"])["status"] == "completed"
    (early,) = wait_for(lambda: fork_servers_of(worker.pid), what="the fork server")
    # Forked with the plugins loaded, it never imported anything: a spawned one imports taskq
    # and the plugins, 0.3 s of CPU or more on this machine.
    assert cpu_seconds(early) < 0.1
    os.kill(early, signal.SIGKILL)
    # The worker's event loop runs by now: the replacement is a fresh interpreter.
    spare = wait_for(
        lambda: [pid for pid in fork_servers_of(worker.pid) if pid != early] or None,
        what="a new fork server",
    )
    second = post(api, {"task_type": "FibonacciTask", "input_data": {"n": 10}})
    assert finished(api, second["id"])["status"] == "completed"
    assert spare == fork_servers_of(worker.pid)


# ---- execution in this process: what the worker does for async task types ------------------


class Nothing(BaseModel):
    pass


class SlowAsyncTask(Task):
    name = "SlowAsyncTask"
    Input = Nothing
    Output = Nothing

    async def run(self, data: Nothing, ctx: TaskContext) -> Nothing:
        await asyncio.sleep(30)
        return Nothing()


class FailingAsyncTask(Task):
    name = "FailingAsyncTask"
    Input = Nothing
    Output = Nothing

    async def run(self, data: Nothing, ctx: TaskContext) -> Nothing:
        raise PermanentError(f"task {ctx.task_id} attempt {ctx.attempt} cannot work")


class NoClientTask(Task):
    name = "NoClientTask"
    Input = Nothing
    Output = Nothing
    made = 0

    def __init__(self) -> None:
        NoClientTask.made += 1
        raise RuntimeError("no API key configured")

    def run(self, data: Nothing, ctx: TaskContext) -> Nothing:
        return Nothing()


def task_type(cls: type[Task]) -> TaskType:
    return TaskType(cls, PluginInfo("tests", None), cls.Input)


def test_run_async_reports_errors_and_lets_cancellation_through() -> None:
    instances = Instances()

    async def main() -> None:
        failing = await instances.run_async(task_type(FailingAsyncTask), job("FailingAsyncTask"))
        assert failing.error is not None
        assert failing.error["message"] == "task 1 attempt 1 cannot work"
        assert failing.error["permanent"] is True
        slow = asyncio.create_task(instances.run_async(task_type(SlowAsyncTask), job("Slow")))
        await asyncio.sleep(0.05)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow

    asyncio.run(main())


def test_a_failing_constructor_is_the_tasks_error_and_is_tried_again() -> None:
    instances = Instances()
    no_client = task_type(NoClientTask)
    for attempt in (1, 2):
        outcome = instances.run_sync(no_client, job("NoClientTask"))
        assert outcome.error is not None
        assert (outcome.error["type"], outcome.error["message"]) == (
            "RuntimeError",
            "no API key configured",
        )
        assert NoClientTask.made == attempt
