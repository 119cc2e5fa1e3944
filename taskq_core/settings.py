"""All of taskq's configuration: one pydantic-settings class, from TASKQ_* variables or `.env`."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

MAX_BODY_BYTES = 1024 * 1024  # request bodies above this answer 413


class Settings(BaseSettings):
    """taskq settings; build once at process start and pass down."""

    model_config = SettingsConfigDict(env_prefix="TASKQ_", env_file=".env", extra="ignore")

    database_url: str | None = None
    redis_url: str | None = None
    queue: str = Field(default="default", pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    # Where `taskq dev` keeps the embedded servers' data; default: a per-user state folder.
    data_dir: Path | None = None
    # Other binaries for the embedded default (a system PostgreSQL's bin/, a system redis-server).
    embedded_postgres_bin: Path | None = None
    embedded_redis_server: Path | None = None

    # A running task's claim lasts this long unless its worker's heartbeat renews it; after that
    # the sweeper hands it to another worker. Heartbeats come every third of it.
    lease_seconds: float = Field(default=30.0, gt=0)
    sweep_interval_seconds: float = Field(default=5.0, gt=0)

    # Where tasks' artifacts are stored: a folder (default: `artifacts/` in the data folder) or
    # `s3://bucket/prefix` (credentials and endpoint from the AWS_* variables).
    artifacts_url: str | None = None

    # Comma-separated API keys with every scope, for deployments that inject secrets; keys made
    # with `taskq keys create` live in PostgreSQL. A SecretStr, so no repr or log shows them.
    api_keys: SecretStr = SecretStr("")

    db_pool_size: int = Field(default=10, ge=1)
    log_level: str = "INFO"
