"""Runner processes: they pop, claim, run and record their own sync tasks. What their worker
settles when one dies, lags or is stuck; timeouts and kills that stop CPU-bound code and the
subprocesses it started; the fork server that makes runners, and its own death."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg

from taskq_core.processes import alive
from tests.conftest import Api, Servers, Workers, wait_finished, wait_for
from tests.worker.test_reliability import FAST, finished, post


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
    (worker,) = workers.start(concurrency=4, args=("--processes", str(runners)), **env)
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


# ---- runner processes and their fork server ------------------------------------------------------


def parent_of(pid: int) -> int:
    """The parent process id of `pid`: for a runner, its fork server's."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def children(parent: int) -> list[int]:
    """The live child processes of `parent`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if parent_of(int(entry.name)) == parent and alive(int(entry.name)):
                    found.append(int(entry.name))
            except (OSError, IndexError):  # gone meanwhile
                continue
    return sorted(found)


def cmdline(pid: int) -> bytes:
    """`pid`'s command line. setproctitle empties it for an instant while it writes a title (a
    runner retitles itself for each task): an empty one is read again."""
    deadline = time.monotonic() + 5
    while True:
        line = Path(f"/proc/{pid}/cmdline").read_bytes()
        if line or time.monotonic() > deadline:
            return line
        time.sleep(0.005)


def fork_servers_of(worker: int) -> list[int]:
    """The worker's live fork servers: its command line until it sets its title, the title
    after."""
    found = []
    for pid in children(worker):
        try:
            line = cmdline(pid)
        except OSError:
            continue
        if b"taskq_core.worker.zygote" in line or line.startswith(b"taskq-forkserver"):
            found.append(pid)
    return found


def runners_of(worker: int) -> list[int]:
    return [pid for server in fork_servers_of(worker) for pid in children(server)]


def wait_gone(*pids: int, within: float = 10.0) -> None:
    wait_for(
        lambda: not any(alive(pid) for pid in pids),
        timeout=within,
        what=f"processes {pids} to be gone",
    )


def runner_pid(clean: Servers, task_id: object) -> int:
    """The runner that ran `task_id`'s last attempt, from its worker id (`<worker>/r<pid>`)."""
    rows = clean.sql(
        "SELECT worker_id FROM task_attempts WHERE task_id = %s ORDER BY id DESC", (task_id,)
    )
    return int(rows[0][0].rsplit("/r", 1)[1])


def one_runner(workers: Workers, **env: str) -> subprocess.Popen[bytes]:
    (worker,) = workers.start(concurrency=2, args=("--processes", "1"), **FAST, **env)
    return worker


def spin(api: Api, seconds: float, **options: Any) -> dict[str, Any]:
    return post(api, {"task_type": "SpinTask", "input_data": {"seconds": seconds}, **options})


def test_a_timeout_kills_the_runner_and_what_its_task_started(
    api: Api, workers: Workers, clean: Servers, tmp_path: Path
) -> None:
    worker = one_runner(workers)
    pid_file = tmp_path / "sleep.pid"
    task = post(
        api,
        {
            "task_type": "SpawnTask",
            "input_data": {"pid_file": str(pid_file)},
            "timeout_seconds": 0.5,
            "max_attempts": 1,
        },
    )
    done = finished(api, task["id"])
    assert (done["status"], done["error"]["type"]) == ("failed", "TaskTimeoutError")
    old = runner_pid(clean, task["id"])
    # Its process group: the runner and the `sleep` its task started.
    wait_gone(old, int(pid_file.read_text()))
    after = finished(api, spin(api, 0)["id"])["result"]
    assert after["pid"] not in (old, worker.pid)
    assert runners_of(worker.pid) == [after["pid"]]


def test_a_runner_killed_while_idle_is_replaced_by_a_fork_of_the_fork_server(
    api: Api, workers: Workers, clean: Servers
) -> None:
    """Three kill-and-replace cycles, each replacement forked by the same fork server (a fork,
    not a new interpreter loading the plugins: its command line is the fork server's title
    until it sets its own). How fast that is lives in the bench, not here."""
    worker = one_runner(workers)
    seen: set[int] = set()
    fork_server = None
    for _ in range(3):
        runner = finished(api, spin(api, 0)["id"])["result"]["pid"]
        assert runner not in seen  # the killed one was replaced
        seen.add(runner)
        fork_server = fork_server or parent_of(runner)
        assert parent_of(runner) == fork_server
        assert parent_of(fork_server) == worker.pid
        assert cmdline(runner).startswith(b"taskq-runner")
        os.kill(runner, signal.SIGKILL)
        wait_gone(runner)


