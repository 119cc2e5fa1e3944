"""Export settings, from `TASKQ_EXPORT_*` environment variables or `.env`: the operator's named
sources and queries, and the limits every export runs under."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

GiB = 1024**3


class ExportSettings(BaseSettings):
    """Read once per process, when the plugin registers its task type."""

    model_config = SettingsConfigDict(env_prefix="TASKQ_EXPORT_", env_file=".env", extra="ignore")

    # {"warehouse": "postgresql://reader:...@db/warehouse"}: the only databases an export may
    # read. A request names a query, never a connection string. Use a role that can only read.
    sources: dict[str, SecretStr] = Field(default_factory=dict)
    # {"name": {"source", "sql", "params", "description", ...}} (see queries.QueryConfig), or
    # the same JSON in a file (`queries_file`), for SQL that spans lines.
    queries: dict[str, Any] = Field(default_factory=dict)
    queries_file: Path | None = None

    # Limits, for every export (a query may set lower ones of its own).
    statement_timeout_seconds: float = Field(default=900.0, gt=0)
    max_rows: int = Field(default=100_000_000, ge=1)
    max_bytes: int = Field(default=20 * GiB, ge=1)  # uncompressed bytes written

    @field_validator("sources", mode="before")
    @classmethod
    def _sources_json(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    @field_validator("queries", mode="before")
    @classmethod
    def _queries_json(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    def declared_queries(self) -> dict[str, Any]:
        """The queries of `queries` and of `queries_file` together (the file's win)."""
        declared = dict(self.queries)
        if self.queries_file is not None:
            declared.update(json.loads(self.queries_file.read_text()))
        return declared
