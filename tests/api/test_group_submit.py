"""The group submitter on real PostgreSQL and Redis: a row PostgreSQL refuses fails its own
request only; the others of its group are written one by one and answered."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sqlalchemy.exc import DataError, OperationalError
from starlette.requests import Request

from taskq_core import broker
from taskq_core.api import errors
from taskq_core.db import engines
from taskq_core.db.storage import Storage
from taskq_core.enqueue import GroupSubmitter
from taskq_core.records import NewTask
from tests.conftest import Servers

GOOD = NewTask(task_type="FailTask", input_data={"message": "fine"}, priority=3, max_attempts=1)
# Past validation (which refuses it now): what reached the INSERT before, and what jsonb refuses.
BAD = NewTask(task_type="FailTask", input_data={"message": "a\x00b"}, priority=3, max_attempts=1)


async def _submit_all(servers: Servers, new: list[NewTask]) -> list[Any]:
    engine = engines.async_engine(servers.database_url, pool_size=2)
    redis = broker.connect(servers.redis_url)
    submitter = GroupSubmitter(Storage(engine), broker.Broker(redis))
    try:
        # Queued before the writer first runs: they share one group.
        return await asyncio.gather(*(submitter.submit(t) for t in new), return_exceptions=True)
    finally:
        await submitter.close()
        await redis.aclose()
        await engine.dispose()


def test_one_refused_row_fails_only_its_own_request(clean: Servers) -> None:
    new = [GOOD] * 10 + [BAD] + [GOOD] * 10
    answers = asyncio.run(_submit_all(clean, new))
    assert isinstance(answers[10], DataError)
    good = answers[:10] + answers[11:]
    assert all(isinstance(a, dict) and a["status"] == "pending" for a in good), answers
    ids = [a["id"] for a in good]
    assert sorted(ids) == ids  # written in the order they came
    assert clean.sql("SELECT count(*) FROM tasks") == [(20,)]
    with clean.redis() as client:
        assert client.llen("taskq:{default}:3") == 20
    # Were it to reach a client, the refusal is the request's fault (422), not an outage (503).
    handler = errors.handler_for(answers[10])
    assert handler is not None
    response = asyncio.run(handler(Request({"type": "http", "headers": []}), answers[10]))
    assert response.status_code == 422
    assert json.loads(response.body)["detail"][0]["type"] == "data_error"


def test_an_outage_still_fails_the_whole_group_at_once(
    clean: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    # Not retried row by row: a PostgreSQL that is down would only be asked 5 more times.
    unreachable = Servers("postgresql://postgres@127.0.0.1:1/taskq", clean.redis_url)
    answers = asyncio.run(_submit_all(unreachable, [GOOD] * 5))
    assert all(isinstance(a, OperationalError) for a in answers)
    assert "one by one" not in caplog.text
    assert clean.sql("SELECT count(*) FROM tasks") == [(0,)]


def test_the_submitter_writes_on_its_own_connection_while_the_pool_is_busy(
    clean: Servers,
) -> None:
    # Every pooled connection held (slow listings, say): submits still go through at once.
    async def run() -> list[dict[str, Any]]:
        engine = engines.async_engine(clean.database_url, pool_size=1)  # and 1 overflow
        redis = broker.connect(clean.redis_url)
        submitter = GroupSubmitter(Storage(engine), broker.Broker(redis))
        try:
            rows = [await submitter.submit(GOOD)]
            async with engine.connect(), engine.connect():
                rows.append(await submitter.submit(GOOD))
            return rows
        finally:
            await submitter.close()
            await redis.aclose()
            await engine.dispose()

    rows = asyncio.run(run())
    assert [row["status"] for row in rows] == ["pending", "pending"]
    assert clean.sql("SELECT count(*) FROM tasks") == [(2,)]


def test_the_submitter_connects_again_after_its_connection_broke(clean: Servers) -> None:
    async def run() -> list[Any]:
        engine = engines.async_engine(clean.database_url, pool_size=1)
        redis = broker.connect(clean.redis_url)
        submitter = GroupSubmitter(Storage(engine), broker.Broker(redis))
        try:
            answers: list[Any] = [await submitter.submit(GOOD)]
            # What a restarted or failed-over PostgreSQL does to an idle connection; only this
            # writer's, so the session's API process (sharing the database) keeps its own.
            writer = submitter._inserts._conn
            assert writer is not None
            clean.sql("SELECT pg_terminate_backend(%s)", (writer.info.backend_pid,))
            for _ in range(2):
                try:
                    answers.append(await submitter.submit(GOOD))
                except Exception as exc:
                    answers.append(exc)
            return answers
        finally:
            await submitter.close()
            await redis.aclose()
            await engine.dispose()

    first, broken, again = asyncio.run(run())
    assert first["status"] == "pending"
    assert isinstance(broken, OperationalError)  # a 503: nothing was written
    assert again["status"] == "pending"
    assert clean.sql("SELECT count(*) FROM tasks") == [(2,)]


@pytest.mark.parametrize("value", ["a\x00b", float("nan"), float("inf")])
def test_the_api_refuses_what_jsonb_cannot_hold_before_any_insert(value: object) -> None:
    from taskq_core.enqueue import prepare
    from taskq_core.errors import InvalidTaskError
    from taskq_core.plugins import load_registry

    registry = load_registry()
    with pytest.raises(InvalidTaskError) as info:
        prepare(registry, "EmailTask", {"to": ["a@example.com"], "subject": "s", "body": value})
    assert info.value.errors[0]["loc"] == ("input_data", "body")
