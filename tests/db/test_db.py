"""Database plumbing: URL normalisation and migrations matching the models."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

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
