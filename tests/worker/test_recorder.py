"""The worker's group commit on real PostgreSQL: an outcome it refuses fails its own task, with the
reason, and never holds up the outcomes written with it."""

from __future__ import annotations

import asyncio

from taskq_core.records import AttemptOutcome, Finish, TaskStatus
from taskq_core.worker.loop import OUTAGE_ERRORS
from taskq_core.worker.recorder import UNRECORDABLE, Recorder
from taskq_core.worker.sql import Claims
from tests.conftest import Servers

WORKER = "w-recorder-test"


async def _record(servers: Servers, finishes: list[Finish]) -> list[bool]:
    claims = Claims(servers.database_url)
    recorder = Recorder(claims, WORKER, OUTAGE_ERRORS)
    writer = asyncio.create_task(recorder.run())
    try:
        ids = [row[0] for row in servers.sql("SELECT id FROM tasks ORDER BY id")]
        claimed = await claims.claim(ids, WORKER, 30.0)
        assert len(claimed) == len(finishes)
        # All queued before the writer runs again: one group.
        pending = [recorder.record(task, f) for task, f in zip(claimed, finishes, strict=True)]
        return list(await asyncio.wait_for(asyncio.gather(*pending), timeout=30))
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        await claims.close()


def test_a_refused_outcome_fails_its_task_and_the_rest_are_recorded(clean: Servers) -> None:
    clean.sql(
        "INSERT INTO tasks (task_type, priority, input_data, max_attempts) "
        "SELECT 'FibonacciTask', 3, '{}', 3 FROM generate_series(1, 5)"
    )
    good = Finish(TaskStatus.COMPLETED, AttemptOutcome.COMPLETED, result={"result": 1})
    refused = Finish(TaskStatus.COMPLETED, AttemptOutcome.COMPLETED, result={"text": "a\x00b"})
    assert asyncio.run(_record(clean, [good, good, refused, good, good])) == [True] * 5
    rows = clean.sql("SELECT status, result, error FROM tasks ORDER BY id")
    assert [r[0] for r in rows] == ["completed", "completed", "failed", "completed", "completed"]
    assert rows[0][1] == {"result": 1}
    error = rows[2][2]
    assert error["type"] == UNRECORDABLE
    assert "refused" in error["message"]
    history = clean.sql("SELECT outcome FROM task_attempts ORDER BY task_id")
    assert [h[0] for h in history] == ["completed", "completed", "failed", "completed", "completed"]
