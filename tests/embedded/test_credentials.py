"""The embedded servers let in only who holds their passwords; the passwords and the dev state
that carries them are readable by their owner alone."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from taskq_core import devstate
from taskq_core.embedded import EmbeddedServers
from taskq_core.embedded.credentials import FILE, load_or_create


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="taskq-credentials-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def _refused_without_password(servers: EmbeddedServers) -> None:
    pg_port, redis_port = _port(servers.database_url), _port(servers.redis_url)
    for password in ("", " password=wrong"):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(
                f"host=127.0.0.1 port={pg_port} user=postgres dbname=taskq{password}",
                connect_timeout=5,
            )
    with (
        redis.Redis(host="127.0.0.1", port=redis_port, socket_timeout=5) as client,
        pytest.raises(redis.AuthenticationError),
    ):
        client.ping()
    with (
        redis.Redis(host="127.0.0.1", port=redis_port, password="wrong") as client,
        pytest.raises(redis.AuthenticationError),
    ):
        client.ping()


def test_only_the_passwords_let_anyone_in(data_dir: Path) -> None:
    with EmbeddedServers(data_dir, durable=False) as servers:
        _refused_without_password(servers)  # before: both let every local user in
        with psycopg.connect(servers.database_url) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
        with redis.Redis.from_url(servers.redis_url) as client:
            assert client.ping()
        assert _mode(data_dir / FILE) == 0o600
        assert _mode(data_dir / "valkey.conf") == 0o600
        saved = load_or_create(data_dir)
        assert saved.postgres_password in servers.database_url
        assert saved.redis_password in servers.redis_url
        assert saved.postgres_password != saved.redis_password
        assert len(saved.postgres_password) >= 32
    # Kept: a restart serves the same URLs.
    with EmbeddedServers(data_dir, durable=False) as again:
        assert again.database_url == servers.database_url
        with psycopg.connect(again.database_url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_cluster_that_trusted_everyone_gets_a_password(data_dir: Path) -> None:
    # What an older taskq made: initdb --auth=trust, a role without a password.
    with (
        EmbeddedServers(data_dir, durable=False) as servers,
        psycopg.connect(servers.database_url, autocommit=True) as conn,
    ):
        conn.execute("ALTER ROLE postgres PASSWORD NULL")
        row = conn.execute("SHOW data_directory").fetchone()
    assert row is not None
    hba = Path(row[0]) / "pg_hba.conf"
    hba.write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
    with EmbeddedServers(data_dir, durable=False) as servers:
        _refused_without_password(servers)
        with psycopg.connect(servers.database_url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert "trust" not in hba.read_text()


def test_credentials_are_made_once_and_kept_private(data_dir: Path) -> None:
    first = load_or_create(data_dir)
    os.chmod(data_dir / FILE, 0o644)  # as a copy or an old umask might leave it
    assert load_or_create(data_dir) == first
    assert _mode(data_dir / FILE) == 0o600


def test_the_dev_state_file_is_its_owners_alone(data_dir: Path) -> None:
    folder = data_dir / "state"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)  # as an older taskq left it
    url = "postgresql://postgres:secret@127.0.0.1:1/taskq"
    devstate.write(folder / devstate.STATE_FILE, devstate.DevState(1, url, "redis://", "http://"))
    assert _mode(folder / devstate.STATE_FILE) == 0o600
    # Nobody but the owner may list or change the folder (as root, `nobody` may pass through it
    # to reach PostgreSQL's cluster).
    assert _mode(folder) in ({0o700, 0o701} if os.geteuid() == 0 else {0o700})
    fresh = data_dir / "fresh" / "deeper"
    devstate.write(fresh / devstate.STATE_FILE, devstate.DevState(1, url, "redis://", "http://"))
    assert _mode(fresh) == 0o700
    assert _mode(fresh / devstate.STATE_FILE) == 0o600
