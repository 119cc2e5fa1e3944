"""The worker: pops ids by priority, claims them in PostgreSQL, runs them, records the outcome."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, OperationalError

from taskq_core import broker as broker_module
from taskq_core import db
from taskq_core.broker import Broker
from taskq_core.plugins import Registry, TaskType
from taskq_core.storage import ClaimedTask, Storage
from taskq_core.task import Task, TaskContext

log = logging.getLogger("taskq.worker")

POP_TIMEOUT = 1.0  # seconds; also the longest a stop request waits for the pop loop
BACKOFF_START, BACKOFF_MAX = 0.2, 5.0  # seconds, while PostgreSQL or Redis is unreachable
OUTAGE_ERRORS = (RedisError, OSError, OperationalError, DBAPIError)


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def describe_error(exc: BaseException) -> dict[str, str]:
    """The JSON stored in `tasks.error`: type, message and traceback."""
    return {
        "type": type(exc).__qualname__,
        "message": str(exc) or type(exc).__qualname__,
        "traceback": "".join(traceback.format_exception(exc)),
    }


def to_output(task_type: TaskType, value: Any) -> dict[str, Any]:
    """Validate what `run` returned against the task type's Output and make it JSON."""
    output_model = task_type.cls.Output
    if isinstance(value, BaseModel) and not isinstance(value, output_model):
        value = value.model_dump()
    return output_model.model_validate(value).model_dump(mode="json")


class Worker:
    """One worker process: up to `concurrency` tasks at once, async ones in the event loop and
    sync ones in a thread pool so they never block it."""

    def __init__(
        self,
        *,
        database_url: str,
        redis_url: str,
        registry: Registry,
        concurrency: int = 10,
        queue: str = "default",
        worker_id: str | None = None,
    ) -> None:
        self.database_url = database_url
        self.redis_url = redis_url
        self.registry = registry
        self.concurrency = concurrency
        self.queue = queue
        self.worker_id = worker_id or new_worker_id()
        self._instances: dict[str, Task] = {}
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Take nothing new; tasks already running finish."""
        self._stopping.set()

    async def run(self) -> None:
        engine = db.async_engine(self.database_url, pool_size=self.concurrency + 2)
        redis = broker_module.connect(self.redis_url)
        storage = Storage(engine, self.queue)
        broker = Broker(redis, self.queue)
        executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="taskq-task")
        slots = asyncio.Semaphore(self.concurrency)
        running: set[asyncio.Task[None]] = set()
        log.info(
            "worker %s started: concurrency %d, task types: %s",
            self.worker_id,
            self.concurrency,
            self.registry.known_names(),
        )
        backoff = BACKOFF_START
        try:
            while not self._stopping.is_set():
                await slots.acquire()
                try:
                    task_id = await broker.pop(POP_TIMEOUT)
                except OUTAGE_ERRORS as exc:
                    slots.release()
                    log.warning("Redis unavailable (%s); retrying in %.1fs", exc, backoff)
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    continue
                backoff = BACKOFF_START
                if task_id is None:
                    slots.release()
                    continue
                job = asyncio.create_task(self._handle(storage, executor, task_id))
                running.add(job)
                job.add_done_callback(running.discard)
                job.add_done_callback(lambda _: slots.release())
            if running:
                log.info("worker %s stopping: waiting for %d task(s)", self.worker_id, len(running))
                await asyncio.gather(*running, return_exceptions=True)
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            await redis.aclose()
            await engine.dispose()
            log.info("worker %s stopped", self.worker_id)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _retry(self, what: str, call: Any) -> Any:
        """Run `call()` until it gets through: an outcome must not be dropped in an outage."""
        backoff = BACKOFF_START
        while True:
            try:
                return await call()
            except OUTAGE_ERRORS as exc:
                log.warning("%s failed (%s); retrying in %.1fs", what, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    async def _handle(self, storage: Storage, executor: ThreadPoolExecutor, task_id: int) -> None:
        claimed: ClaimedTask | None = await self._retry(
            f"claiming task {task_id}", lambda: storage.claim(task_id, self.worker_id)
        )
        if claimed is None:
            log.debug("task %d is not pending any more; skipped", task_id)
            return
        started = time.perf_counter()
        result, error = await self._execute(claimed, executor)
        elapsed_ms = (time.perf_counter() - started) * 1000
        recorded = await self._retry(
            f"recording task {task_id}",
            lambda: storage.finish(claimed, self.worker_id, result=result, error=error),
        )
        outcome = "failed" if error else "completed"
        detail = f": {error['type']}: {error['message']}" if error else ""
        if not recorded:
            detail += " (not recorded: the task was taken over)"
        log.info(
            "task %d %s %s in %.1f ms (attempt %d/%d)%s",
            claimed.id,
            claimed.task_type,
            outcome,
            elapsed_ms,
            claimed.attempt,
            claimed.max_attempts,
            detail,
        )

    async def _execute(
        self, claimed: ClaimedTask, executor: ThreadPoolExecutor
    ) -> tuple[dict[str, Any] | None, dict[str, str] | None]:
        task_type = self.registry.types.get(claimed.task_type)
        if task_type is None:
            message = (
                f"this worker has no plugin providing task type {claimed.task_type!r} "
                f"(it knows: {self.registry.known_names()}); install the plugin on every worker"
            )
            return None, {"type": "UnknownTaskTypeError", "message": message, "traceback": ""}
        ctx = TaskContext(
            task_id=claimed.id,
            task_type=claimed.task_type,
            attempt=claimed.attempt,
            max_attempts=claimed.max_attempts,
            priority=claimed.priority,
            worker_id=self.worker_id,
        )
        try:
            data = task_type.input_model.model_validate(claimed.input_data)
            instance = self._instance(task_type)
            if task_type.is_async:
                value = await instance.run(data, ctx)  # type: ignore[misc]
            else:
                value = await asyncio.get_running_loop().run_in_executor(
                    executor, instance.run, data, ctx
                )
            return to_output(task_type, value), None
        except Exception as exc:
            return None, describe_error(exc)

    def _instance(self, task_type: TaskType) -> Task:
        """One instance per task type, made on first use, so a plugin may keep clients."""
        instance = self._instances.get(task_type.name)
        if instance is None:
            instance = self._instances[task_type.name] = task_type.cls()
        return instance
