"""What every measured system gives the session: enqueue, fill, count, and its workers."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import psycopg

from bench.procs import Processes

Kind = Literal["noop", "fib"]
BULK_CHUNK = 1000  # tasks per bulk call: the most POST /tasks/batch takes
# A stuck lock or query fails the cell instead of hanging the bench.
BOUNDED = "-c lock_timeout=10s -c statement_timeout=60s"


class Unsupported(Exception):
    """The system has no such operation; the message says why (shown in the table)."""


@dataclass
class Context:
    """Where a system runs: its own PostgreSQL database and Redis database numbers."""

    database_url: str  # libpq URL of this system's own database
    redis_urls: dict[str, str]  # role -> redis://.../N, flushed by reset()
    stamps_url: str
    env: dict[str, str]  # for the system's processes
    logs: Path
    procs: Processes
    options: dict[str, Any] = field(default_factory=dict)


class Peer(abc.ABC):
    """One row of the table. Subclasses name their distributions and knobs."""

    name: ClassVar[str]  # what --peers says
    label: ClassVar[str]  # the row's title
    distributions: ClassVar[tuple[str, ...]]  # whose versions the JSON records

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @abc.abstractmethod
    def prepare(self) -> None:
        """Connect, create schemas, start servers of its own (once per session)."""

    def close(self) -> None:
        """Release clients and stop everything the peer started."""
        self.ctx.procs.stop()

    def knobs(self) -> dict[str, Any]:
        """Settings of this system the run used ("worker": the command its workers ran)."""
        return {}

    @property
    def tuned(self) -> bool:
        """Run the workers with the layout tuned for 2 cores rather than their defaults."""
        return bool(self.ctx.options.get("peers_tuned"))

    @abc.abstractmethod
    def reset(self) -> None:
        """Empty every queue and result record (no workers are running)."""

    @abc.abstractmethod
    def sender(self, kind: Kind) -> Callable[[], object]:
        """One enqueue call of a `kind` task, through the system's Python API."""

    @abc.abstractmethod
    def stamp_sender(self) -> Callable[[float], object]:
        """One enqueue call of the stamp task, given the time just before the call."""

    def enqueue_async(self, kind: Kind, count: int, tasks: int) -> float:
        """Enqueue `count` tasks from `tasks` asyncio tasks at once; the seconds it took."""
        raise Unsupported("— (not measured)")

    def enqueue_bulk(self, kind: Kind, count: int) -> None:
        """Enqueue `count` tasks through the system's bulk API."""
        raise Unsupported("no bulk enqueue")

    def enqueue_http(self, seconds: int) -> dict[str, Any]:
        """Enqueue for `seconds`, one HTTP request per task; returns count, seconds, client."""
        raise Unsupported("no HTTP API")

    def fill(self, kind: Kind, count: int) -> None:
        """Queue `count` tasks the fastest way (not timed)."""
        try:
            self.enqueue_bulk(kind, count)
        except Unsupported:
            send = self.sender(kind)
            for _ in range(count):
                send()

    @abc.abstractmethod
    def queued(self) -> int:
        """Tasks waiting, by the system's own record."""

    @abc.abstractmethod
    def done(self) -> int:
        """Tasks finished successfully, by the system's own record."""

    def failed(self) -> int:
        return 0

    @abc.abstractmethod
    def start_workers(self) -> None:
        """Start the system's workers, using both cores."""

    def stop_workers(self) -> None:
        self.ctx.procs.stop()


def chunks(count: int, size: int = BULK_CHUNK) -> Iterable[int]:
    """Sizes of the bulk calls that enqueue `count` tasks."""
    while count > 0:
        yield min(size, count)
        count -= size


class Database:
    """One autocommit connection to a system's database, kept open: polling a drain every
    20 ms must not fork a PostgreSQL backend each time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None

    def sql(self, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.url, autocommit=True, connect_timeout=5, options=BOUNDED
            )
        cursor = self._conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []

    def count(self, statement: str) -> int:
        """A count(*) query; 0 while its table does not exist yet."""
        try:
            return int(self.sql(statement)[0][0])
        except psycopg.errors.UndefinedTable:
            return 0

    def truncate(self, prefix: str = "", keep: tuple[str, ...] = ()) -> None:
        """Empty every table of the public schema whose name starts with `prefix`."""
        rows = self.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        names = [r[0] for r in rows if r[0].startswith(prefix) and r[0] not in keep]
        if names:
            quoted = ", ".join(f'"{n}"' for n in names)
            self.sql(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
