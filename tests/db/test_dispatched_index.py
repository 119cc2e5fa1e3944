"""The sweeper's lost-dispatch check on ix_tasks_dispatched: it finds exactly the lost ids (those
dispatched before a list's popping point, a batch's tie included) and reads them through the
index alone, not the tasks waiting for their run_at nor those queued behind the popping point."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import psycopg
import pytest
from psycopg import sql

from taskq_core import broker
from taskq_core.db import urls
from taskq_core.worker.lost import LostDispatches
from taskq_core.worker.sql.connection import Connection
from taskq_core.worker.sql.lost import _BEHIND, LostQueries
from tests.conftest import Servers

DELAYED = 5_000  # waiting for their run_at, at the lowest ids: what the old check read through
QUEUED = 20_000  # dispatched after the popping point, in their lists
BATCH = 1_000  # dispatched together (one enqueued_at), the popping point among them
GRACE = 2.0

# Task rows by the test's own hand, as the API and workers would leave them: `age` minutes since
# the ids were pushed (NULL: not pushed yet), the status FIFO implies.
_INSERT = """
INSERT INTO tasks (task_type, priority, input_data, max_attempts, status, run_at, enqueued_at)
SELECT 'NoopTask', %(priority)s, '{}', 3, %(status)s,
       CASE WHEN %(age)s::float8 IS NULL THEN now() + interval '1 hour' ELSE now() END,
       now() - %(age)s::float8 * interval '1 minute'
FROM generate_series(1, %(count)s)
RETURNING id
"""


def insert(
    conn: psycopg.Connection[Any], count: int, age: float | None, status: str, priority: int = 3
) -> list[int]:
    params = {"priority": priority, "status": status, "age": age, "count": count}
    return [row[0] for row in conn.execute(_INSERT, params).fetchall()]


def fill(servers: Servers) -> dict[str, Any]:
    """Priority 3: the delayed tasks, a batch an hour old two of which were lost (the rest ran),
    the popping point's batch (ten ran, the next two were lost, the rest queued), then a deep
    queue. Priority 5: one lost id and an empty list."""
    with psycopg.connect(servers.database_url, autocommit=True) as conn:
        insert(conn, DELAYED, None, "pending")
        insert(conn, 100, 60, "completed")  # ran: not pending, never a candidate
        early_lost = insert(conn, 2, 60, "pending")
        with conn.transaction():  # one statement time: the whole batch shares its enqueued_at
            front_batch = [
                *insert(conn, 10, 30, "completed"),
                *insert(conn, 2, 30, "pending"),
                *insert(conn, BATCH - 12, 30, "pending"),
            ]
        deep = insert(conn, QUEUED, 10, "pending")
        lost_5 = insert(conn, 1, 20, "pending", priority=5)
        conn.execute("VACUUM ANALYZE tasks")
    return {
        "lost_3": [*early_lost, *front_batch[10:12]],
        "queued_3": [*front_batch[12:], *deep],
        "lost_5": lost_5,
    }


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """`plan` and every node under it."""
    return [plan, *(node for child in plan.get("Plans", ()) for node in nodes(child))]


def positional(statement: str) -> tuple[str, list[str]]:
    """`statement` with its %(name)s placeholders as $1, $2... (first use order), for PREPARE."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    return re.sub(r"%\((\w+)\)s", number, statement), names


@pytest.fixture
def filled(clean: Servers) -> dict[str, Any]:
    return fill(clean)


def test_the_check_pushes_exactly_the_lost_ids_once_two_sweeps_found_them(
    clean: Servers, filled: dict[str, Any]
) -> None:
    async def sweep() -> tuple[list[int], list[int], dict[int, list[int]], list[int]]:
        redis = broker.connect(clean.redis_url)
        queue = broker.Broker(redis)
        connection = Connection(urls.conninfo(clean.database_url))
        check = LostDispatches(LostQueries(connection, "default"), queue, grace=GRACE, limit=100)
        try:
            await queue.push_many((i, 3) for i in filled["queued_3"])
            # A worker pops five ids; its claim commits only after the first sweep has read:
            # in that moment they are pending and in no list, as the lost ones are.
            _, in_flight = await queue.pop_many(5, 1)
            assert in_flight == filled["queued_3"][:5]
            pushed = [await check.redispatch()]
            claim = "UPDATE tasks SET status = 'running' WHERE id = ANY(%(ids)s) RETURNING id"
            await connection.fetch(claim, {"ids": in_flight})
            pushed.append(await check.redispatch())  # lost twice over: pushed
            pushed.append(await check.redispatch())  # now that they are queued: nothing
            heads = await queue.heads(5)
            queued_3 = (await queue.heads(100_000))[3]
        finally:
            await redis.aclose()
            await connection.close()
        return pushed, in_flight, heads, queued_3

    pushed, in_flight, heads, queued_3 = asyncio.run(sweep())
    assert pushed == [0, len(filled["lost_3"]) + len(filled["lost_5"]), 0]
    # Put back at the popping end, oldest first, ahead of the ids that were queued; the ids in
    # the worker's hands never pushed again.
    assert heads[3] == [*filled["lost_3"], *filled["queued_3"][5:6]]
    assert heads[5] == filled["lost_5"]
    assert not set(in_flight) & set(queued_3)


