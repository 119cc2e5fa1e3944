"""Client.enqueue from many threads and AsyncClient.enqueue from many asyncio tasks: shared
statements, each call still durable before it returns."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from taskq_core.async_client import AsyncClient
from taskq_core.broker import PRIORITIES, queue_key
from taskq_core.client import Client
from taskq_core.commit_group import WRITERS
from taskq_core.errors import InvalidTaskError
from taskq_core.settings import Settings
from tests.conftest import Servers, wait_for

THREADS = 32


def _committed(servers: Servers, task_id: int) -> bool:
    # Another connection: it sees only what was committed.
    with psycopg.connect(servers.database_url, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM tasks WHERE id = %s", (task_id,)).fetchone() is not None


def _queued(servers: Servers) -> list[int]:
    """Every id in the five priority lists (other taskq keys hold counters, not ids)."""
    keys = [queue_key("default", priority) for priority in PRIORITIES]
    with servers.redis() as client:
        return sorted(int(i) for k in keys for i in client.lrange(k, 0, -1))


def test_threads_enqueueing_at_once_share_a_statement_and_each_returns_once_committed(
    clean: Servers,
) -> None:
    client = Client(redis_url=clean.redis_url, database_url=clean.database_url)
    group = client._group
    assert group is not None
    # An open transaction holding the table's lock stops the first WRITERS statements: the other
    # calls must queue behind them and then go in one statement together.
    blocker = psycopg.connect(clean.database_url)
    blocker.execute("LOCK TABLE tasks IN EXCLUSIVE MODE")
    start = threading.Barrier(THREADS)
    seen: list[tuple[int, bool]] = []

    def call(n: int) -> None:
        start.wait()
        task_id = client.enqueue("FibonacciTask", {"n": n})
        seen.append((task_id, _committed(clean, task_id)))

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            futures = [pool.submit(call, n) for n in range(THREADS)]
            wait_for(lambda: group.waiting == THREADS - WRITERS, what="calls queued")
            assert not seen  # nothing returned before its commit
            blocker.rollback()
            for future in futures:
                future.result(timeout=30)
        ids = sorted(task_id for task_id, _ in seen)
        assert all(committed for _, committed in seen)
        assert len(set(ids)) == THREADS
        # The WRITERS first calls one statement each; each of them, once done, hands its turn to
        # the first in line, who takes everyone waiting then: at most WRITERS statements more.
        ((rows, statements),) = clean.sql("SELECT count(*), count(DISTINCT xmin::text) FROM tasks")
        assert rows == THREADS
        assert WRITERS < statements <= 2 * WRITERS
        assert sorted(n for (n,) in clean.sql("SELECT (input_data->>'n')::int FROM tasks")) == list(
            range(THREADS)
        )
        assert _queued(clean) == ids
    finally:
        blocker.close()
        client.close()


def test_a_failed_group_fails_each_of_its_calls_and_leaves_no_row(clean: Servers) -> None:
    client = Client(redis_url=clean.redis_url, database_url=clean.database_url)
    try:
        with pytest.raises(InvalidTaskError):  # refused before any statement
            client.enqueue("FibonacciTask", {"n": -1})
        clean.sql("ALTER TABLE tasks ADD CONSTRAINT no_fib CHECK (task_type <> 'FibonacciTask')")
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(client.enqueue, "FibonacciTask", {"n": 1}) for _ in range(8)]
            for future in futures:
                with pytest.raises(Exception, match="no_fib"):
                    future.result(timeout=30)
        assert clean.sql("SELECT count(*) FROM tasks") == [(0,)]
        clean.sql("ALTER TABLE tasks DROP CONSTRAINT no_fib")
        assert _committed(clean, client.enqueue("FibonacciTask", {"n": 2}))  # it goes on
    finally:
        clean.sql("ALTER TABLE tasks DROP CONSTRAINT IF EXISTS no_fib")
        client.close()


def test_asyncio_tasks_enqueueing_at_once_share_statements(clean: Servers) -> None:
    async def main() -> list[tuple[int, bool]]:
        async with AsyncClient(
            redis_url=clean.redis_url, database_url=clean.database_url
        ) as client:

            async def call(n: int) -> tuple[int, bool]:
                task_id = await client.enqueue("FibonacciTask", {"n": n}, priority=4)
                return task_id, _committed(clean, task_id)

            with pytest.raises(InvalidTaskError):
                await client.enqueue("FibonacciTask", {"n": -1})
            return await asyncio.gather(*(call(n) for n in range(THREADS)))

    results = asyncio.run(main())
    assert all(committed for _, committed in results)
    ids = sorted(task_id for task_id, _ in results)
    assert len(set(ids)) == THREADS
    (statements,) = clean.sql("SELECT count(DISTINCT xmin::text) FROM tasks")[0]
    assert statements < THREADS  # the loop never yields to 32 separate commits
    assert _queued(clean) == ids
    with clean.redis() as client:
        assert client.llen("taskq:{default}:4") == THREADS


def test_both_clients_from_settings_use_the_configured_servers_and_queue(clean: Servers) -> None:
    settings = Settings(database_url=clean.database_url, redis_url=clean.redis_url, queue="q2")

    async def enqueue_async() -> int:
        async with AsyncClient.from_settings(settings) as client:
            return await client.enqueue("FibonacciTask", {"n": 2})

    with Client.from_settings(settings) as client:
        ids = [client.enqueue("FibonacciTask", {"n": 1}), asyncio.run(enqueue_async())]
    assert clean.sql("SELECT id, queue FROM tasks ORDER BY id") == [(i, "q2") for i in ids]
    with clean.redis() as redis:
        assert sorted(int(i) for i in redis.lrange(queue_key("q2", 3), 0, -1)) == ids
