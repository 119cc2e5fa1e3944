"""`taskq keys` as a user runs it, and the start-up guards: no open API beyond loopback, no
secret in the banner or the logs. On a database of their own (a key would close the shared API).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from taskq_core.db import engines
from tests.cli.terminal import on_a_terminal
from tests.conftest import Processes, Servers, free_port, taskq, wait_for


@pytest.fixture
def env(servers: Servers) -> Iterator[dict[str, str]]:
    """A taskq environment on a fresh, migrated database of the session's PostgreSQL."""
    name = f"taskq_keys_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(servers.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = servers.database_url.rsplit("/", 1)[0] + f"/{name}"
    engines.upgrade(url)
    yield servers.env(TASKQ_DATABASE_URL=url, TASKQ_QUEUE="keys")
    with psycopg.connect(servers.database_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(taskq(*args), env=env, capture_output=True, text=True, timeout=60)


def rows(env: dict[str, str], statement: str) -> list[tuple[object, ...]]:
    with psycopg.connect(env["TASKQ_DATABASE_URL"], autocommit=True) as conn:
        return conn.execute(statement).fetchall()


def test_create_prints_the_key_once_and_stores_only_its_hash(env: dict[str, str]) -> None:
    made = run(env, "keys", "create", "--scope", "submit", "--name", "ci")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert made.stdout == key + "\n"  # alone on stdout: KEY=$(taskq keys create ...) works
    assert key.startswith("tq_")
    assert len(key) >= 40
    assert "'ci'" in made.stderr
    assert "only this once" in made.stderr
    stored = rows(env, "SELECT name, scopes, key_hash FROM api_keys")
    assert stored == [("ci", ["submit"], hashlib.sha256(key.encode()).hexdigest())]
    assert key not in str(rows(env, "SELECT * FROM api_keys"))

    several = run(env, "keys", "create", "--scope", "read", "--scope", "submit")
    assert several.returncode == 0, several.stderr
    assert several.stdout.strip() != key
    (generated,) = rows(env, "SELECT name, scopes FROM api_keys WHERE name <> 'ci'")
    assert str(generated[0]).startswith("read-")
    assert generated[1] == ["read", "submit"]


def test_names_are_unique_and_errors_are_one_line(env: dict[str, str]) -> None:
    assert run(env, "keys", "create", "--scope", "admin", "--name", "ops").returncode == 0
    again = run(env, "keys", "create", "--scope", "read", "--name", "ops")
    assert again.returncode == 2
    assert again.stderr.strip() == "taskq: an API key named 'ops' exists already"
    assert again.stdout == ""
    unknown = run(env, "keys", "revoke", "nobody")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "taskq: no API key is named 'nobody'"
    bad_scope = run(env, "keys", "create", "--scope", "root")
    assert bad_scope.returncode == 2
    assert "invalid choice: 'root'" in bad_scope.stderr
    bad_name = run(env, "keys", "create", "--scope", "read", "--name", "has space")
    assert bad_name.returncode == 2
    assert rows(env, "SELECT count(*) FROM api_keys") == [(1,)]


def test_list_never_shows_a_key_tab_separated_or_json(env: dict[str, str]) -> None:
    first = run(env, "keys", "create", "--scope", "read", "--name", "reader").stdout.strip()
    second = run(env, "keys", "create", "--scope", "admin", "--name", "boss").stdout.strip()
    revoked = run(env, "keys", "revoke", "boss")
    assert revoked.returncode == 0
    assert "revoked API key 'boss'" in revoked.stdout
    twice = run(env, "keys", "revoke", "boss")
    assert twice.returncode == 0
    assert "already revoked" in twice.stdout

    listed = run(env, "keys", "list")  # stdout is a pipe: a header line, then tab-separated
    assert listed.returncode == 0, listed.stderr
    header, *lines = [line.split("\t") for line in listed.stdout.splitlines()]
    assert header == ["name", "scopes", "created", "last_used", "revoked"]
    assert [(line[0], line[1], line[3]) for line in lines] == [
        ("reader", "read", ""),
        ("boss", "admin", ""),
    ]
    assert all(len(line) == 5 for line in lines)
    assert lines[0][4] == ""  # not revoked
    assert lines[1][4] != ""  # revoked, with its time

    as_json = json.loads(run(env, "keys", "list", "--json").stdout)
    assert [(k["name"], k["scopes"], k["revoked_at"] is None) for k in as_json] == [
        ("reader", ["read"], True),
        ("boss", ["admin"], False),
    ]
    assert set(as_json[0]) == {"name", "scopes", "created_at", "last_used_at", "revoked_at"}
    for output in (listed.stdout, json.dumps(as_json)):
        assert first not in output
        assert second not in output


def test_api_refuses_to_serve_beyond_loopback_without_a_key(
    env: dict[str, str], processes: Processes, tmp_path: Path
) -> None:
    port = str(free_port())
    refused = run(env, "api", "--host", "0.0.0.0", "--port", port)
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert lines[0].startswith("taskq: refusing to serve on 0.0.0.0 with no API key")
    assert "--insecure" in lines[0]

    short = run({**env, "TASKQ_API_KEYS": "short"}, "api", "--host", "0.0.0.0", "--port", port)
    assert short.returncode == 2
    assert "shorter than 20 characters" in short.stderr
    assert "short" not in short.stderr.replace("shorter", "")

    # --insecure serves, and says so at start.
    api = processes.spawn(
        taskq("api", "--host", "0.0.0.0", "--port", port, "--insecure"), env, "api"
    )

    def up() -> bool:
        assert api.poll() is None, processes.output()
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, what="the insecure API to start")
    log = processes.output()
    assert "--insecure: serving on 0.0.0.0 with NO API key" in log
    assert "the API is OPEN" in log
    # Loopback needs no flag: the open mode is for a developer's own machine.
    other = str(free_port())
    loopback = processes.spawn(taskq("api", "--port", other), env, "api")

    def loopback_up() -> bool:
        assert loopback.poll() is None, processes.output()
        try:
            return httpx.get(f"http://127.0.0.1:{other}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(loopback_up, what="the loopback API to start")


def test_dev_banner_and_logs_hold_no_password(
    servers: Servers, env: dict[str, str], tmp_path: Path
) -> None:
    # The suite's embedded PostgreSQL has a password of its own (embedded/credentials.py); a
    # server given by TASKQ_TEST_DATABASE_URL may trust local connections, so any password we
    # add gets in. Either way the password must never be shown.
    database_url = env["TASKQ_DATABASE_URL"]
    parts = urlsplit(database_url)
    user = parts.username
    if parts.password:
        secret = parts.password
    else:
        secret = "Sup3r-secret-pw"
        scheme, rest = database_url.split("://", 1)
        database_url = f"{scheme}://{user}:{secret}@{rest.split('@', 1)[1]}"
    dev_env = {
        **env,
        "TASKQ_DATABASE_URL": database_url,
        "TASKQ_DATA_DIR": str(tmp_path / "state"),
        "TASKQ_QUEUE": "dev-banner",
        "COLUMNS": "200",
    }
    port = free_port()
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        dev = subprocess.Popen(
            taskq("dev", "--port", str(port), "--workers", "1"),
            env=dev_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: "taskq is running" in log.read_text() or dev.poll() is not None,
            timeout=90,
            what="taskq dev to start",
        )
        assert dev.poll() is None, log.read_text()
        banner = log.read_text()
        assert f"{user}:***@" in banner
        assert "the API is OPEN to anyone on this machine" in banner
        created = httpx.post(
            f"http://127.0.0.1:{port}/tasks/",
            json={"task_type": "FibonacciTask", "input_data": {"n": 3}},
        )
        assert created.status_code == 201
    finally:
        dev.terminate()
        dev.wait(60)
    assert secret not in log.read_text()


def test_list_on_a_terminal_is_a_table(env: dict[str, str]) -> None:
    # Names cannot carry terminal markup: brackets are refused.
    assert run(env, "keys", "create", "--scope", "read", "--name", "[bold]x").returncode == 2
    key = run(env, "keys", "create", "--scope", "read", "--name", "ok").stdout.strip()
    code, screen, errors = on_a_terminal(
        taskq("keys", "list"), {**env, "COLUMNS": "200", "TERM": "xterm"}
    )
    assert code == 0, errors
    assert "API keys" in screen
    assert "last used" in screen
    assert "\t" not in screen
    assert "ok" in screen
    assert "read" in screen
    assert key not in screen


def test_list_fits_an_80_column_terminal_with_whole_short_times(env: dict[str, str]) -> None:
    for name in ("ci-deploy-key", "boss"):
        run(env, "keys", "create", "--scope", "read", "--scope", "submit", "--name", name)
    run(env, "keys", "revoke", "boss")
    with psycopg.connect(env["TASKQ_DATABASE_URL"], autocommit=True) as conn:
        conn.execute("UPDATE api_keys SET last_used_at = now()")
    times = rows(env, "SELECT created_at, last_used_at, revoked_at FROM api_keys ORDER BY id")
    code, screen, errors = on_a_terminal(
        taskq("keys", "list"), {**env, "COLUMNS": "80", "TERM": "xterm", "TZ": "UTC"}
    )
    assert code == 0, errors
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).rstrip() for line in screen.splitlines()]
    assert max(map(len, lines)) <= 80, screen
    body = [line for line in lines if line.startswith("│")]
    assert len(body) == 2, screen  # a line per key: nothing folded
    for line, instants in zip(body, times, strict=True):
        for instant in instants:
            if isinstance(instant, datetime):
                assert instant.astimezone(UTC).strftime("%H:%M:%S") in line, screen
    assert body[0].split("│")[-2].strip() == ""  # the first key is not revoked
