"""The API of a running `taskq dev` on this machine, read from the state file it writes.

The server's `taskq_core.devstate` owns that file; this package cannot import the server, so it
reads the same file in the same place: `dev.json` in TASKQ_DATA_DIR, else `/var/lib/taskq` for
root, else `$XDG_STATE_HOME/taskq` or `~/.local/state/taskq`. The file is only trusted while the
process that wrote it lives (a `taskq dev` killed with SIGKILL leaves it behind)."""

from __future__ import annotations

import json
import os
from pathlib import Path

STATE_FILE = "dev.json"
DATA_DIR_ENV = "TASKQ_DATA_DIR"
ROOT_DATA_DIR = Path("/var/lib/taskq")


def data_dir() -> Path:
    configured = os.environ.get(DATA_DIR_ENV)
    if configured:
        return Path(configured)
    if os.geteuid() == 0:
        return ROOT_DATA_DIR
    state = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "taskq"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def dev_api_url() -> str | None:
    """The API URL of the `taskq dev` running for this user, or None."""
    try:
        state = json.loads((data_dir() / STATE_FILE).read_text())
        pid, url = state["pid"], state["api_url"]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if not (isinstance(pid, int) and pid > 0 and isinstance(url, str) and url):
        return None
    return url if _alive(pid) else None
