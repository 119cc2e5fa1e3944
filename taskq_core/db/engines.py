"""SQLAlchemy engines for the API and the command line, and schema migrations with Alembic.

SQLAlchemy is imported inside the functions that build engines, so importing this module is cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskq_core.db.urls import CONNECT_TIMEOUT, POOL_TIMEOUT, normalize_url

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def connect_args(prepare: bool = True) -> dict[str, Any]:
    """psycopg's connection options; `prepare=False` (TASKQ_DATABASE_PREPARE=off) never prepares
    statements on the server, which PgBouncer in transaction mode before 1.21 cannot carry."""
    args: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT}
    if not prepare:
        args["prepare_threshold"] = None
    return args


def async_engine(url: str, *, pool_size: int = 10, prepare: bool = True) -> AsyncEngine:
    """An asyncio engine with a connection pool, for the API."""
    from sqlalchemy.ext.asyncio import create_async_engine

    return create_async_engine(
        normalize_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        # No pre-ping: it would cost every checkout a round trip. A connection found dead fails
        # its one statement (the API answers 503, nothing is written) and SQLAlchemy then
        # discards the whole pool, so the next request reconnects.
        pool_pre_ping=False,
        pool_recycle=1800,
        pool_timeout=POOL_TIMEOUT,
        connect_args=connect_args(prepare),
    )


def sync_engine(url: str, *, prepare: bool = True) -> Engine:
    """A blocking engine, for the command line and migrations."""
    from sqlalchemy import create_engine

    return create_engine(normalize_url(url), pool_pre_ping=True, connect_args=connect_args(prepare))


def upgrade(url: str, revision: str = "head", *, prepare: bool = True) -> None:
    """Create or migrate the schema to `revision` with Alembic."""
    import logging

    from alembic import command
    from alembic.config import Config

    # Alembic narrates every plugin and step at INFO; taskq's commands say what matters themselves.
    logging.getLogger("alembic").setLevel(logging.WARNING)

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    engine = sync_engine(url, prepare=prepare)
    try:
        # No transaction of ours around it: the migrations' own (env.py) lets one that builds an
        # index CONCURRENTLY step outside it.
        with engine.connect() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()
