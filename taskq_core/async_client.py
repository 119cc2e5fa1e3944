"""Enqueueing from asyncio code: durable per call, concurrent calls sharing statements."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from taskq_core import broker as broker_module
from taskq_core.broker import Broker
from taskq_core.client import configured
from taskq_core.db import engines
from taskq_core.db.storage import Storage
from taskq_core.enqueue import GroupSubmitter, prepare, submit_idempotent
from taskq_core.plugins import Registry, load_registry
from taskq_core.records import NewTask
from taskq_core.settings import Settings


class AsyncClient:
    """`await client.enqueue(...)` returns a task's id once its row is committed and its id
    pushed (if due now), like `Client.enqueue`; the calls of tasks enqueueing at once are folded
    into one INSERT and one Redis round trip (the API's GroupSubmitter). If the push fails, the
    rows are taken back and the call raises: nothing half-done is left behind.

    Use it within one event loop, and close it there (`async with AsyncClient(...)`)."""

    def __init__(
        self,
        *,
        redis_url: str,
        database_url: str,
        registry: Registry | None = None,
        queue: str = "default",
        pool_size: int = 2,
        prepare: bool = True,
    ) -> None:
        """`prepare`: False behind a PgBouncer in transaction mode (TASKQ_DATABASE_PREPARE)."""
        self.registry = registry if registry is not None else load_registry()
        self.queue = queue
        self._engine = engines.async_engine(database_url, pool_size=pool_size, prepare=prepare)
        self._redis = broker_module.connect(redis_url)
        self._storage = Storage(self._engine, queue)
        self._broker = Broker(self._redis, queue)
        self._submitter = GroupSubmitter(self._storage, self._broker)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> AsyncClient:
        """A client for the configured servers (or those of a running `taskq dev`)."""
        return cls(**configured(settings))

    def prepare(self, task_type: str, input_data: Any, **options: Any) -> NewTask:
        """Validate a request (InvalidTaskError lists every bad field)."""
        return prepare(self.registry, task_type, input_data, **options)

    async def enqueue(self, task_type: str, input_data: Any, **options: Any) -> int:
        """Validate, record and dispatch one task; returns its id (options as Client.enqueue)."""
        new = self.prepare(task_type, input_data, **options)
        if new.idempotency_key is not None:
            row, _ = await submit_idempotent(self._storage, self._broker, new)
        else:
            row = await self._submitter.submit(new)
        task_id: int = row["id"]
        return task_id

    async def aclose(self) -> None:
        await self._submitter.close()
        await self._redis.aclose()
        await self._engine.dispose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
