"""PostgreSQL URLs: any driver a user names becomes psycopg 3; connect time-outs.

No SQLAlchemy here: the worker talks to psycopg directly and imports only this module of `db`.
"""

from __future__ import annotations

from taskq_core.errors import ConfigurationError

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