def test_a_killed_fork_server_is_replaced_and_so_are_its_runners(
    api: Api, workers: Workers, clean: Servers, tmp_path: Path
) -> None:
    (worker,) = workers.start(concurrency=2, args=("--processes", "2"), **FAST)
    warm = [spin(api, 0) for _ in range(4)]
    for task in warm:
        finished(api, task["id"])
    old = wait_for(lambda: len(runners := runners_of(worker.pid)) == 2 and runners, what="runners")
    (fork_server,) = fork_servers_of(worker.pid)
    pid_file = tmp_path / "sleep.pid"
    spawning = post(
        api,
        {"task_type": "SpawnTask", "input_data": {"pid_file": str(pid_file)}, "max_attempts": 1},
    )
    wait_for(lambda: pid_file.exists() and pid_file.read_text() != "", what="the task to start")
    os.kill(fork_server, signal.SIGKILL)
    # Its runners die with it; the one running the task takes the task's subprocess along.
    done = finished(api, spawning["id"])
    assert done["status"] == "failed"
    assert done["error"]["type"] == "RunnerCrashedError"
    assert done["error"]["message"] == (
        "the process running the task was stopped when the task runner fork server died"
    )
    wait_gone(fork_server, *old, int(pid_file.read_text()))
    after = [spin(api, 0) for _ in range(8)]
    assert all(finished(api, task["id"])["status"] == "completed" for task in after)
    new = wait_for(lambda: len(runners := runners_of(worker.pid)) == 2 and runners, what="two")
    assert not set(new) & set(old)
    assert fork_servers_of(worker.pid) != [fork_server]


def test_a_stuck_fork_server_is_killed_and_replaced(
    api: Api, workers: Workers, clean: Servers
) -> None:
    # It can neither report the killed runner's exit nor fork: the worker waits FORK_TIMEOUT
    # (10 s) for each, then kills it and spawns another.
    worker = one_runner(workers)
    old = finished(api, spin(api, 0)["id"])["result"]["pid"]
    fork_server = parent_of(old)
    os.kill(fork_server, signal.SIGSTOP)
    os.kill(old, signal.SIGKILL)
    task = spin(api, 0)
    done = finished(api, task["id"], timeout=60)
    assert done["status"] == "completed"
    wait_gone(fork_server)
    (new_server,) = fork_servers_of(worker.pid)
    assert new_server != fork_server
    assert parent_of(done["result"]["pid"]) == new_server
    # The killed runner was settled once: the dead fork server's late word of its exit is not a
    # second death (a second settle worked on closed memory and closed a file number twice).
    time.sleep(1)
    log = workers.processes.output()
    assert "Traceback" not in log, log[-3000:]
    assert "never retrieved" not in log, log[-3000:]


def test_print_and_input_in_a_task_leave_the_runner_alone(
    api: Api, workers: Workers, clean: Servers
) -> None:
    one_runner(workers)
    tasks = [post(api, {"task_type": "PrintTask", "input_data": {}}) for _ in range(3)]
    done = [finished(api, task["id"]) for task in tasks]
    assert [task["status"] for task in done] == ["completed"] * 3
    # stdin is /dev/null: a task's readline() must not wait for anything, nor eat anything.
    assert done[0]["result"]["stdin"] == ""
    wait_for(
        lambda: workers.processes.output().count("a line a task printed") == 3,
        what="the lines the tasks printed, in the worker's output",
    )


def test_a_bad_progress_call_fails_the_task_not_the_runner(
    api: Api, clean: Servers, workers: Workers, sites: dict[str, Path]
) -> None:
    workers.sites.append(sites["taskq-longwork"])
    one_runner(workers)
    bad = post(api, {"task_type": "ProgressTask", "input_data": {"reports": -5, "gate": False}})
    fine = post(api, {"task_type": "ProgressTask", "input_data": {"reports": 10, "gate": False}})
    failed = finished(api, bad["id"])
    assert failed["error"]["type"] == "ValueError"
    assert "done must be 0 or more, not -5" in failed["error"]["message"]
    assert finished(api, fine["id"])["result"] == {"reports": 10}
    assert runner_pid(clean, bad["id"]) == runner_pid(clean, fine["id"])


def test_a_stopped_worker_leaves_no_processes(api: Api, workers: Workers, clean: Servers) -> None:
    (worker,) = workers.start(
        concurrency=2, args=("--processes", "2", "--grace-seconds", "0.5"), **FAST
    )
    for task in [spin(api, 0) for _ in range(4)]:
        finished(api, task["id"])
    busy = spin(api, 30)
    wait_for(
        lambda: (
            clean.sql("SELECT status FROM tasks WHERE id = %s", (busy["id"],))[0][0] == "running"
        ),
        what="the long task to start",
    )
    pids = [*fork_servers_of(worker.pid), *runners_of(worker.pid)]
    assert len(pids) == 3
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    wait_gone(*pids)
    # Stopped past the grace period: handed back, to run again.
    assert clean.sql("SELECT status FROM tasks WHERE id = %s", (busy["id"],))[0][0] == "pending"


