"""taskq_client against the real API: typed answers, typed errors, retries that never duplicate."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from taskq_client import (
    AsyncTaskQClient,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    TaskQClient,
    UnavailableError,
    WaitTimeoutError,
)

from tests.client.proxy import Proxy
from tests.conftest import Api, Servers, Workers, free_port
from tests.worker.test_reliability import FAST


def upstream(api: Api) -> tuple[str, int]:
    parts = urlsplit(api.url)
    return parts.hostname or "127.0.0.1", parts.port or 80


@pytest.fixture
def proxy(api: Api) -> Iterator[Proxy]:
    proxy = Proxy(upstream(api))
    yield proxy
    proxy.close()


def test_submit_then_wait_gives_the_typed_result(api: Api, workers: Workers) -> None:
    workers.start(**FAST)
    with TaskQClient(api.url) as taskq:
        task = taskq.submit("FibonacciTask", {"n": 10}, priority=4)
        assert (task.task_type, task.status, task.priority) == ("FibonacciTask", "pending", 4)
        done = taskq.wait(task.id, timeout=30)
        assert done.status == "completed"
        assert done.result == {"result": 55}
        assert [a.outcome for a in done.history] == ["completed"]
        assert taskq.get(task.id).finished


def test_invalid_input_carries_the_field_errors(api: Api, clean: Servers) -> None:
    with TaskQClient(api.url) as taskq:
        with pytest.raises(InvalidInputError) as caught:
            taskq.submit("FibonacciTask", {"n": -1})
        assert caught.value.status_code == 422
        assert caught.value.errors[0]["loc"] == ["body", "input_data", "n"]
        assert "input_data.n" in str(caught.value)
        with pytest.raises(InvalidInputError, match="FibonacciTask"):
            taskq.submit("NoSuchTask", {})  # names the known types
        with pytest.raises(InvalidInputError):
            taskq.submit("FibonacciTask", {"n": 1}, priority=9)
    assert clean.sql("SELECT count(*) FROM tasks") == [(0,)]


def test_not_found_conflict_cancel_and_retry(api: Api, clean: Servers) -> None:
    with TaskQClient(api.url) as taskq:
        with pytest.raises(NotFoundError):
            taskq.get(999_999)
        with pytest.raises(NotFoundError):
            list(taskq.follow(999_999))
        task = taskq.submit("FibonacciTask", {"n": 3})
        with pytest.raises(ConflictError, match="pending"):
            taskq.retry(task.id)
        assert taskq.cancel(task.id).status == "cancelled"
        with pytest.raises(ConflictError, match="already finished"):
            taskq.cancel(task.id)
        assert taskq.retry(task.id).status == "pending"


def test_wait_gives_up_after_its_timeout(api: Api, clean: Servers) -> None:
    with TaskQClient(api.url) as taskq:
        task = taskq.submit("FibonacciTask", {"n": 3})  # no worker: it stays pending
        with pytest.raises(WaitTimeoutError) as caught:
            taskq.wait(task.id, timeout=0.3)
        assert caught.value.task.status == "pending"


def test_list_iterates_every_page_with_filters(api: Api, clean: Servers) -> None:
    with TaskQClient(api.url) as taskq:
        ids = [taskq.submit("FibonacciTask", {"n": n}).id for n in range(5)]
        other = taskq.submit("FailTask", {}).id
        listed = [t.id for t in taskq.list(task_type="FibonacciTask", page_size=2)]
        assert listed == sorted(ids, reverse=True)
        assert [t.id for t in taskq.list(limit=3, page_size=2)] == [other, *ids[::-1][:2]]
        assert [t.id for t in taskq.list(status="completed")] == []


def test_submit_many_and_task_types(api: Api, clean: Servers) -> None:
    with TaskQClient(api.url) as taskq:
        created = taskq.submit_many(
            [{"task_type": "FibonacciTask", "input_data": {"n": n}, "priority": 5} for n in (1, 2)]
        )
        assert [t.priority for t in created] == [5, 5]
        with pytest.raises(InvalidInputError) as caught:
            taskq.submit_many([{"task_type": "FibonacciTask", "input_data": {"n": "x"}}])
        assert caught.value.errors[0]["loc"][:3] == ["body", "tasks", 0]
        types = {t.name: t for t in taskq.task_types()}
        assert "FibonacciTask" in types
        assert types["FibonacciTask"].input_schema["properties"]["n"]["type"] == "integer"


def test_a_submit_whose_answer_was_lost_is_retried_without_a_twin(
    api: Api, clean: Servers, proxy: Proxy
) -> None:
    proxy.drop_responses = 1  # the API commits the task; its answer never reaches the client
    with TaskQClient(proxy.url, backoff=0.01) as taskq:
        task = taskq.submit("FibonacciTask", {"n": 8})
    assert proxy.dropped == 1
    assert len(proxy.requests) == 2
    keys = [
        line
        for r in proxy.requests
        for line in r.lower().split(b"\r\n")
        if line.startswith(b"idempotency-key:")
    ]
    assert len(keys) == 2
    assert keys[0] == keys[1]  # the same key on the retry
    assert clean.sql("SELECT id FROM tasks") == [(task.id,)]


def test_a_503_is_retried_with_back_off_and_the_key_travels(
    api: Api, clean: Servers, proxy: Proxy
) -> None:
    proxy.unavailable = 2
    with TaskQClient(proxy.url, api_key="k-123", backoff=0.01) as taskq:
        task = taskq.submit("FibonacciTask", {"n": 8})
        assert taskq.get(task.id).status == "pending"
    assert len(proxy.requests) == 4
    assert all(
        b"authorization: Bearer k-123" in r.lower().replace(b"bearer", b"Bearer")
        for r in proxy.requests
    )
    assert clean.sql("SELECT count(*) FROM tasks") == [(1,)]


def test_unavailable_after_every_retry(api: Api, clean: Servers, proxy: Proxy) -> None:
    proxy.unavailable = 10
    taskq = TaskQClient(proxy.url, retries=2, backoff=0.01)
    with taskq, pytest.raises(UnavailableError, match="PostgreSQL is unavailable"):
        taskq.submit("FibonacciTask", {"n": 8})
    assert len(proxy.requests) == 3
    nowhere = TaskQClient(f"http://127.0.0.1:{free_port()}", retries=1, backoff=0.01)
    with nowhere, pytest.raises(UnavailableError, match="unreachable"):
        nowhere.get(1)


def test_url_and_key_from_the_environment(
    api: Api, clean: Servers, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKQ_API_URL", proxy.url)
    monkeypatch.setenv("TASKQ_API_KEY", "from-env")
    with TaskQClient() as taskq:
        assert taskq.task_types()
    assert b"authorization: bearer from-env" in proxy.requests[0].lower()


def test_the_async_client_does_the_same(api: Api, workers: Workers, proxy: Proxy) -> None:
    workers.start(**FAST)

    async def scenario() -> None:
        async with AsyncTaskQClient(proxy.url, backoff=0.01) as taskq:
            proxy.drop_responses = 1
            task = await taskq.submit("FibonacciTask", {"n": 12})
            done = await taskq.wait(task.id, timeout=30)
            assert done.result == {"result": 144}
            assert [t.id async for t in taskq.list(page_size=1)] == [task.id]
            with pytest.raises(InvalidInputError):
                await taskq.submit("FibonacciTask", {"n": "x"})
            with pytest.raises(NotFoundError):
                await taskq.cancel(999_999)
            assert {t.name for t in await taskq.task_types()} >= {"FibonacciTask"}
        # The proxy reads whole messages only: a stream goes to the API itself.
        async with AsyncTaskQClient(api.url) as taskq:
            followed = [t async for t in taskq.follow(task.id)]
            assert [(t.status, t.result) for t in followed] == [("completed", {"result": 144})]
            with pytest.raises(NotFoundError):
                [t async for t in taskq.follow(999_999)]

    asyncio.run(scenario())
    assert proxy.dropped == 1
    assert workers.servers.sql("SELECT count(*) FROM tasks") == [(1,)]
