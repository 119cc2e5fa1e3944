"""All of taskq's configuration: one pydantic-settings class, from TASKQ_* variables or `.env`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from taskq_core.durations import parse_duration

MAX_BODY_BYTES = 1024 * 1024  # request bodies above this answer 413 (the default limit)


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

    # Signs the dashboard's session cookies; unset, each API process draws its own at start (a
    # restart logs everyone out; several API processes behind one address need it set).
    session_secret: SecretStr | None = None

    db_pool_size: int = Field(default=10, ge=1)
    # `off` turns psycopg's automatic prepared statements off, for PgBouncer in transaction mode
    # before 1.21 (prepared statements live in one server session, which such a pool hands around).
    database_prepare: bool = True

    # How long finished tasks are kept, per status (`30d`, `12h`, `15m`, `45s`, or `off`); the
    # sweeper deletes older ones, their attempts and idempotency keys with them.
    retention_completed: str = "7d"
    retention_failed: str = "30d"
    retention_cancelled: str = "30d"
    log_level: str = "INFO"
    # `json`: one JSON object per line (ts, level, logger, pid, message and the event's fields).
    log_format: Literal["text", "json"] = "text"

    # What one request may carry (api/limits.py, taskq_core/inputs.py); over a limit is 413/422.
    max_body_bytes: int = Field(default=MAX_BODY_BYTES, ge=1024, le=64 * 1024 * 1024)
    max_input_bytes: int = Field(default=256 * 1024, ge=64, le=64 * 1024 * 1024)
    max_input_depth: int = Field(default=32, ge=1, le=200)
    max_batch_size: int = Field(default=1000, ge=1, le=10_000)
    max_page_size: int = Field(default=1000, ge=1, le=10_000)
    # Requests per client per window, counted in Redis across API replicas: "100/s", "6000/min",
    # "100000/hour"; unset: no limit. 429 with Retry-After beyond it (api/ratelimit.py).
    rate_limit: str | None = None

    # How `taskq api` holds connections (cli/serve.py): past api_max_connections, uvicorn answers
    # 503 at once; an idle keep-alive connection closes after api_keep_alive_seconds. Slow
    # clients (headers or bodies trickled in) are the reverse proxy's to cut: docs/deployment.md.
    api_max_connections: int = Field(default=1000, ge=1)
    api_keep_alive_seconds: int = Field(default=5, ge=1, le=300)
    api_max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)  # h11 only
    # uvicorn's HTTP parser: auto is httptools when installed (faster; it bounds no header size,
    # so the proxy must), h11 enforces api_max_header_bytes.
    api_http: str = Field(default="auto", pattern=r"^(auto|h11|httptools)$")
    api_shutdown_seconds: int = Field(default=15, ge=1)

    @field_validator("database_prepare", mode="before")
    @classmethod
    def _on_off(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("on", "off"):
            return value.strip().lower() == "on"
        return value

    @field_validator("retention_completed", "retention_failed", "retention_cancelled")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value, allow_off=True)
        return value

    def retention(self) -> dict[str, float | None]:
        """Seconds finished tasks are kept, by status; None keeps them forever."""
        return {
            "completed": parse_duration(self.retention_completed, allow_off=True),
            "failed": parse_duration(self.retention_failed, allow_off=True),
            "cancelled": parse_duration(self.retention_cancelled, allow_off=True),
        }
