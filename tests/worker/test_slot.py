"""A runner's slot: the shared memory its worker reads, on a real memfd mapped twice (as the
runner and its worker map it, in two processes)."""

from __future__ import annotations

import os

from taskq_core.records import AttemptOutcome, ClaimedTask, Finish, TaskStatus
from taskq_core.worker.slot import Slot, entry, items


def _pair() -> tuple[Slot, Slot]:
    mine = Slot.create()
    return mine, Slot(os.dup(mine.fd))


def _task(task_id: int) -> ClaimedTask:
    return ClaimedTask(task_id, "FibonacciTask", {}, 3, 1, 3, None)


def test_the_worker_sees_what_the_runner_runs_and_a_torn_write_as_not_started() -> None:
    runner, worker = _pair()
    assert worker.running() is None
    runner.begin(7, 2, 1.5, waiting=3)
    seen = worker.running()
    assert seen is not None
    assert (seen.task_id, seen.attempt, seen.waiting) == (7, 2, 3)
    assert seen.deadline - seen.started == 1_500_000_000
    runner.end()
    assert worker.running() is None
    # Killed in the middle of writing the next start: its code had not run.
    runner.begin(8, 1, None, waiting=0)
    runner._set(0, runner._get(0) + 1)  # the sequence number as a write leaves it, odd
    assert worker.running_frozen() is None
    # And read while it runs: torn for good, which must not hold the reader (the worker's
    # event loop) for ever.
    assert worker.running() is None


def test_a_revocation_names_one_run_and_is_read_once() -> None:
    runner, worker = _pair()
    started = runner.begin(7, 1, None, waiting=2)
    seen = worker.running()
    assert seen is not None
    worker.revoke(seen)
    runner.end()
    assert runner.revoked(started)
    assert not runner.revoked(started)  # read once
    # The same task run again (its retry), with tasks waiting behind it: not revoked.
    again = runner.begin(7, 2, None, waiting=2)
    runner.end()
    assert not runner.revoked(again)


def test_outcomes_stay_until_recorded_and_writes_in_flight_keep_later_ones() -> None:
    runner, worker = _pair()
    done = Finish(TaskStatus.COMPLETED, AttemptOutcome.COMPLETED, result={"n": 1})
    assert runner.add_outcome(entry(_task(1), done))
    first = runner.mark()  # a write of task 1's outcome goes out
    assert runner.add_outcome(entry(_task(2), done))
    assert [t.id for t, _ in items(worker.outcomes())] == [1, 2]
    runner.recorded(first)  # that write is through; task 2's is not
    [(task, finish)] = items(worker.outcomes())
    assert (task.id, finish.result) == (2, {"n": 1})
    runner.recorded(runner.mark())
    assert worker.outcomes() == []
    assert runner.mark() == 0  # empty again: the buffer starts afresh


def test_cancelled_ids_reach_the_runner_once() -> None:
    runner, worker = _pair()
    worker.skip(5)
    worker.skip(6)
    assert runner.skipped() == {5, 6}
    assert runner.skipped() == set()
