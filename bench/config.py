"""What one bench invocation measures (sizes, bounds, taskq's layout) and one session's spec."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Sizes:
    tasks: int = 10_000  # per enqueue and no-op drain phase
    fib_tasks: int = 10_000  # per fib(20) drain
    runs: int = 3
    latency_rate: float = 100.0  # tasks per second, steady
    latency_seconds: float = 10.0
    http_seconds: int = 10  # wrk runs for a time, not a count
    phase_timeout: float = 300.0  # seconds any one phase may take before its cell reads timeout
    # taskq's worker layout: `taskq_workers` processes of `taskq-worker`, with --processes and
    # --concurrency only when given (None: the product's defaults, which is what users run)
    taskq_workers: int = 1
    taskq_processes: int | None = None
    taskq_concurrency: int | None = None
    taskq_base: str = ""  # another checkout, run as the system "taskq-base" (old vs new code)
    # Every peer's worker at its own defaults unless True: then the layouts tuned for this
    # 2-core machine (Celery -c 4 / -c 2, RQ SimpleWorker x 2, procrastinate 2 x 4)
    peers_tuned: bool = False
    phases: str = ""  # comma-separated phases to run (default: all)

    @classmethod
    def quick(cls) -> Sizes:
        """A tiny run for the test suite: every cell filled, nothing meaningful measured."""
        return cls(
            tasks=50,
            fib_tasks=50,
            runs=1,
            latency_seconds=1.0,
            http_seconds=1,
            phase_timeout=60.0,
        )


@dataclass
class SessionSpec:
    """Everything a session process needs to measure one system once."""

    system: str
    run: int
    sizes: Sizes
    database_url: str  # the system's own database (libpq URL)
    redis_urls: dict[str, str]  # role -> URL with the system's own database number
    stamps_url: str
    env: dict[str, str]  # set in the session and inherited by the system's processes
    logs: str
    output: str  # JSON lines, one per phase, then one "_meta" line
    pgid_file: str  # process groups the session started, for the parent to clean up
    options: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self), indent=1))
        return path

    @classmethod
    def load(cls, path: Path) -> SessionSpec:
        data = json.loads(path.read_text())
        data["sizes"] = Sizes(**data["sizes"])
        return cls(**data)
