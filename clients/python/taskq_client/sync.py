"""`TaskQClient`: the blocking client."""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, TypeVar

import httpx

from taskq_client import _calls, _core
from taskq_client.models import Task, TaskListItem, TaskRequest, TaskSummary, TaskType

T = TypeVar("T")


class TaskQClient:
    """Talks to a taskq API. `base_url` and `api_key` default to TASKQ_API_URL and TASKQ_API_KEY
    (the key travels as `Authorization: Bearer`); with neither URL, a running `taskq dev`'s API.
    Requests that meet a 503, a 429 or a dropped connection are sent again `retries` times with
    exponential back-off (see `_core.Call`)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 4,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.config = _core.Config.build(base_url, api_key, timeout, retries, backoff, max_backoff)
        self._http = httpx.Client(
            base_url=self.config.base_url,
            headers=self.config.headers(),
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TaskQClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, call: _core.Call) -> Any:
        attempt = 0
        while True:
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = self._http.request(**_core.request_args(self.config, call))
            except httpx.TransportError as exc:
                outcome = exc
            pause = _core.pause(self.config, call, attempt, outcome)
            if pause is None:
                return _core.answer(self.config, call, outcome)
            time.sleep(pause)
            attempt += 1

    def _run(self, plan: _calls.Plan[T]) -> T:
        """Send each call `plan` asks for and hand it the answer; what it returns."""
        step = _calls.advance(plan, None)
        while isinstance(step, _core.Call):
            step = _calls.advance(plan, self._send(step))
        return step.value

    def submit(
        self,
        task_type: str,
        input: dict[str, Any] | None = None,
        *,
        priority: int | None = None,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
        timeout_seconds: float | None = None,
        run_at: datetime | None = None,
        delay_seconds: float | None = None,
    ) -> TaskSummary:
        """Create a task; a retried or repeated submit with the same `idempotency_key` returns
        the task the first created (one is generated per call when none is given)."""
        plan = _calls.submit(
            task_type,
            input,
            priority=priority,
            idempotency_key=idempotency_key,
            max_attempts=max_attempts,
            timeout_seconds=timeout_seconds,
            run_at=run_at,
            delay_seconds=delay_seconds,
        )
        return self._run(plan)

    def submit_many(self, tasks: Iterable[TaskRequest | dict[str, Any]]) -> list[TaskSummary]:
        """Create up to 1,000 tasks, all or none. The batch route takes no Idempotency-Key, so
        it is sent again only when it surely was not done (never sent, or a 503/429)."""
        return self._run(_calls.submit_many(tasks))

    def get(self, task_id: int) -> Task:
        return self._run(_calls.get(task_id))

    def follow(self, task_id: int) -> Iterator[Task]:
        """The task now, then again each time its status or its progress changes, until it
        has finished (`GET /tasks/{id}/events`). Not retried: follow again to resume."""
        follow = _calls.Follow(self.config, task_id)
        try:
            with self._http.stream("GET", follow.path, timeout=follow.timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    _core.raise_for(response)
                for line in response.iter_lines():
                    if (task := follow.read(line)) is not None:
                        yield task
        except httpx.TransportError as exc:
            raise follow.unreachable(exc) from exc

    def wait(self, task_id: int, timeout: float | None = None) -> Task:
        """The task once it has finished (completed, failed or cancelled); the API holds each
        request until then or 60 s. Raises WaitTimeoutError after `timeout` seconds."""
        return self._run(_calls.wait(self.config, task_id, timeout))

    def list(
        self,
        *,
        status: str | None = None,
        task_type: str | None = None,
        priority: int | None = None,
        limit: int | None = None,
        page_size: int = 100,
    ) -> Iterator[TaskListItem]:
        """Tasks newest first, fetched a page at a time as the iteration goes; at most `limit`."""
        pages = _calls.Pages(
            status=status, task_type=task_type, priority=priority, limit=limit, page_size=page_size
        )
        while (call := pages.next_call()) is not None:
            yield from pages.read(self._send(call))

    def cancel(self, task_id: int) -> Task:
        """Cancel a pending task, or ask its worker to stop a running one (it ends cancelled)."""
        return self._run(_calls.cancel(task_id))

    def retry(self, task_id: int) -> Task:
        """Run a failed or cancelled task again (ConflictError for any other)."""
        return self._run(_calls.retry(task_id))

    def task_types(self) -> builtins.list[TaskType]:
        return self._run(_calls.task_types())
