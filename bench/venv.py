"""The bench's own environment, `.venv-bench`: taskq editable, its plugins, and the peers.

`python3 -m bench.venv` (what `make bench` runs first) creates or updates it and installs wrk
when it is missing and we are root. Standard library only: it runs before the venv exists.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv-bench"
PYTHON = VENV / "bin" / "python"
# Whatever changes what the venv should hold; their hash is kept in the venv.
INPUTS = (
    "pyproject.toml",
    "clients/python/pyproject.toml",
    "plugins/taskq_fibonacci/pyproject.toml",
    "plugins/taskq_email/pyproject.toml",
    "bench/requirements.txt",
)
INSTALL = [
    "-e",
    ".[embedded]",
    "-e",
    "clients/python",  # taskq-core's command line depends on it
    "-e",
    "plugins/taskq_fibonacci",
    "-e",
    "plugins/taskq_email",
    "-r",
    "bench/requirements.txt",
]
PIP_TIMEOUT = 900  # seconds for the whole install


def _digest() -> str:
    hasher = hashlib.sha256()
    for name in INPUTS:
        hasher.update((REPO / name).read_bytes())
    return hasher.hexdigest()


def ensure_venv() -> Path:
    """Create or update .venv-bench (under a lock: make bench and the tests may race)."""
    VENV.mkdir(exist_ok=True)
    # Never committed, and skipped by ruff and git alike (what `python -m venv` does in 3.13).
    (VENV / ".gitignore").write_text("*\n")
    stamp = VENV / ".installed"
    with open(VENV / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == _digest() and PYTHON.exists():
            return PYTHON
        if not PYTHON.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
            (VENV / ".gitignore").write_text("*\n")
        pip = [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True, cwd=REPO, timeout=PIP_TIMEOUT)
        subprocess.run([*pip, *INSTALL], check=True, cwd=REPO, timeout=PIP_TIMEOUT)
        stamp.write_text(_digest())
    return PYTHON


def ensure_wrk() -> str:
    """wrk for the HTTP load: installed from Debian when missing and we are root."""
    if shutil.which("wrk"):
        return "wrk found"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "wrk missing and not root: the HTTP phase uses a Python client"
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    quiet = {"stdout": subprocess.DEVNULL, "timeout": 600}
    if subprocess.run(install, **quiet).returncode != 0:  # type: ignore[call-overload]
        subprocess.run(["apt-get", "update", "-q"], **quiet)  # type: ignore[call-overload]
        subprocess.run(install, **quiet)  # type: ignore[call-overload]
    return "wrk installed" if shutil.which("wrk") else "wrk could not be installed: Python client"


def main() -> int:
    ensure_venv()
    print(f"{VENV.name}: ready; {ensure_wrk()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
