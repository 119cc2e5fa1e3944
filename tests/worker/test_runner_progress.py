"""Progress through a runner's pipe: throttled, passed on for the running job only, and never
taken for a reply, however many jobs are pipelined behind it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from taskq_core.worker.execution import Job
from taskq_core.worker.pool import RunnerPool
from tests.worker.test_runner import env_with, with_pool


def job(task_id: int, reports: int) -> Job:
    data = {"reports": reports, "gate": False}
    return Job(task_id, "ProgressTask", data, 1, 3, 3, "test-worker")


def test_progress_lines_interleave_with_pipelined_replies(sites: dict[str, Path]) -> None:
    env = env_with(sites["taskq-testkit"], sites["taskq-longwork"])
    seen: list[tuple[int, dict[str, Any]]] = []

    async def body(pool: RunnerPool) -> list[Any]:
        pool.on_progress = lambda task_id, value: seen.append((task_id, value))
        # Ten jobs at once on one runner: they are pipelined, each reporting 50,000 times.
        return await asyncio.gather(*(pool.run(job(i, 50_000), None) for i in range(1, 11)))

    outcomes = with_pool(env, body)
    assert [o.error for o in outcomes] == [None] * 10
    assert [o.result for o in outcomes] == [{"reports": 50_000}] * 10
    by_task: dict[int, list[dict[str, Any]]] = {}
    for task_id, value in seen:
        by_task.setdefault(task_id, []).append(value)
    assert sorted(by_task) == list(range(1, 11))
    for values in by_task.values():
        # The throttle: a handful of lines for 50,001 calls, the last one always sent.
        assert 1 <= len(values) < 200
        assert values[-1] == {"done": 50_000, "total": 100_000, "message": "halfway"}
        done = [v["done"] for v in values]
        assert done == sorted(done)
    # In order: a job's lines all come before the next job's (one runner, one job at a time).
    order = [task_id for task_id, _ in seen]
    assert order == sorted(order)


def test_a_bad_progress_call_fails_the_task_not_the_runner(sites: dict[str, Path]) -> None:
    env = env_with(sites["taskq-testkit"], sites["taskq-longwork"])

    async def body(pool: RunnerPool) -> list[Any]:
        bad = Job(1, "ProgressTask", {"reports": -5, "gate": False}, 1, 3, 3, "w")
        return [await pool.run(bad, None), await pool.run(job(2, 10), None)]

    failed, fine = with_pool(env, body)
    assert failed.error["type"] == "ValueError"
    assert "done must be 0 or more, not -5" in failed.error["message"]
    assert fine.result == {"reports": 10}
