"""AsyncTaskQClient.follow against the real API and a worker: the task as it is, then each change
of its status or progress, until it has finished; two follows at once on one client; the errors
a follow raises."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from taskq_client import AsyncTaskQClient, NotFoundError, Task, UnavailableError

from tests.conftest import Api, Servers, Workers, free_port
from tests.worker.test_progress import long_workers, open_gate, start, submit  # noqa: F401

REPORTS = 1000
TIMEOUT = 60  # seconds a follow may take in all before the test fails


async def until_halfway(events: AsyncIterator[Task], seen: list[Task]) -> None:
    """Read events until the task's last report before its gate is shown."""
    async for task in events:
        seen.append(task)
        if task.progress is not None and task.progress.message == "halfway":
            return
    pytest.fail(f"the follow ended before the last report: {seen}")


async def rest(events: AsyncIterator[Task], seen: list[Task]) -> None:
    async for task in events:
        seen.append(task)


def check_sequence(seen: list[Task]) -> None:
    """Statuses only move forward, progress only grows while running, and the last is final."""
    order = ["pending", "running", "completed"]
    statuses = [task.status for task in seen]
    assert statuses == sorted(statuses, key=order.index), statuses
    done = [t.progress.done for t in seen if t.status == "running" and t.progress is not None]
    assert done == sorted(done)
    assert seen[-1].status == "completed"
    assert seen[-1].result == {"reports": REPORTS}
    assert seen[-1].progress is not None
    assert seen[-1].progress.message == "halfway"
    assert seen[-1].progress.done == REPORTS
    assert seen[-1].progress.total == 2 * REPORTS
    assert all(task.id == seen[0].id for task in seen)


def test_async_follow_yields_each_change_until_the_end(
    api: Api,
    long_workers: Workers,  # noqa: F811
    clean: Servers,
) -> None:
    first = submit(api, "ProgressTask", {"reports": REPORTS})
    second = submit(api, "ProgressTask", {"reports": REPORTS})

    async def scenario() -> tuple[list[Task], list[Task], list[Task]]:
        async with AsyncTaskQClient(api.url) as client:
            one, two = client.follow(first), client.follow(second)
            seen_one = [await anext(one)]  # the stream is open before any worker runs
            seen_two = [await anext(two)]
            assert (seen_one[0].status, seen_two[0].status) == ("pending", "pending")
            start(long_workers, api)
            # Both followed at once, on one client: each reaches its gate.
            await asyncio.gather(until_halfway(one, seen_one), until_halfway(two, seen_two))
            assert seen_one[-1].status == seen_two[-1].status == "running"
            # The second finishes while the first still waits at its gate.
            open_gate(clean, second)
            await rest(two, seen_two)
            assert (await client.get(first)).status == "running"
            open_gate(clean, first)
            await rest(one, seen_one)
            # A finished task: followed, it is given once as it ended.
            again = [task async for task in client.follow(first)]
        return seen_one, seen_two, again

    seen_one, seen_two, again = asyncio.run(asyncio.wait_for(scenario(), TIMEOUT))
    for seen in (seen_one, seen_two):
        check_sequence(seen)
        assert any(task.status == "running" for task in seen)
    assert [(t.id, t.status, t.result) for t in again] == [
        (first, "completed", {"reports": REPORTS})
    ]


def test_async_follow_errors(api: Api, clean: Servers) -> None:
    async def scenario() -> None:
        async with AsyncTaskQClient(api.url) as client:
            with pytest.raises(NotFoundError):
                await anext(client.follow(999_999))
        nowhere = AsyncTaskQClient(f"http://127.0.0.1:{free_port()}", retries=0)
        async with nowhere:
            with pytest.raises(UnavailableError, match="unreachable"):
                await anext(nowhere.follow(1))

    asyncio.run(asyncio.wait_for(scenario(), TIMEOUT))