def test_runners_and_their_fork_server_die_with_their_worker(
    api: Api, workers: Workers, clean: Servers
) -> None:
    # Both runners busy: an idle runner would also stop once its supervisor went quiet; a busy
    # one has only the parent-death signal.
    (worker,) = workers.start(concurrency=2, args=("--processes", "2"), **FAST)
    for task in [spin(api, 0) for _ in range(4)]:
        finished(api, task["id"])
    busy = [spin(api, 60), spin(api, 60)]
    wait_for(
        lambda: (
            clean.sql(
                "SELECT count(*) FROM tasks WHERE id = ANY(%s) AND status = 'running'",
                ([task["id"] for task in busy],),
            )[0][0]
            == 2
        ),
        what="both runners to be busy",
    )
    pids = [*fork_servers_of(worker.pid), *runners_of(worker.pid)]
    assert len(pids) == 3
    worker.send_signal(signal.SIGKILL)
    worker.wait(5)
    wait_gone(*pids)


def cpu_seconds(pid: int) -> float:
    """The CPU time `pid` has used (user and system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_worker_forks_its_fork_server_and_spawns_the_replacement(
    api: Api, workers: Workers
) -> None:
    worker = one_runner(workers)
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


# ---- stopping while claims are on their way ---------------------------------------------------


def waiting_on_a_lock(clean: Servers) -> bool:
    rows = clean.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock'"
    )
    return bool(rows[0][0])


def test_an_id_passed_on_and_claimed_as_the_worker_stops_goes_back_unstarted(
    api: Api, workers: Workers, clean: Servers
) -> None:
    # An idle runner pops an async task's id and passes it on; the worker's claim of it waits
    # behind a lock until the worker has begun to stop. Claimed after the drain took its list of
    # what runs, it must not start unwatched (the worker hung on exit, the task left running).
    (worker,) = workers.start(
        concurrency=2, args=("--processes", "1", "--grace-seconds", "10"), **FAST
    )
    finished(api, spin(api, 0)["id"])
    with psycopg.connect(clean.database_url) as lock:
        task = post(api, {"task_type": "AsyncSleepTask", "input_data": {"seconds": 3}})
        lock.execute("SELECT id FROM tasks WHERE id = %s FOR UPDATE", (task["id"],))
        wait_for(lambda: waiting_on_a_lock(clean), what="the worker's claim to wait")
        worker.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        lock.rollback()
    assert worker.wait(15) == 0
    # Either its claim came in before the drain began (it ran, within the grace period) or
    # after (it went back unstarted): never started and left behind.
    row = clean.sql("SELECT status, attempts FROM tasks WHERE id = %s", (task["id"],))
    assert row in ([("pending", 0)], [("completed", 1)]), row
    assert [o for _, o, _ in attempts(clean, task["id"])] == (["completed"] if row[0][1] else [])


def test_a_take_back_under_way_when_the_worker_stops_is_finished(
    api: Api, workers: Workers, clean: Servers
) -> None:
    # Tasks waiting behind a slow one are being given back when SIGTERM comes, their statement
    # held up by a lock: the stop waits for it (cut short, they stayed `running` under the
    # runner's id until their leases lapsed, and lost an attempt they never used).
    start(workers, 1, TASKQ_LEASE_SECONDS="30")
    warm_up(api, clean)
    _, *waiting = post_batch(
        api, ("BlockingSleepTask", {"seconds": 2.0}), *[("FibonacciTask", {"n": 1})] * 50
    )
    with psycopg.connect(clean.database_url) as lock:
        wait_for(
            lambda: (
                clean.sql("SELECT status FROM tasks WHERE id = %s", (waiting[0],))[0][0]
                == "running"
            ),
            interval=0.002,
            what="the batch to be claimed",
        )
        lock.execute("SELECT id FROM tasks WHERE id = ANY(%s) FOR SHARE", (waiting,))
        wait_for(lambda: waiting_on_a_lock(clean), what="the take-back to wait")
        workers.processes.started[0][0].send_signal(signal.SIGTERM)
        time.sleep(1.0)
        lock.rollback()
    assert workers.processes.started[0][0].wait(20) == 0
    rows = clean.sql(
        "SELECT status, attempts, count(*) FROM tasks WHERE id = ANY(%s) GROUP BY 1, 2", (waiting,)
    )
    assert rows == [("pending", 0, 50)], rows
    assert clean.sql("SELECT count(*) FROM task_attempts WHERE task_id = ANY(%s)", (waiting,)) == [
        (0,)
    ]
