"""What each client method asks the API and makes of its answers, written once for both clients.
A method is a plan: a generator that yields the calls it needs (`_core.Call`), is sent each
one's JSON answer and returns the method's result; the clients only send the calls, stepping
the plan with `advance` (`TaskQClient._run`, `AsyncTaskQClient._run`). `list` and `follow` hand
out items as they come, so they are objects the clients drive instead. No I/O here."""

from __future__ import annotations

import time
import uuid
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeAlias, TypeVar, cast

import httpx

from taskq_client import _core
from taskq_client.errors import UnavailableError, WaitTimeoutError
from taskq_client.models import Task, TaskListItem, TaskRequest, TaskSummary, TaskType

T = TypeVar("T")
Plan: TypeAlias = Generator[_core.Call, Any, T]


@dataclass(frozen=True)
class Done(Generic[T]):
    """What a plan returned."""

    value: T


def advance(plan: Plan[T], answer: Any) -> _core.Call | Done[T]:
    """Hand `plan` the answer to its last call (None to start it): its next call, or its result."""
    try:
        return plan.send(answer)
    except StopIteration as done:
        return Done(cast(T, done.value))


FOLLOW_READ_TIMEOUT = 60.0  # seconds of silence before a follow gives up (the API sends a
# comment every 15 s on a quiet stream)


def submit(
    task_type: str,
    input: dict[str, Any] | None,
    *,
    priority: int | None,
    idempotency_key: str | None,
    max_attempts: int | None,
    timeout_seconds: float | None,
    run_at: datetime | None,
    delay_seconds: float | None,
) -> Plan[TaskSummary]:
    body: dict[str, Any] = {"task_type": task_type, "input_data": input or {}}
    options = {
        "priority": priority,
        "max_attempts": max_attempts,
        "timeout_seconds": timeout_seconds,
        "run_at": run_at.isoformat() if run_at is not None else None,
        "delay_seconds": delay_seconds,
    }
    body.update({name: value for name, value in options.items() if value is not None})
    # One key per submit, generated unless given, and the same on every retry of it: the API
    # answers a repeat with the task the first one created, so a retry never makes a twin.
    key = idempotency_key or str(uuid.uuid4())
    answer = yield _core.Call("POST", "/tasks/", json=body, headers={"Idempotency-Key": key})
    return TaskSummary.model_validate(answer)


def submit_many(tasks: Iterable[TaskRequest | dict[str, Any]]) -> Plan[list[TaskSummary]]:
    body = [TaskRequest.model_validate(t).model_dump(mode="json", exclude_none=True) for t in tasks]
    # The batch route takes no Idempotency-Key: not safe to send again once it may have arrived.
    answer = yield _core.Call("POST", "/tasks/batch", json={"tasks": body}, safe=False)
    return [TaskSummary.model_validate(t) for t in answer["tasks"]]


def get(task_id: int) -> Plan[Task]:
    return Task.model_validate((yield _core.Call("GET", f"/tasks/{task_id}")))


def cancel(task_id: int) -> Plan[Task]:
    return Task.model_validate((yield _core.Call("POST", f"/tasks/{task_id}/cancel", safe=False)))


def retry(task_id: int) -> Plan[Task]:
    return Task.model_validate((yield _core.Call("POST", f"/tasks/{task_id}/retry", safe=False)))


def task_types() -> Plan[list[TaskType]]:
    answer = yield _core.Call("GET", "/task-types")
    return [TaskType.model_validate(t) for t in answer["task_types"]]


def wait(config: _core.Config, task_id: int, timeout: float | None) -> Plan[Task]:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = _core.MAX_SERVER_WAIT if deadline is None else deadline - time.monotonic()
        wait = max(0.0, min(_core.MAX_SERVER_WAIT, left))
        call = _core.Call(
            "GET",
            f"/tasks/{task_id}",
            params={"wait": round(wait, 3)},
            timeout=wait + config.timeout,
        )
        task = Task.model_validate((yield call))
        if task.finished:
            return task
        if deadline is not None and time.monotonic() >= deadline:
            raise WaitTimeoutError(f"task {task_id} still {task.status} after {timeout:g}s", task)


class Pages:
    """`GET /tasks/` a page at a time, newest first: `next_call` until it gives None, each
    answer to `read`."""

    def __init__(
        self,
        *,
        status: str | None,
        task_type: str | None,
        priority: int | None,
        limit: int | None,
        page_size: int,
    ) -> None:
        filters = {"status": status, "task_type": task_type, "priority": priority}
        self._filters = {name: value for name, value in filters.items() if value is not None}
        self._limit = limit
        self._page_size = page_size
        self._seen = 0
        self._cursor: str | None = None
        self._last = False

    def next_call(self) -> _core.Call | None:
        size = (
            self._page_size
            if self._limit is None
            else min(self._page_size, self._limit - self._seen)
        )
        if self._last or size <= 0:
            return None
        params = {
            **self._filters,
            "limit": size,
            **({"cursor": self._cursor} if self._cursor else {}),
        }
        return _core.Call("GET", "/tasks/", params=params)

    def read(self, page: Any) -> list[TaskListItem]:
        items = [TaskListItem.model_validate(item) for item in page["tasks"]]
        self._seen += len(items)
        self._cursor = page.get("next_cursor")
        self._last = not self._cursor
        return items


class Follow:
    """`GET /tasks/{id}/events`, streamed: where and how long to read, and the task each
    server-sent event carries."""

    def __init__(self, config: _core.Config, task_id: int) -> None:
        self.path = f"/tasks/{task_id}/events"
        self.timeout = httpx.Timeout(config.timeout, read=FOLLOW_READ_TIMEOUT)
        self._config = config
        self._data: list[str] = []

    def read(self, line: str) -> Task | None:
        """The task an event carries, once the blank line ending it comes (comments, `event:`
        and `id:` lines are not needed here)."""
        if line.startswith("data:"):
            self._data.append(line[5:].removeprefix(" "))
        elif not line and self._data:
            data, self._data = "\n".join(self._data), []
            return Task.model_validate_json(data)
        return None

    def unreachable(self, error: Exception) -> UnavailableError:
        return _core.unreachable(self._config, _core.Call("GET", self.path), error)
