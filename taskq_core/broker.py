"""Redis as the broker: five lists per queue carry task ids, highest priority popped first."""

from __future__ import annotations

from collections.abc import Iterable

import redis.asyncio as aioredis

PRIORITIES = (5, 4, 3, 2, 1)  # pop order: highest first


def queue_key(queue: str, priority: int) -> str:
    """The list holding ids of `priority`; the {hash tag} keeps all five in one Redis Cluster slot,
    so a single BRPOP can cover them."""
    return f"taskq:{{{queue}}}:{priority}"


def connect(url: str) -> aioredis.Redis:
    """An asyncio Redis client with its own connection pool."""
    return aioredis.Redis.from_url(
        url, decode_responses=True, socket_connect_timeout=5, health_check_interval=30
    )


class Broker:
    """Push and pop task ids; Redis only carries ids, PostgreSQL decides what runs."""

    def __init__(self, redis: aioredis.Redis, queue: str = "default") -> None:
        self.redis = redis
        self.queue = queue
        self.keys = [queue_key(queue, p) for p in PRIORITIES]

    async def push(self, task_id: int, priority: int) -> None:
        await self.redis.lpush(queue_key(self.queue, priority), task_id)

    async def push_many(self, items: Iterable[tuple[int, int]]) -> None:
        """Push (task_id, priority) pairs in one round trip, keeping their order per priority."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_id, priority in items:
                pipe.lpush(queue_key(self.queue, priority), task_id)
            await pipe.execute()

    async def pop(self, wait: float) -> int | None:
        """Block up to `wait` seconds for the next id, strictly by priority then FIFO."""
        item = await self.redis.brpop(self.keys, timeout=wait)
        if item is None:
            return None
        return int(item[1])

    async def ping(self) -> None:
        await self.redis.ping()

    async def depths(self) -> dict[int, int]:
        """How many ids wait at each priority."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self.keys:
                pipe.llen(key)
            counts = await pipe.execute()
        return dict(zip(PRIORITIES, counts, strict=True))
