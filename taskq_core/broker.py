"""Redis as the broker: five lists per queue carry task ids, highest priority popped first."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

import redis
import redis.asyncio as aioredis

PRIORITIES = (5, 4, 3, 2, 1)  # pop order: highest first


def queue_key(queue: str, priority: int) -> str:
    """The list holding ids of `priority`; the {hash tag} keeps all five in one Redis Cluster slot,
    so a single BRPOP can cover them."""
    return f"taskq:{{{queue}}}:{priority}"


def push_blocking(client: redis.Redis, queue: str, items: Iterable[tuple[int, int]]) -> None:
    """Push (task_id, priority) pairs from blocking code, in one round trip, keeping their order
    per priority (one LPUSH per priority, as push_many)."""
    by_priority: dict[int, list[int]] = {}
    for task_id, priority in items:
        by_priority.setdefault(priority, []).append(task_id)
    if not by_priority:
        return
    with client.pipeline(transaction=False) as pipe:
        for priority, ids in by_priority.items():
            pipe.lpush(queue_key(queue, priority), *ids)
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


def stats_key(queue: str, kind: str) -> str:
    """Hashes of the queue's counters, shared by every API and worker process so one scrape of
    any API sees them all: `counts` ("event|task_type|priority" -> n) and `durations`
    ("task_type|le" -> n per bucket, "task_type|count", "task_type|sum")."""
    return f"taskq:{{{queue}}}:stats:{kind}"


# Upper bounds (seconds) of the task duration histogram's buckets; the last is +Inf.
DURATION_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
DURATION_BUCKETS += (10.0, 30.0, 60.0, 300.0, 3600.0)


def count_field(event: str, task_type: str, priority: int) -> str:
    return f"{event}|{task_type}|{priority}"


def _bucket(seconds: float) -> str:
    for bound in DURATION_BUCKETS:
        if seconds <= bound:
            return repr(bound)
    return "+Inf"


def _add_stats(
    pipe: aioredis.client.Pipeline,
    queue: str,
    counts: Mapping[str, int],
    durations: Sequence[tuple[str, float]],
) -> None:
    """Queue the HINCRBYs for `counts` and `durations` (task_type, seconds) on `pipe`."""
    for name, n in counts.items():
        pipe.hincrby(stats_key(queue, "counts"), name, n)
    buckets: dict[str, int] = {}
    sums: dict[str, float] = {}
    for task_type, seconds in durations:
        field = f"{task_type}|{_bucket(seconds)}"
        buckets[field] = buckets.get(field, 0) + 1
        buckets[f"{task_type}|count"] = buckets.get(f"{task_type}|count", 0) + 1
        sums[task_type] = sums.get(task_type, 0.0) + seconds
    for name, n in buckets.items():
        pipe.hincrby(stats_key(queue, "durations"), name, n)
    for task_type, total in sums.items():
        pipe.hincrbyfloat(stats_key(queue, "durations"), f"{task_type}|sum", total)


def encode_statuses(changes: Sequence[tuple[int, str]]) -> str:
    return json.dumps([[task_id, status] for task_id, status in changes], separators=(",", ":"))


def decode_statuses(data: str) -> list[tuple[int, str]]:
    return [(int(task_id), str(status)) for task_id, status in json.loads(data)]


try:
    from redis.maint_notifications import MaintNotificationsConfig

    # redis-py 7+ asks every new connection to enable maintenance notifications (a feature of
    # Redis Enterprise): a round trip, and an error from any other server. Ours never send them.
    NO_HANDSHAKE: dict[str, Any] = {
        "maint_notifications_config": MaintNotificationsConfig(enabled=False)
    }
except ImportError:  # an older redis-py does not ask
    NO_HANDSHAKE = {}
try:
    from redis.driver_info import DriverInfo

    # Every new connection tells the server redis-py's name and version (CLIENT SETINFO): given
    # none, redis-py looks its version up in the installed packages' metadata for each connection
    # (a scan of sys.path, milliseconds of a worker's start-up). The same version, read once.
    NO_HANDSHAKE["driver_info"] = DriverInfo(lib_version=redis.__version__)
except ImportError:  # before redis-py 7.1, the version comes from redis.__version__ already
    pass


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
        **NO_HANDSHAKE,
    )


class Broker:
    """Push and pop task ids; Redis only carries ids, PostgreSQL decides what runs."""

    def __init__(self, redis: aioredis.Redis, queue: str = "default") -> None:
        self.redis = redis
        self.queue = queue
        self.keys = [queue_key(queue, p) for p in PRIORITIES]

    async def push(self, task_id: int, priority: int) -> None:
        await self.redis.lpush(queue_key(self.queue, priority), task_id)

    async def push_many(
        self, items: Iterable[tuple[int, int]], created: Mapping[str, int] | None = None
    ) -> None:
        """Push (task_id, priority) pairs in one round trip, keeping their order per priority;
        `created` counters (`count_field` -> n) ride in the same round trip."""
        by_priority: dict[int, list[int]] = {}
        for task_id, priority in items:
            by_priority.setdefault(priority, []).append(task_id)
        if not by_priority and not created:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for priority, ids in by_priority.items():
                pipe.lpush(queue_key(self.queue, priority), *ids)
            _add_stats(pipe, self.queue, created or {}, ())
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

    async def pop_many(self, count: int, wait: float) -> tuple[int, list[int]]:
        """Block up to `wait` seconds, then take up to `count` ids, oldest first, all from the
        highest non-empty priority: BLMPOP never mixes lists, so priority stays strict.
        Returns (their priority, the ids); (0, []) when none came."""
        item = await self.redis.blmpop(
            wait, len(self.keys), *self.keys, direction="RIGHT", count=count
        )
        if item is None:
            return 0, []
        key, ids = item
        return int(str(key).rsplit(":", 1)[1]), [int(v) for v in ids]

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

    async def announce(
        self,
        changes: Sequence[tuple[int, str]],
        counts: Mapping[str, int] | None = None,
        durations: Sequence[tuple[str, float]] = (),
    ) -> None:
        """Tell the API processes that these tasks (id, new status) changed, once committed, and
        add to the counters (`count_field` -> n) and the duration histogram (task_type,
        seconds): one round trip."""
        if not changes and not counts and not durations:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            if changes:
                pipe.publish(status_channel(self.queue), encode_statuses(changes))
            _add_stats(pipe, self.queue, counts or {}, durations)
            await pipe.execute()

    async def stats(self) -> tuple[dict[str, str], dict[str, str]]:
        """The counters and the duration histogram's fields, as stored."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(stats_key(self.queue, "counts"))
            pipe.hgetall(stats_key(self.queue, "durations"))
            counts, durations = await pipe.execute()
        return counts, durations

    async def status_changes(
        self, subscribed: Callable[[], None], poll: float = 1.0
    ) -> AsyncIterator[list[tuple[int, str]]]:
        """Batches of (id, status) as announced; `subscribed` is called once the subscription is
        confirmed, from when on no announcement is missed. Give this a client of its own
        (`connect(url, blocking=True)`): it holds the connection. Raises on a lost connection;
        reads in `poll`-second steps so the pub/sub health check runs while it is quiet."""
        async with self.redis.pubsub() as pubsub:
            await pubsub.subscribe(status_channel(self.queue))
            while True:
                message = await pubsub.get_message(timeout=poll)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    subscribed()
                elif message["type"] == "message":
                    yield decode_statuses(message["data"])

    async def ping(self) -> None:
        await self.redis.ping()
