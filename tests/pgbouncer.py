"""A real PgBouncer in transaction mode in front of the suite's PostgreSQL, on a free port."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from taskq_core.processes import spawn
from tests.conftest import free_port, wait_for

BINARY = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
NOBODY = 65534  # PgBouncer refuses to run as root; it switches to nobody (-u)


@contextmanager
def pgbouncer(database_url: str) -> Iterator[str]:
    """Run PgBouncer (pool_mode = transaction) in front of `database_url`; yields its URL."""
    if not os.path.exists(BINARY):
        pytest.fail(
            "pgbouncer is not installed: `make .venv/.test` installs Debian's package when run as "
            "root, or run `apt-get install pgbouncer`"
        )
    target = urlsplit(database_url)
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="taskq-pgbouncer-"))
    folder.chmod(0o755)
    user = target.username or "postgres"
    # Clients are trusted (a test on loopback); PgBouncer logs into PostgreSQL with the suite's
    # password (the embedded server asks for one: scram), which it needs in plain text here.
    password = (target.password or "").replace('"', '""')
    (folder / "users.txt").write_text(f'"{user}" "{password}"\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={target.hostname} port={target.port}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder / 'users.txt'}\n"
        "pool_mode = transaction\n"
        # Few server connections for many clients: every transaction may land on another one,
        # which is what breaks code that keeps state in its session.
        "default_pool_size = 4\nmax_client_conn = 500\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
    )
    for path in folder.iterdir():
        path.chmod(0o644)
    log = folder / "pgbouncer.log"
    args = [BINARY, str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:
        args[1:1] = ["-u", "nobody"]
    with log.open("wb") as out:
        proc = spawn(args, stdout=out, stderr=subprocess.STDOUT, new_session=False)
    netloc = f"{user}@127.0.0.1:{port}"
    url = urlunsplit(("postgresql", netloc, target.path, "", ""))

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"pgbouncer exited:\n{log.read_text()}")
        try:
            with psycopg.connect(url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    try:
        wait_for(up, what="pgbouncer to accept connections")
        yield url
    finally:
        proc.terminate()
        proc.wait(15)
        shutil.rmtree(folder, ignore_errors=True)
