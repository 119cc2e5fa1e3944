"""PostgreSQL connections: URL normalisation, engines and schema migrations.

SQLAlchemy is imported inside the functions that build engines: the worker talks to psycopg
directly (`taskq_core.workerdb`) and starts faster without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from taskq_core.errors import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# taskq speaks to PostgreSQL through psycopg 3 only: it is the one driver with both a blocking and
# an asyncio side under SQLAlchemy, so the API, the workers and Alembic share one driver. A URL
# naming another driver (psycopg2, asyncpg) or none at all is mapped onto it.
_POSTGRES_SCHEMES = {"postgres", "postgresql"}
# An unreachable server must fail a request in seconds (the API answers 503), not hang it.
CONNECT_TIMEOUT = 3  # seconds
POOL_TIMEOUT = 5  # seconds to wait for a free pooled connection


def _location(url: str) -> str:
    """What follows `scheme://` in a PostgreSQL URL, whatever driver the scheme named."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        raise ConfigurationError(f"TASKQ_DATABASE_URL is not a URL: {url.split('@')[-1]!r}")
    backend = scheme.split("+", 1)[0]
    if backend not in _POSTGRES_SCHEMES:
        raise ConfigurationError(
            f"TASKQ_DATABASE_URL must be a PostgreSQL URL (postgresql://...), got {backend!r}"
        )
    return rest


def normalize_url(url: str) -> str:
    """Return `url` with the psycopg (3) driver, for SQLAlchemy, whatever driver it named."""
    return "postgresql+psycopg://" + _location(url)


def conninfo(url: str) -> str:
    """`url` as libpq takes it (postgresql://...), for code that talks to psycopg directly."""
    return "postgresql://" + _location(url)


def async_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
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
        connect_args={"connect_timeout": CONNECT_TIMEOUT},
    )


def sync_engine(url: str) -> Engine:
    """A blocking engine, for the command line and migrations."""
    from sqlalchemy import create_engine

    return create_engine(
        normalize_url(url), pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT}
    )


def upgrade(url: str, revision: str = "head") -> None:
    """Create or migrate the schema to `revision` with Alembic."""
    import logging

    from alembic import command
    from alembic.config import Config

    # Alembic narrates every plugin and step at INFO; taskq's commands say what matters themselves.
    logging.getLogger("alembic").setLevel(logging.WARNING)

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    engine = sync_engine(url)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()
