"""Database plumbing: URL normalisation and migrations matching the models."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from taskq_core.db import engines, urls
from taskq_core.db.models import metadata
from taskq_core.errors import ConfigurationError
from tests.conftest import Servers


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:p@h:5432/d",
        "postgres://u:p@h:5432/d",
        "postgresql+psycopg2://u:p@h:5432/d",
        "postgresql+asyncpg://u:p@h:5432/d",
        "postgresql+psycopg://u:p@h:5432/d",
    ],
)
def test_every_postgresql_url_maps_to_psycopg3(url: str) -> None:
    assert urls.normalize_url(url) == "postgresql+psycopg://u:p@h:5432/d"


@pytest.mark.parametrize("url", ["mysql://u@h/d", "oracle://u@h/d", "not a url"])
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="TASKQ_DATABASE_URL"):
        urls.normalize_url(url)


def test_migrations_match_the_models(servers: Servers) -> None:
    engine = engines.sync_engine(servers.database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert diff == []


@pytest.fixture
def empty_database(servers: Servers) -> Iterator[str]:
    """A database of its own on the suite's server, with nothing in it."""
    server, _ = servers.database_url.rsplit("/", 1)
    name = f"taskq_migrations_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{server}/{name}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def downgrade(url: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(engines.MIGRATIONS_DIR))
    engine = engines.sync_engine(url)
    try:
        with engine.connect() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, revision)
    finally:
        engine.dispose()


def state(url: str) -> tuple[str | None, set[str]]:
    """The schema's revision, and the names of the indexes on tasks."""
    with psycopg.connect(url) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables").fetchall()}
        version = (
            conn.execute("SELECT version_num FROM alembic_version").fetchone()
            if "alembic_version" in tables
            else None
        )
        indexes = conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'tasks'")
        return (version[0] if version else None), {r[0] for r in indexes.fetchall()}


def test_migrations_go_down_and_up_again(empty_database: str) -> None:
    head = ScriptDirectory(str(engines.MIGRATIONS_DIR)).get_current_head()
    engines.upgrade(empty_database)
    version, indexes = state(empty_database)
    assert version == head
    assert "ix_tasks_dispatched" in indexes
    downgrade(empty_database, "0005")  # before the lost-dispatch check's index
    version, indexes = state(empty_database)
    assert version == "0005"
    assert "ix_tasks_dispatched" not in indexes
    assert "ix_tasks_pending" in indexes
    engines.upgrade(empty_database)
    assert state(empty_database) == (head, indexes | {"ix_tasks_dispatched"})
    # Every migration undoes itself: down to nothing, then up again to what the models say.
    downgrade(empty_database, "base")
    assert state(empty_database) == (None, set())
    engines.upgrade(empty_database)
    engine = engines.sync_engine(empty_database)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert diff == []


def idempotency_index(url: str) -> tuple[bool, bool]:
    """Whether tasks' idempotency index is partial, and whether it backs a constraint."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT i.indpred IS NOT NULL, c.oid IS NOT NULL FROM pg_index i"
            " JOIN pg_class x ON x.oid = i.indexrelid"
            " LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid"
            " WHERE x.relname = 'uq_tasks_submitted_by_idempotency_key'"
        ).fetchone()
    assert row is not None
    return row[0], row[1]


def test_the_idempotency_key_index_holds_only_keyed_tasks(empty_database: str) -> None:
    insert = (
        "INSERT INTO tasks (task_type, input_data, priority, max_attempts, submitted_by,"
        " idempotency_key) VALUES ('t', '{}', 3, 1, 'open', %s)"
    )
    engines.upgrade(empty_database, "0006")
    with psycopg.connect(empty_database, autocommit=True) as conn:
        for key in (None, None, "k"):
            conn.execute(insert, (key,))
    assert idempotency_index(empty_database) == (False, True)
    engines.upgrade(empty_database)
    assert idempotency_index(empty_database) == (True, False)
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute(insert, (None,))
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(insert, ("k",))
    downgrade(empty_database, "0006")
    assert idempotency_index(empty_database) == (False, True)
