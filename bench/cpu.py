"""CPU seconds spent by process trees, from /proc: what a task costs each part, whatever the load
(and the WAL PostgreSQL writes per task).

A loaded machine stretches every wall-clock figure, but the CPU a drain burns per task in the
workers, in PostgreSQL and in Redis barely moves: these costs are what the capacity model in
docs/performance.md is built on. Each tree is a root and all its descendants alive now; the
children that already exited are in their parents' cutime/cstime once reaped.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import psycopg
import redis

TICKS = os.sysconf("SC_CLK_TCK")


def _stats() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, CPU seconds of it and its reaped children)."""
    found: dict[int, tuple[int, float]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as stat:
                text = stat.read()
        except OSError:
            continue  # exited meanwhile
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
        ppid = int(fields[1])
        ticks = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        found[int(name)] = (ppid, ticks / TICKS)
    return found


def trees(roots: Iterable[int]) -> float:
    """CPU seconds of the processes `roots` and every descendant alive now."""
    stats = _stats()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, seen = 0.0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += stats[pid][1]
        todo += children.get(pid, [])
    return total


def postgres_pid(database_url: str) -> int | None:
    """The postmaster's pid, if the server is on this machine and we may read its data dir."""
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            row = conn.execute("SELECT current_setting('data_directory')").fetchone()
        assert row is not None
        with open(os.path.join(str(row[0]), "postmaster.pid")) as pidfile:
            return int(pidfile.readline())
    except (psycopg.Error, OSError, ValueError):
        return None


def redis_pid(redis_url: str) -> int | None:
    try:
        with redis.Redis.from_url(redis_url) as client:
            return int(client.info("server")["process_id"])
    except (redis.RedisError, KeyError, ValueError):
        return None


def wal_bytes(database_url: str) -> float | None:
    """The server's WAL position in bytes (None if unreadable)."""
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
        return float(row[0]) if row is not None else None
    except psycopg.Error:
        return None


class Meter:
    """CPU seconds of a system's workers, PostgreSQL and Redis between `start` and `stop`, and
    the WAL PostgreSQL wrote meanwhile (whoever wrote it)."""

    def __init__(self, database_url: str, redis_url: str) -> None:
        self.database_url = database_url
        self.pids = {"postgresql": postgres_pid(database_url), "redis": redis_pid(redis_url)}
        self.before: dict[str, float] = {}
        self.wal: float | None = None

    def _now(self, workers: Iterable[int]) -> dict[str, float]:
        now = {"workers": trees(workers)}
        for part, pid in self.pids.items():
            if pid is not None and os.path.exists(f"/proc/{pid}"):
                now[part] = trees([pid])
        return now

    def start(self) -> None:
        self.before = self._now([])
        self.wal = wal_bytes(self.database_url)

    def stop(self, workers: Iterable[int], tasks: int) -> dict[str, float]:
        """Microseconds of CPU per task in each part (the workers started after `start`)."""
        after = self._now(workers)
        costs = {
            f"{part}_us": round((after[part] - self.before.get(part, 0.0)) / tasks * 1e6, 1)
            for part in after
        }
        wal = wal_bytes(self.database_url)
        if wal is not None and self.wal is not None:
            costs["wal_bytes"] = round((wal - self.wal) / tasks)
        return costs
