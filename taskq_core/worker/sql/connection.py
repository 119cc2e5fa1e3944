"""One autocommit psycopg connection, made on first use and again after it breaks."""

from __future__ import annotations

import asyncio
from typing import Any, LiteralString

import psycopg

from taskq_core.db.urls import CONNECT_TIMEOUT

# What a broken or unreachable database raises here; the connection is dropped and made again on
# next use, and the worker treats the error as an outage (it backs off and retries).
CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)


class Connection:
    """One autocommit connection, made on first use and again after it breaks."""

    def __init__(self, conninfo: str, *, prepare: bool = True) -> None:
        self.conninfo = conninfo
        # False: never prepare statements on the server (TASKQ_DATABASE_PREPARE=off, PgBouncer).
        self.prepare = prepare
        self._conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None

    async def fetch(self, query: LiteralString, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        conn = self._conn
        if conn is None or conn.closed:
            conn = self._conn = await psycopg.AsyncConnection.connect(
                self.conninfo,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT,
                **({} if self.prepare else {"prepare_threshold": None}),
            )
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
