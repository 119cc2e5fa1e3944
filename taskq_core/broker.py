"""Redis as the broker: five lists per queue carry task ids, highest priority popped first."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable, Sequence

import redis
import redis.asyncio as aioredis

PRIORITIES = (5, 4, 3, 2, 1)  # pop order: highest first


def queue_key(queue: str, priority: int) -> str:
    """The list holding ids of `priority`; the {hash tag} keeps all five in one Redis Cluster slot,
    so a single BRPOP can cover them."""
    return f"taskq:{{{queue}}}:{priority}"


def push_blocking(client: redis.Redis, queue: str, items: Iterable[tuple[int, int]]) -> None:
    """Push (task_id, priority) pairs from blocking code, in one round trip."""
    with client.pipeline(transaction=False) as pipe:
        for task_id, priority in items:
            pipe.lpush(queue_key(queue, priority), task_id)
        pipe.execute()


def rate_key(identity: str, window: int, index: int) -> str:
    """The counter of `identity`'s requests in window number `index` of `window` seconds."""
    return f"taskq:rate:{window}:{index}:{identity}"


def cancel_channel(queue: str) -> str:
    """Pub/sub channel on which cancellation requests reach the workers at once."""
    return f"taskq:{{{queue}}}:cancel"


def status_channel(queue: str) -> str:
    """Pub/sub channel on which every status change of the queue's tasks is announced (after it
    is committed), so the API can wake whoever waits for a task. One channel per queue, each
    message a batch: a group commit of outcomes costs one PUBLISH."""
    return f"taskq:{{{queue}}}:status"


def connect(url: str, *, blocking: bool = False) -> aioredis.Redis:
    """An asyncio Redis client with its own connection pool.

    Short timeouts so an unreachable Redis fails a request quickly (the API answers 503) instead
    of hanging it; `blocking` clients issue BRPOP and wait on their own deadline instead.
    """
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=None if blocking else 5,
        health_check_interval=30,
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
        by_priority: dict[int, list[int]] = {}
        for task_id, priority in items:
            by_priority.setdefault(priority, []).append(task_id)
        if not by_priority:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for priority, ids in by_priority.items():
                pipe.lpush(queue_key(self.queue, priority), *ids)
            await pipe.execute()

    async def push_oldest_first(self, ids: list[int], priority: int) -> None:
        """Put repaired ids at the popping end, oldest last-in so it is popped first: they are
        older than everything queued behind them."""
        await self.redis.rpush(queue_key(self.queue, priority), *reversed(ids))

    async def pop(self, wait: float) -> int | None:
        """Block up to `wait` seconds for the next id, strictly by priority then FIFO."""
        item = await self.redis.brpop(self.keys, timeout=wait)
        if item is None:
            return None
        return int(item[1])

    async def pop_many(self, count: int, wait: float) -> list[int]:
        """Block up to `wait` seconds, then take up to `count` ids, oldest first, all from the
        highest non-empty priority: BLMPOP never mixes lists, so priority stays strict."""
        item = await self.redis.blmpop(
            wait, len(self.keys), *self.keys, direction="RIGHT", count=count
        )
        if item is None:
            return []
        return [int(v) for v in item[1]]

    async def depths(self) -> dict[int, int]:
        """How many ids wait at each priority."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self.keys:
                pipe.llen(key)
            counts = await pipe.execute()
        return dict(zip(PRIORITIES, counts, strict=True))

    async def heads(self, count: int) -> dict[int, list[int]]:
        """Per priority, up to `count` ids at the popping end, the next to pop first."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self.keys:
                pipe.lrange(key, -count, -1)
            lists = await pipe.execute()
        return {
            p: [int(v) for v in reversed(ids)] for p, ids in zip(PRIORITIES, lists, strict=True)
        }

    async def queued_near_head(self, priority: int, count: int) -> set[int]:
        """The ids among the `count` next to pop at `priority`; only for repairs."""
        return {
            int(v) for v in await self.redis.lrange(queue_key(self.queue, priority), -count, -1)
        }

    async def request_cancel(self, task_id: int) -> None:
        await self.redis.publish(cancel_channel(self.queue), task_id)

    async def cancel_requests(self) -> AsyncIterator[int]:
        """Task ids whose cancellation was requested, as they are published."""
        async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(cancel_channel(self.queue))
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    yield int(message["data"])

    async def announce_progress(self, ids: Sequence[int]) -> None:
        """Tell followers that these running tasks' progress was stored: a status announcement
        of `running` (their status is unchanged; a follower re-reads the row and sees the
        progress)."""
        if ids:
            data = json.dumps([[task_id, "running"] for task_id in ids], separators=(",", ":"))
            await self.redis.publish(status_channel(self.queue), data)

    async def count_request(self, identity: str, limit: int, window: int) -> float | None:
        """Count one request of `identity` in the current fixed window of `window` seconds, in one
        round trip shared by every API replica; None while within `limit`, else the seconds until
        the window ends (the Retry-After)."""
        now = time.time()
        index = int(now // window)
        key = rate_key(identity, window, index)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, window + 1)
            count, _ = await pipe.execute()
        if int(count) <= limit:
            return None
        return (index + 1) * window - now

    async def ping(self) -> None:
        await self.redis.ping()
