"""One autocommit psycopg connection, made on first use and again after it breaks."""

from __future__ import annotations

import asyncio
from typing import Any, LiteralString

import psycopg

from taskq_core.db.urls import CONNECT_TIMEOUT

# What a broken or unreachable database raises here; the connection is dropped and made again on
# next use, and the worker treats the error as an outage (it backs off and retries).
CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)

# SQLSTATE classes of a statement the server refuses for what it holds, not for how it is: data
# exception (a NUL in JSON text), integrity violation, program limit exceeded (a value too big).
# Sending the same values again fails again, so they are no outage to wait out.
_REFUSAL_CLASSES = ("22", "23", "54")


def refused(exc: BaseException) -> bool:
    """Whether `exc` is PostgreSQL refusing the values sent, rather than being unreachable."""
    sqlstate = getattr(exc, "sqlstate", None) if isinstance(exc, psycopg.Error) else None
    return sqlstate is not None and sqlstate[:2] in _REFUSAL_CLASSES


def transient(exc: BaseException) -> bool:
    """A statement rolled back by a conflict (deadlock, serialization): the same one may pass."""
    sqlstate = getattr(exc, "sqlstate", None) if isinstance(exc, psycopg.Error) else None
    return sqlstate is not None and sqlstate[:2] == "40"


class Connection:
    """One autocommit connection, made on first use and again after it breaks."""

    def __init__(self, conninfo: str, *, prepare: bool = True) -> None:
        self.conninfo = conninfo
        # False: never prepare statements on the server (TASKQ_DATABASE_PREPARE=off, PgBouncer).
        self.prepare = prepare
        self._conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._connecting = asyncio.Lock()  # one connection, however many callers need it first

    async def open(self) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        """The connection, made now if there is none (`fetch` makes it too: this one makes it
        ahead of the first statement)."""
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        async with self._connecting:
            conn = self._conn
            if conn is None or conn.closed:
                conn = self._conn = await psycopg.AsyncConnection.connect(
                    self.conninfo,
                    autocommit=True,
                    connect_timeout=CONNECT_TIMEOUT,
                    **({} if self.prepare else {"prepare_threshold": None}),
                )
            return conn

    async def fetch(self, query: LiteralString, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self.open()
        try:
            cursor = await conn.execute(query, params)
            return await cursor.fetchall() if cursor.description is not None else []
        except (*CONNECTION_ERRORS, asyncio.CancelledError):
            # Broken, or cut off mid-statement by a cancellation: the next call starts afresh
            # (closing makes the server roll the statement back).
            await self.close()
            raise

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