def test_a_long_repair_pushes_the_limit_every_sweep_after_the_first(clean: Servers) -> None:
    # Redis emptied with more lost ids than one sweep pushes: after the sweep that first suspects
    # them, each sweep pushes `limit` of them (the workers here claim each push at once).
    with psycopg.connect(clean.database_url, autocommit=True) as conn:
        lost = [insert(conn, 1, 50 - minute, "pending")[0] for minute in range(5)]

    async def sweeps() -> list[list[int]]:
        redis = broker.connect(clean.redis_url)
        queue = broker.Broker(redis)
        connection = Connection(urls.conninfo(clean.database_url))
        check = LostDispatches(LostQueries(connection, "default"), queue, grace=GRACE, limit=2)
        claim = "UPDATE tasks SET status = 'running' WHERE id = ANY(%(ids)s) RETURNING id"
        pushed: list[list[int]] = []
        try:
            for _ in range(4):
                await check.redispatch()
                _, ids = await queue.pop_many(100, 0.1)
                if ids:
                    await connection.fetch(claim, {"ids": ids})
                pushed.append(ids)
        finally:
            await redis.aclose()
            await connection.close()
        return pushed

    assert asyncio.run(sweeps()) == [[], lost[:2], lost[2:4], lost[4:]]


def test_a_sweep_that_cannot_look_keeps_the_suspects(clean: Servers) -> None:
    # A stale id (its task already ran) alone at the popping end: that sweep cannot read the
    # popping point, so it neither pushes nor forgets; the next one that can look confirms.
    with psycopg.connect(clean.database_url, autocommit=True) as conn:
        lost = insert(conn, 3, 50, "pending")
        [stale] = insert(conn, 1, 50, "completed")

    async def sweeps() -> list[int]:
        redis = broker.connect(clean.redis_url)
        queue = broker.Broker(redis)
        connection = Connection(urls.conninfo(clean.database_url))
        check = LostDispatches(LostQueries(connection, "default"), queue, grace=GRACE, limit=100)
        try:
            pushed = [await check.redispatch()]
            await queue.push_many([(stale, 3)])
            pushed.append(await check.redispatch())
            assert (await queue.pop_many(1, 0.1))[1] == [stale]
            pushed.append(await check.redispatch())
            assert (await queue.heads(10))[3] == lost
        finally:
            await redis.aclose()
            await connection.close()
        return pushed

    assert asyncio.run(sweeps()) == [0, 0, len(lost)]


def explained(conn: psycopg.Connection[Any], arguments: sql.Composable) -> dict[str, Any]:
    """The executed plan of the prepared `behind`, run once before so that what it reads is the
    statement's own pages (a backend's first run also reads the catalog)."""
    conn.execute(sql.SQL("EXECUTE behind({})").format(arguments)).fetchall()
    explain = sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE behind({})")
    ((result,),) = conn.execute(explain.format(arguments)).fetchall()
    plan: dict[str, Any] = result[0]["Plan"]
    return plan


def reads(plan: dict[str, Any]) -> tuple[list[str], int, int]:
    """What `plan` read of table `tasks`: the indexes, the rows and the pages (its own nodes'
    pages: a parallel plan's workers also use some of their own)."""
    every = nodes(plan)
    assert not [n for n in every if n["Node Type"] == "Seq Scan"], plan
    scans = [n for n in every if n.get("Relation Name") == "tasks"]
    assert scans, plan
    rows = sum(round(n["Actual Rows"] * n["Actual Loops"]) for n in scans)
    pages = sum(n["Shared Hit Blocks"] + n["Shared Read Blocks"] for n in scans)
    return [n["Index Name"] for n in every if "Index Name" in n], rows, pages


@pytest.mark.parametrize("plan_mode", ["force_custom_plan", "force_generic_plan"])
def test_the_check_reads_the_lost_ids_whatever_the_backlog(
    clean: Servers, filled: dict[str, Any], plan_mode: str
) -> None:
    front_id = filled["queued_3"][0]
    with psycopg.connect(clean.database_url, autocommit=True) as conn:
        row = conn.execute("SELECT enqueued_at FROM tasks WHERE id = %s", [front_id]).fetchone()
        assert row is not None
        params = {
            "queue": "default",
            "priority": 3,
            "front_at": row[0],
            "grace": GRACE,
            "front_id": front_id,
            "limit": 10_000,
        }
        statement, names = positional(_BEHIND)
        conn.execute(sql.SQL("PREPARE behind AS {}").format(sql.SQL(statement)))
        conn.execute(sql.SQL("SET plan_cache_mode = {}").format(sql.Identifier(plan_mode)))
        arguments = sql.SQL(", ").join(sql.Literal(params[name]) for name in names)
        execute = sql.SQL("EXECUTE behind({})").format(arguments)
        assert [r[0] for r in conn.execute(execute).fetchall()] == filled["lost_3"]
        indexes, rows, before = reads(explained(conn, arguments))
        # Twice the backlog, both kinds: more tasks waiting for their run_at, a deeper queue.
        insert(conn, DELAYED, None, "pending")
        insert(conn, QUEUED, 10, "pending")
        conn.execute("VACUUM ANALYZE tasks")
        assert [r[0] for r in conn.execute(execute).fetchall()] == filled["lost_3"]
        later = reads(explained(conn, arguments))
    # Both ranges on the index (read alone or as a bitmap), and the rows read are the lost ones.
    assert indexes == later[0] == ["ix_tasks_dispatched"] * 2
    assert rows == later[1] == len(filled["lost_3"])
    # The pages read do not grow with the backlog (a btree level deeper at most, per range).
    assert later[2] <= before + 2, (before, later)
