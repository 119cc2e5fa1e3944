"""`AsyncTaskQClient`: the asyncio client, the same calls as `TaskQClient` awaited."""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from typing import Any

import httpx

from taskq_client import _core
from taskq_client.errors import WaitTimeoutError
from taskq_client.models import Task, TaskListItem, TaskRequest, TaskSummary, TaskType


class AsyncTaskQClient:
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
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = _core.Config.build(base_url, api_key, timeout, retries, backoff, max_backoff)
        self._http = httpx.AsyncClient(
            base_url=self.config.base_url,
            headers=self.config.headers(),
            timeout=timeout,
            transport=transport,
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncTaskQClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _send(self, call: _core.Call) -> Any:
        attempt = 0
        while True:
            response: httpx.Response | None = None
            error: Exception | None = None
            try:
                response = await self._http.request(
                    call.method,
                    call.path,
                    params=call.params or None,
                    json=call.json,
                    headers=call.headers,
                    timeout=call.timeout or self.config.timeout,
                )
            except httpx.TransportError as exc:
                error = exc
            if attempt < self.config.retries and _core.retryable(call, error, response):
                await asyncio.sleep(_core.delay(self.config, attempt, response))
                attempt += 1
                continue
            if error is not None:
                raise _core.unreachable(self.config, call, error) from error
            assert response is not None
            _core.raise_for(response)
            return response.json()

    async def submit(
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
        call = _core.submit_call(
            task_type,
            input,
            priority=priority,
            idempotency_key=idempotency_key,
            max_attempts=max_attempts,
            timeout_seconds=timeout_seconds,
            run_at=run_at,
            delay_seconds=delay_seconds,
        )
        return TaskSummary.model_validate(await self._send(call))

    async def submit_many(self, tasks: Iterable[TaskRequest | dict[str, Any]]) -> list[TaskSummary]:
        """Create up to 1,000 tasks, all or none. The batch route takes no Idempotency-Key, so
        it is sent again only when it surely was not done (never sent, or a 503/429)."""
        body = [
            TaskRequest.model_validate(t).model_dump(mode="json", exclude_none=True) for t in tasks
        ]
        answer = await self._send(
            _core.Call("POST", "/tasks/batch", json={"tasks": body}, safe=False)
        )
        return [TaskSummary.model_validate(t) for t in answer["tasks"]]

    async def get(self, task_id: int) -> Task:
        return Task.model_validate(await self._send(_core.Call("GET", f"/tasks/{task_id}")))

    async def follow(self, task_id: int) -> AsyncIterator[Task]:
        """The task now, then again each time its status or its progress changes, until it
        has finished (`GET /tasks/{id}/events`). Not retried: follow again to resume."""
        timeout = httpx.Timeout(self.config.timeout, read=_core.FOLLOW_READ_TIMEOUT)
        path = f"/tasks/{task_id}/events"
        try:
            async with self._http.stream("GET", path, timeout=timeout) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _core.raise_for(response)
                events = _core.SseData()
                async for line in response.aiter_lines():
                    data = events.feed(line)
                    if data is not None:
                        yield Task.model_validate_json(data)
        except httpx.TransportError as exc:
            raise _core.unreachable(self.config, _core.Call("GET", path), exc) from exc

    async def wait(self, task_id: int, timeout: float | None = None) -> Task:  # noqa: ASYNC109
        """The task once it has finished (completed, failed or cancelled); the API holds each
        request until then or 60 s. Raises WaitTimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _core.MAX_SERVER_WAIT if deadline is None else deadline - time.monotonic()
            wait = max(0.0, min(_core.MAX_SERVER_WAIT, left))
            call = _core.Call(
                "GET",
                f"/tasks/{task_id}",
                params={"wait": round(wait, 3)},
                timeout=wait + self.config.timeout,
            )
            task = Task.model_validate(await self._send(call))
            if task.finished:
                return task
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeoutError(
                    f"task {task_id} still {task.status} after {timeout:g}s", task
                )

    async def list(
        self,
        *,
        status: str | None = None,
        task_type: str | None = None,
        priority: int | None = None,
        limit: int | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[TaskListItem]:
        """Tasks newest first, fetched a page at a time as the iteration goes; at most `limit`."""
        params: dict[str, Any] = {"status": status, "task_type": task_type, "priority": priority}
        params = {name: value for name, value in params.items() if value is not None}
        seen = 0
        cursor: str | None = None
        while True:
            size = page_size if limit is None else min(page_size, limit - seen)
            if size <= 0:
                return
            page_params = {**params, "limit": size, **({"cursor": cursor} if cursor else {})}
            page = await self._send(_core.Call("GET", "/tasks/", params=page_params))
            for item in page["tasks"]:
                seen += 1
                yield TaskListItem.model_validate(item)
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def cancel(self, task_id: int) -> Task:
        """Cancel a pending task, or ask its worker to stop a running one (it ends cancelled)."""
        call = _core.Call("POST", f"/tasks/{task_id}/cancel", safe=False)
        return Task.model_validate(await self._send(call))

    async def retry(self, task_id: int) -> Task:
        """Run a failed or cancelled task again (ConflictError for any other)."""
        call = _core.Call("POST", f"/tasks/{task_id}/retry", safe=False)
        return Task.model_validate(await self._send(call))

    async def task_types(self) -> builtins.list[TaskType]:
        answer = await self._send(_core.Call("GET", "/task-types"))
        return [TaskType.model_validate(t) for t in answer["task_types"]]
