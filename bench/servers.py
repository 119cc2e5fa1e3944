"""The one PostgreSQL and one Redis every system runs on: taskq's embedded pair, or given URLs."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import redis
from sqlalchemy.engine import make_url

DATABASE_URL_ENV = "TASKQ_BENCH_DATABASE_URL"
REDIS_URL_ENV = "TASKQ_BENCH_REDIS_URL"
# Each system's own PostgreSQL database and Redis database numbers; all are emptied by the bench.
# taskq-base has its own: a branch's new migration stamps its database with a revision the base's
# Alembic does not know.
DATABASES = {
    n: f"bench_{n.replace('-', '_')}" for n in ("taskq", "taskq-base", "celery", "procrastinate")
}
REDIS_DBS = {
    "taskq": 1,
    "celery-broker": 2,
    "celery-results": 3,
    "rq": 4,
    "dramatiq": 5,
    "stamps": 6,
}


class Servers:
    """Started (or found) once per invocation; every system gets a database of its own on it."""

    def __init__(self) -> None:
        self.embedded: Any = None
        self.tmp: tempfile.TemporaryDirectory[str] | None = None
        self.base_url = os.environ.get(DATABASE_URL_ENV, "")
        self.redis_base = os.environ.get(REDIS_URL_ENV, "")

    def start(self) -> None:
        if bool(self.base_url) != bool(self.redis_base):
            raise SystemExit(f"set both {DATABASE_URL_ENV} and {REDIS_URL_ENV}, or neither")
        if not self.base_url:
            from taskq_core.embedded import EmbeddedServers

            self.tmp = tempfile.TemporaryDirectory(prefix="taskq-bench-")
            # durable=True: fsync on, as in production and in the measurements.
            self.embedded = EmbeddedServers(Path(self.tmp.name), durable=True)
            self.embedded.start()
            self.base_url = self.embedded.database_url
            self.redis_base = self.embedded.redis_url
            # The issue measured Redis without persistence; the embedded durable pair has AOF on.
            with redis.Redis.from_url(self.redis_base) as client:
                client.config_set("appendonly", "no")
        for name in DATABASES.values():
            with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{name}"')

    def stop(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()
        if self.tmp is not None:
            self.tmp.cleanup()

    def url(self, database: str) -> str:
        """A libpq URL for `database` on the server."""
        parsed = make_url(self.base_url).set(drivername="postgresql", database=database)
        return parsed.render_as_string(hide_password=False)

    def redis_url(self, role: str) -> str:
        return urlsplit(self.redis_base)._replace(path=f"/{REDIS_DBS[role]}").geturl()

    def flush(self) -> None:
        for role in REDIS_DBS:
            with redis.Redis.from_url(self.redis_url(role)) as client:
                client.flushdb()

    def describe(self) -> dict[str, Any]:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            pg = {
                name: str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
                for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers")
            }
        with redis.Redis.from_url(self.redis_base, decode_responses=True) as client:
            info = client.info("server")
            persistence = client.info("persistence")
        return {
            "postgresql": {"how": "embedded" if self.embedded else "given URL", **pg},
            "redis": {
                "how": "embedded" if self.embedded else "given URL",
                "server": info.get("server_name", "redis"),
                "version": info.get("valkey_version", info.get("redis_version")),
                "aof_enabled": persistence.get("aof_enabled"),
            },
        }


@contextlib.contextmanager
def given_or_embedded(
    database_url: str | None, redis_url: str | None, prefix: str
) -> Iterator[tuple[str, str]]:
    """A side benchmark's servers: the PostgreSQL and Redis URLs given (both), else those of a
    durable embedded pair, in a temporary folder named `prefix`..., that lives for the block."""
    if database_url and redis_url:
        yield database_url, redis_url
        return
    from taskq_core.embedded import EmbeddedServers

    with (
        tempfile.TemporaryDirectory(prefix=prefix) as tmp,
        EmbeddedServers(Path(tmp), durable=True) as servers,
    ):
        yield servers.database_url, servers.redis_url
