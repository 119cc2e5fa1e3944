"""Claiming runners (TASKQ_WORKER_RUNNERS=claiming): runner processes that pop, claim, run and
record their own sync tasks, and what their supervisor settles when one dies or lags."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from taskq_core.processes import alive
from tests.conftest import Api, Servers, Workers, wait_finished, wait_for

CLAIMING = {"TASKQ_WORKER_RUNNERS": "claiming"}


def post_batch(api: Api, *tasks: tuple[str, dict[str, object]]) -> list[int]:
    """Enqueue `tasks` in one request: their ids reach Redis in one push, so an idle runner pops
    them together (as one claim) once its batches have grown."""
    body = {"tasks": [{"task_type": kind, "input_data": data} for kind, data in tasks]}
    response = api.client.post("/tasks/batch", json=body)
    assert response.status_code == 201, response.text
    return [task["id"] for task in response.json()["tasks"]]


def warm_up(api: Api, clean: Servers) -> None:
    """Short tasks first: a runner claims one task at a time until it has timed some."""
    post_batch(api, *[("FibonacciTask", {"n": 1})] * 20)
    wait_finished(clean, 20)


def attempts(clean: Servers, task_id: int) -> list[tuple[int, str, str]]:
    rows = clean.sql(
        "SELECT attempt, outcome, worker_id FROM task_attempts WHERE task_id = %s ORDER BY id",
        (task_id,),
    )
    return [(attempt, outcome, worker) for attempt, outcome, worker in rows]


def start(workers: Workers, runners: int, **env: str) -> subprocess.Popen[bytes]:
    (worker,) = workers.start(concurrency=4, args=("--processes", str(runners)), **CLAIMING, **env)
    return worker


def test_what_a_runner_decided_before_it_died_is_recorded_from_its_slot(
    api: Api, workers: Workers, clean: Servers
) -> None:
    start(workers, 1)
    warm_up(api, clean)
    # One claim: the first completes, the second kills the runner before the claim's outcomes
    # are written (a runner writes them when its batch ends). The first must not run again.
    done, crash = post_batch(api, ("FibonacciTask", {"n": 2}), ("CrashTask", {"code": 3}))
    wait_for(lambda: attempts(clean, crash), what="the crash to be recorded")
    wait_for(lambda: attempts(clean, done), what="the first task to be recorded")
    [(attempt, outcome, runner)] = attempts(clean, done)
    assert (attempt, outcome) == (1, "completed")
    assert "/r" in runner  # claimed under its runner's own id
    # Written by the worker process, which read it from the dead runner's slot.
    log = workers.processes.output()
    line = next(line for line in log.splitlines() if f"task {done} FibonacciTask" in line)
    assert "(runner " not in line, line
    crashed = attempts(clean, crash)[0]
    assert crashed == (1, "retry", runner)
    error = clean.sql("SELECT error FROM task_attempts WHERE task_id = %s", (crash,))[0][0]
    assert error["type"] == "RunnerCrashedError", error
    assert "exited with code 3" in error["message"]


def test_tasks_waiting_behind_a_slow_one_are_taken_back_for_another_runner(
    api: Api, workers: Workers, clean: Servers
) -> None:
    start(workers, 2)
    warm_up(api, clean)
    # One runner busy for 2 s; the other pops the four below at once (one push, one claim).
    (busy,) = post_batch(api, ("BlockingSleepTask", {"seconds": 2.0}))
    wait_for(
        lambda: clean.sql("SELECT status FROM tasks WHERE id = %s", (busy,))[0][0] == "running",
        what="the first runner to be busy",
    )
    slow, *quick = post_batch(
        api, ("BlockingSleepTask", {"seconds": 6.0}), *[("FibonacciTask", {"n": 3})] * 3
    )
    # The quick ones wait behind the slow one only until the worker takes them back (0.1 s);
    # the first runner takes them once its own task is done, long before the slow one ends.
    wait_for(
        lambda: (
            clean.sql(
                "SELECT count(*) FROM tasks WHERE id = ANY(%s) AND status = 'completed'", (quick,)
            )[0][0]
            == 3
        ),
        timeout=5,
        what="the quick tasks to complete",
    )
    assert clean.sql("SELECT status FROM tasks WHERE id = %s", (slow,))[0][0] == "running"
    first_runner = attempts(clean, busy)[0][2]  # finished by now
    for task_id in quick:
        # Given back before they started: no attempt, no record of the claim undone.
        assert attempts(clean, task_id) == [(1, "completed", first_runner)]
    # Logged once the ids are back in Redis: a runner may run them all before the line is out.
    wait_for(
        lambda: "took back 3 task(s) waiting behind task" in workers.processes.output(),
        what="the take-back to be logged",
    )


def test_a_claimed_task_cancelled_before_it_starts_never_runs(
    api: Api, workers: Workers, clean: Servers, tmp_path: Path
) -> None:
    start(workers, 1)
    warm_up(api, clean)
    ran = tmp_path / "ran"
    spin, waiting = post_batch(
        api,
        ("SpinTask", {"seconds": 3.0}),
        ("AppendTask", {"path": str(ran), "line": "ran"}),
    )
    wait_for(
        lambda: clean.sql("SELECT status FROM tasks WHERE id = %s", (waiting,))[0][0] == "running",
        what="both to be claimed",
    )
    response = api.client.post(f"/tasks/{waiting}/cancel")
    assert response.status_code in (200, 202), response.text
    # Taken back from behind the spinning task (0.1 s after it started), it ends cancelled
    # then, not pending (nor run by whoever claims it next).
    wait_for(
        lambda: (
            clean.sql("SELECT status FROM tasks WHERE id = %s", (waiting,))[0][0] == "cancelled"
        ),
        timeout=2.0,
        what="the cancelled task to end while the other one still spins",
    )
    wait_finished(clean, 22)
    assert clean.sql("SELECT status FROM tasks WHERE id = %s", (waiting,))[0][0] == "cancelled"
    assert clean.sql("SELECT status FROM tasks WHERE id = %s", (spin,))[0][0] == "completed"
    assert not ran.exists()


def test_runners_claim_nothing_while_their_worker_process_is_frozen(
    api: Api, workers: Workers, clean: Servers
) -> None:
    # A frozen worker renews no lease: a task its runners claimed then would be recovered by a
    # sweeper and run twice. Past a third of the lease they stop claiming.
    worker = start(workers, 1, TASKQ_LEASE_SECONDS="3", TASKQ_SWEEP_INTERVAL_SECONDS="0.5")
    warm_up(api, clean)
    worker.send_signal(signal.SIGSTOP)
    try:
        time.sleep(1.5)
        (task,) = post_batch(api, ("FibonacciTask", {"n": 2}))
        time.sleep(2.0)
        assert clean.sql("SELECT status FROM tasks WHERE id = %s", (task,))[0][0] == "pending"
        assert "the worker process (its runners claim nothing) unavailable" in (
            workers.processes.output()
        )
    finally:
        worker.send_signal(signal.SIGCONT)
    wait_finished(clean, 21)
    assert [outcome for _, outcome, _ in attempts(clean, task)] == ["completed"]
    assert worker.poll() is None


def test_a_runner_stuck_between_tasks_is_replaced(
    api: Api, workers: Workers, clean: Servers
) -> None:
    # A runner that stops moving between tasks keeps whatever it popped or claimed, its leases
    # renewed by the worker: past a third of the lease the worker kills and settles it.
    start(workers, 1, TASKQ_LEASE_SECONDS="3", TASKQ_SWEEP_INTERVAL_SECONDS="0.5")
    warm_up(api, clean)
    first = attempts(clean, clean.sql("SELECT max(id) FROM tasks")[0][0])[0][2]
    runner = int(first.rsplit("/r", 1)[1])
    os.kill(runner, signal.SIGSTOP)
    (task,) = post_batch(api, ("FibonacciTask", {"n": 2}))
    wait_finished(clean, 21, timeout=15)
    [(attempt, outcome, by)] = attempts(clean, task)
    assert (attempt, outcome) == (1, "completed")
    assert by != first  # another runner, the frozen one killed
    assert f"task runner {runner} has not moved for" in workers.processes.output()
    assert not alive(runner)
