"""The adaptive concurrency's decisions (pure functions), and one real worker finding its own."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from taskq_core.worker.tuner import (
    BATCH_TARGET,
    CEILING,
    LAG_HIGH,
    LINGER_MAX,
    LINGER_MIN,
    START,
    Bounds,
    Observation,
    Tuner,
    decide,
    linger,
    memory_available,
)
from tests.conftest import Api, Processes, Servers, taskq, wait_finished

BOUNDS = Bounds(floor=2, ceiling=256)
# Short async tasks from a deep queue: 1,000 done in the window.
SHORT = Observation(
    limit=16,
    seconds=0.1,
    completed=1000,
    deep=True,
    lag=0.0,
    busy=0.5,
    memory_available=0.5,
)


def test_short_tasks_from_a_deep_queue_quadruple_the_limit_up_to_the_ceiling() -> None:
    limits = [SHORT.limit]
    for _ in range(4):
        limits.append(decide(replace(SHORT, limit=limits[-1]), BOUNDS))
    assert limits == [16, 64, 256, 256, 256]


def test_linger_gathers_a_batch_at_the_completion_rate_while_the_queue_is_deep() -> None:
    # 2,000 fib(20)s a second: a statement for every BATCH_TARGET of them means waiting 32 ms.
    fib = replace(SHORT, completed=200)
    assert linger(fib) == pytest.approx(BATCH_TARGET / 2000)
    # 10,000 no-ops a second gather a batch in 6.4 ms; 50,000 async ones faster than the least.
    assert linger(SHORT) == pytest.approx(BATCH_TARGET / 10_000)
    assert linger(replace(SHORT, completed=5000)) == LINGER_MIN
    # Slow tasks would make a batch wait for ever: it is capped.
    assert linger(replace(SHORT, completed=2)) == LINGER_MAX


def test_a_shallow_queue_never_lingers_past_the_least_wait() -> None:
    # 100 tasks a second arriving one by one: each claim and outcome goes (nearly) at once.
    assert linger(replace(SHORT, completed=10, deep=False)) == LINGER_MIN
    assert linger(replace(SHORT, completed=0)) == LINGER_MIN


def test_tasks_grow_the_limit_whatever_their_rate() -> None:
    # They never queue in the worker: one done in the window is enough to learn there is room.
    assert decide(replace(SHORT, completed=1), BOUNDS) == 64


def test_a_shallow_queue_holds_the_limit() -> None:
    assert decide(replace(SHORT, deep=False), BOUNDS) == SHORT.limit


def test_a_window_with_nothing_done_holds_the_limit() -> None:
    assert decide(replace(SHORT, completed=0), BOUNDS) == SHORT.limit


def test_a_late_event_loop_takes_a_quarter_off() -> None:
    assert decide(replace(SHORT, limit=100, lag=LAG_HIGH * 2, busy=1.0), BOUNDS) == 75


def test_a_loop_late_for_want_of_a_core_does_not_shrink_the_limit() -> None:
    # The process used a fifth of a core: the machine was busy, not its event loop.
    assert decide(replace(SHORT, limit=50, lag=LAG_HIGH * 2, busy=0.2), BOUNDS) == 200


def test_tight_memory_halves_the_limit_before_anything_else() -> None:
    seen = replace(SHORT, limit=100, memory_available=0.05, lag=LAG_HIGH * 2, busy=1.0)
    assert decide(seen, BOUNDS) == 50
    assert decide(replace(SHORT, limit=3, memory_available=0.01), BOUNDS) == 2  # the floor


def test_unknown_memory_does_not_limit() -> None:
    assert decide(replace(SHORT, memory_available=None), BOUNDS) == 64


def test_a_given_concurrency_is_the_ceiling_and_the_start() -> None:
    tuner = Tuner.for_worker(8)
    assert (tuner.limit, tuner.bounds) == (8, Bounds(2, 8))
    assert decide(replace(SHORT, limit=8), tuner.bounds) == 8
    assert Tuner.for_worker(1).bounds == Bounds(1, 1)


def test_without_one_the_worker_starts_small() -> None:
    tuner = Tuner.for_worker(None)
    assert (tuner.limit, tuner.bounds) == (START, Bounds(2, CEILING))


def test_the_tuner_counts_each_window_afresh() -> None:
    tuner = Tuner.for_worker(None)
    tuner.popped(asked=16, got=16)
    for _ in range(4):
        tuner.executed()
    seen = tuner.observe(seconds=0.1, lag=0.0)
    assert (seen.completed, seen.deep) == (4, True)
    assert tuner.step(seen) == 4 * START
    assert tuner.observe(seconds=0.1, lag=0.0).completed == 0


def test_memory_available_is_read_from_meminfo() -> None:
    text = "MemTotal:       24000000 kB\nMemFree:  1 kB\nMemAvailable:    6000000 kB\n"
    assert memory_available(text) == 0.25
    assert memory_available("MemTotal: 100 kB\n") is None


# ---- a real worker ------------------------------------------------------------------------------


def test_a_worker_without_flags_grows_its_concurrency_under_a_deep_queue_of_short_tasks(
    api: Api, clean: Servers, processes: Processes, sites: dict[str, Path]
) -> None:
    # Enough for the queue to stay deep for dozens of the tuner's 0.1 s windows: it grows the
    # limit from the first one on.
    count = 2000
    body = {"tasks": [{"task_type": "AsyncSleepTask", "input_data": {"seconds": 0}}] * 1000}
    for _ in range(count // 1000):
        api.client.post("/tasks/batch", json=body, timeout=60).raise_for_status()
    worker = processes.spawn(
        taskq("worker"),
        clean.env(sites["taskq-testkit"], TASKQ_LOG_LEVEL="DEBUG"),
        "worker",
    )
    wait_finished(clean, count, timeout=120)
    assert clean.sql("SELECT DISTINCT status FROM tasks") == [("completed",)]
    worker.terminate()
    assert worker.wait(30) == 0
    log = processes.output()
    assert f"async concurrency {START} (adapting within 2-{CEILING})" in log
    grown = [int(m) for m in re.findall(r"concurrency \d+ -> (\d+)", log)]
    assert max(grown, default=0) > START, log[-3000:]
