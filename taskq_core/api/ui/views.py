"""How the dashboard prints values: ages, timestamps, JSON, and the throughput chart as SVG
coordinates (the template draws them; no chart library)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.templating import Jinja2Templates

HERE = Path(__file__).parent


def age_text(seconds: float) -> str:
    """A short human age: 42s, 3m 5s, 2h 10m, 4d 3h."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60}m"
    return f"{whole // 86400}d {whole % 86400 // 3600}h"


def when_text(moment: datetime | None) -> str:
    """A timestamp in UTC to the millisecond, the same everywhere on the dashboard."""
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


@dataclass(frozen=True)
class Chart:
    """A line chart of completed and failed tasks per second, in SVG user units."""

    width: int
    height: int
    completed: str  # polyline points
    failed: str
    peak: float  # tasks per second at the top of the chart
    last_completed: float
    last_failed: float
    at_least: bool


CHART_WIDTH, CHART_HEIGHT = 600, 140


def chart(throughput: dict[str, Any]) -> Chart:
    """Rates per second from the buckets, scaled to the chart's box (top = the busiest bucket)."""
    seconds = throughput["bucket_seconds"]
    completed = [c / seconds for c in throughput["completed"]]
    failed = [f / seconds for f in throughput["failed"]]
    peak = max([*completed, *failed, 1.0])
    step = CHART_WIDTH / max(len(completed) - 1, 1)

    def points(rates: list[float]) -> str:
        return " ".join(
            f"{i * step:.1f},{CHART_HEIGHT - rate / peak * CHART_HEIGHT:.1f}"
            for i, rate in enumerate(rates)
        )

    return Chart(
        CHART_WIDTH,
        CHART_HEIGHT,
        points(completed),
        points(failed),
        peak,
        completed[-1] if completed else 0.0,
        failed[-1] if failed else 0.0,
        throughput["at_least"],
    )


def templates() -> Jinja2Templates:
    """The dashboard's templates, with its filters."""
    result = Jinja2Templates(directory=HERE / "templates")
    result.env.filters["age"] = age_text
    result.env.filters["when"] = when_text
    result.env.filters["pretty"] = pretty_json
    return result
