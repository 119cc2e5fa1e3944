"""`/metrics`: Prometheus text of the whole queue, whichever API process is scraped.

Counters and the duration histogram live in Redis hashes (`broker.stats_key`), written by every
API and worker process in round trips they make anyway (the push of new ids, the announcement of
committed outcomes), so workers need no endpoint of their own and restarts lose nothing. Queue
depths are five LLENs; the oldest pending age and live workers are index lookups. No count of
the tasks table: a scrape costs the same with a million rows as with ten.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from taskq_core.api.auth import AUTH_RESPONSES, Scope, require
from taskq_core.api.deps import BackendsDep
from taskq_core.api.responses import GUARDED, documented
from taskq_core.broker import DURATION_BUCKETS
from taskq_core.db.metrics import queue_numbers

# A read key scrapes (Prometheus: `authorization: {credentials: KEY}` in the scrape config).
router = APIRouter(tags=["health"], dependencies=[require(Scope.READ)], responses=AUTH_RESPONSES)

EVENTS = {
    "created": "Tasks created",
    "completed": "Tasks completed",
    "failed": "Tasks failed for good (out of attempts, a permanent error, or lost on the last)",
    "retried": "Tasks sent to run again: a failed attempt with attempts left, or POST /retry",
    "cancelled": "Tasks cancelled",
}


class _Fixed:
    """A collector of metric families computed before the scrape is serialised."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _counters(stored: dict[str, str]) -> list[Metric]:
    families = {
        event: CounterMetricFamily(
            f"taskq_tasks_{event}", help_text, labels=["task_type", "priority"]
        )
        for event, help_text in EVENTS.items()
    }
    for name, value in sorted(stored.items()):
        event, task_type, priority = name.split("|")
        if event in families:
            families[event].add_metric([task_type, priority], float(value))
    return list(families.values())


def _durations(stored: dict[str, str]) -> Metric:
    family = HistogramMetricFamily(
        "taskq_task_duration_seconds",
        "How long attempts ran, by task type (from the worker's start of the task to its end)",
        labels=["task_type"],
    )
    types = sorted({name.rsplit("|", 1)[0] for name in stored})
    for task_type in types:
        cumulative, buckets = 0.0, []
        for bound in (*map(repr, DURATION_BUCKETS), "+Inf"):
            cumulative += float(stored.get(f"{task_type}|{bound}", 0))
            buckets.append((bound, cumulative))
        family.add_metric(
            [task_type], buckets, sum_value=float(stored.get(f"{task_type}|sum", 0.0))
        )
    return family


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
        **documented(*GUARDED, _503="PostgreSQL or Redis unavailable"),
    },
)
async def metrics(request: Request, backends: BackendsDep) -> Response:
    """Counters by task type and priority, a duration histogram by type, queue depth per
    priority, the oldest pending task's age and the live workers."""
    settings: Any = request.app.state.settings
    counts, durations = await backends.broker.stats()
    depths = await backends.broker.depths()
    age, alive = await queue_numbers(
        backends.storage.engine, backends.broker.queue, settings.lease_seconds
    )
    depth = GaugeMetricFamily(
        "taskq_queue_depth", "Task ids waiting in Redis, by priority", labels=["priority"]
    )
    for priority, length in sorted(depths.items()):
        depth.add_metric([str(priority)], float(length))
    families: list[Metric] = [
        *_counters(counts),
        _durations(durations),
        depth,
        GaugeMetricFamily(
            "taskq_oldest_pending_age_seconds",
            "How long the oldest due pending task has waited since it was due (0: none)",
            value=age,
        ),
        GaugeMetricFamily(
            "taskq_workers_alive", "Workers whose heartbeat is within a lease", value=alive
        ),
    ]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
