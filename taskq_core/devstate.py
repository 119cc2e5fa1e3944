"""Where a running `taskq dev` says which servers it started, so other commands find them."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from taskq_core.errors import ConfigurationError, NotConfiguredError
from taskq_core.settings import Settings

STATE_FILE = "dev.json"


@dataclass(frozen=True)
class DevState:
    pid: int
    database_url: str
    redis_url: str
    api_url: str


def data_dir(settings: Settings) -> Path:
    from taskq_core.embedded import default_data_dir

    return settings.data_dir or default_data_dir()


def read(path: Path) -> DevState | None:
    """The state of a live `taskq dev`, or None (no file, unreadable, or its process is gone)."""
    try:
        state = DevState(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    from taskq_core.processes import alive

    return state if alive(state.pid) else None


def write(path: Path, state: DevState) -> None:
    """Write the state for this user alone: its URLs carry the servers' passwords (a 0600 file in
    a 0700 folder, whatever the umask or an older taskq left; 0701 as root, see below)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # As root the embedded PostgreSQL runs as nobody, who must pass through (x, never r or w).
    passing = os.stat(path.parent).st_mode & 0o001 if os.geteuid() == 0 else 0
    os.chmod(path.parent, 0o700 | passing)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(asdict(state)))
    tmp.replace(path)


def remove(path: Path, pid: int) -> None:
    """Remove the state file if it is still `pid`'s."""
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass


def resolve_urls(settings: Settings) -> tuple[str, str]:
    """The PostgreSQL and Redis URLs: the configured ones, else those of a running `taskq dev`."""
    if settings.database_url and settings.redis_url:
        return settings.database_url, settings.redis_url
    if settings.database_url or settings.redis_url:
        missing = "TASKQ_REDIS_URL" if settings.database_url else "TASKQ_DATABASE_URL"
        raise ConfigurationError(
            f"{missing} is not set: set both TASKQ_DATABASE_URL and TASKQ_REDIS_URL"
        )
    state = read(data_dir(settings) / STATE_FILE)
    if state is None:
        raise NotConfiguredError()
    return state.database_url, state.redis_url
