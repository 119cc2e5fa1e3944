"""The announcer against a real Redis: order kept, round trips shared, counters added up."""

from __future__ import annotations

import asyncio

import redis

from taskq_core import broker as broker_module
from taskq_core.broker import Broker, decode_statuses, stats_key, status_channel
from taskq_core.worker.announcer import Announcer
from tests.conftest import Servers, wait_for


def test_announcements_made_during_a_round_trip_share_the_next_one(clean: Servers) -> None:
    client: redis.Redis = clean.redis()
    pubsub = client.pubsub()
    pubsub.subscribe(status_channel("default"))
    wait_for(lambda: pubsub.get_message(timeout=1), what="the subscription")

    async def announce() -> None:
        connection = broker_module.connect(clean.redis_url)
        announcer = Announcer(Broker(connection, "default"))
        announcer.announce([(1, "running"), (2, "running")])
        await asyncio.sleep(0)  # its round trip starts; the next three arrive meanwhile
        announcer.announce([(1, "completed")], {"completed:T:3": 1}, [("T", 0.002)])
        announcer.announce([(3, "running")])
        announcer.announce([(2, "failed")], {"failed:T:3": 1, "completed:T:3": 2})
        await announcer.flush()
        await connection.aclose()

    asyncio.run(announce())
    messages = []
    while (message := pubsub.get_message(timeout=1)) is not None:
        messages.append(decode_statuses(message["data"]))
    pubsub.close()
    assert messages == [
        [(1, "running"), (2, "running")],
        [(1, "completed"), (3, "running"), (2, "failed")],
    ]
    counts = client.hgetall(stats_key("default", "counts"))
    assert counts == {"completed:T:3": "3", "failed:T:3": "1"}
    assert client.hget(stats_key("default", "durations"), "T|count") == "1"
    client.close()
