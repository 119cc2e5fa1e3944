"""API keys over real HTTP: the 401/403 matrix per scope and route, revocation, TASKQ_API_KEYS,
idempotency per key, tracebacks for admin keys only, and refusing to serve open beyond loopback.

These run their own API process on a database of their own: the session's `api_server` runs open,
and a key in its table would close it for every other test.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from taskq_core.db import engines
from taskq_core.processes import spawn
from tests.conftest import Processes, Servers, create_keys, free_port, taskq, wait_for

ENV_KEY = "env-key-" + "k" * 32  # a TASKQ_API_KEYS entry: every scope
FIB = {"task_type": "FibonacciTask", "input_data": {"n": 10}, "priority": 4}
QUEUE = "auth"  # Redis lists of their own beside the shared API's


@pytest.fixture(scope="module")
def database(servers: Servers) -> Iterator[str]:
    """A fresh, migrated database on the session's PostgreSQL."""
    name = f"taskq_auth_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(servers.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = servers.database_url.rsplit("/", 1)[0] + f"/{name}"
    engines.upgrade(url)
    yield url
    with psycopg.connect(servers.database_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@dataclass
class Keyed:
    url: str
    database_url: str
    env: dict[str, str]
    keys: dict[str, str]  # name -> key
    log: Path

    def sql(self, statement: str, params: object = None) -> list[tuple[object, ...]]:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            cursor = conn.execute(statement, params)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    def call(self, method: str, path: str, key: str | None = None, **kw: object) -> httpx.Response:
        headers = dict(kw.pop("headers", {}) or {})  # type: ignore[call-overload]
        if key is not None:
            headers["Authorization"] = f"Bearer {self.keys.get(key, key)}"
        return httpx.request(method, self.url + path, headers=headers, timeout=10, **kw)  # type: ignore[arg-type]


def create_key(env: dict[str, str], *args: str) -> str:
    (key,) = create_keys(env, [*args])
    return key


def start_api(env: dict[str, str], log: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with log.open("wb") as out:
        proc = spawn(
            taskq("api", "--port", str(port), *args),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            new_session=False,
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, what="the keyed API to start")
    return proc, url


@pytest.fixture(scope="module")
def keyed(
    servers: Servers,
    sites: dict[str, Path],
    database: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Keyed]:
    """An API with keys: one per scope in the table, and one in TASKQ_API_KEYS."""
    env = servers.env(sites["taskq-testkit"], TASKQ_DATABASE_URL=database, TASKQ_QUEUE=QUEUE)
    names = {"read": "read", "submit": "submit", "admin": "admin", "submit2": "submit"}
    made = create_keys(env, *(["--scope", scope, "--name", name] for name, scope in names.items()))
    keys = dict(zip(names, made, strict=True))
    keys["env"] = ENV_KEY
    keys["bogus"] = "tq_" + "b" * 43
    env["TASKQ_API_KEYS"] = f" {ENV_KEY} ,"
    log = tmp_path_factory.mktemp("keyed") / "api.log"
    proc, url = start_api(env, log)
    yield Keyed(url, database, env, keys, log)
    proc.terminate()
    proc.wait(15)


def task_id(keyed: Keyed, key: str = "admin") -> int:
    created = keyed.call("POST", "/tasks/", key, json=FIB)
    assert created.status_code == 201, created.text
    return int(created.json()["id"])


# (method, path, json body) -> which keys pass; every other key gets 403, none or bogus 401.
ROUTES: list[tuple[str, str, object, set[str]]] = [
    ("GET", "/tasks/", None, {"read", "admin", "env"}),
    ("GET", "/tasks/{id}", None, {"read", "admin", "env"}),  # submit: see its own, below
    ("GET", "/task-types", None, {"read", "admin", "env"}),
    ("GET", "/workers", None, {"read", "admin", "env"}),
    ("POST", "/tasks/", FIB, {"submit", "admin", "env"}),
    ("POST", "/tasks/batch", {"tasks": [FIB]}, {"submit", "admin", "env"}),
    ("POST", "/tasks/{id}/cancel", None, {"admin", "env"}),
    ("GET", "/schedules", None, {"read", "admin", "env"}),
    ("POST", "/tasks/retry?task_type=NoSuchTask", None, {"admin", "env"}),
    ("POST", "/tasks/cancel?task_type=NoSuchTask", None, {"admin", "env"}),
    ("POST", "/task-types/FibonacciTask/pause", None, {"admin", "env"}),
    ("POST", "/task-types/FibonacciTask/resume", None, {"admin", "env"}),
]


@pytest.mark.parametrize(("method", "path", "body", "allowed"), ROUTES)
def test_each_scope_reaches_exactly_its_routes(
    keyed: Keyed, method: str, path: str, body: object, allowed: set[str]
) -> None:
    for key in ("read", "submit", "admin", "env", "bogus", None):
        target = path.replace("{id}", str(task_id(keyed)))
        response = keyed.call(method, target, key, json=body)
        if key in allowed:
            assert response.status_code in (200, 201), (key, response.text)
        elif key in (None, "bogus"):
            assert response.status_code == 401, (key, response.text)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        else:
            assert response.status_code == 403, (key, response.text)
            assert "insufficient_scope" in response.headers["WWW-Authenticate"]
            assert "scope" in response.json()["detail"]


def test_only_admin_keys_change_schedules(keyed: Keyed) -> None:
    def expect(response: httpx.Response, key: str | None, allowed: int) -> None:
        wanted = allowed if key in ("admin", "env") else 401 if key in (None, "bogus") else 403
        assert response.status_code == wanted, (key, response.text)

    body = {"cron": "0 0 1 1 *", "task_type": "FibonacciTask", "input_data": {"n": 1}}
    for key in ("read", "submit", "admin", "env", "bogus", None):
        name = f"auth-{key}"
        expect(keyed.call("POST", "/schedules", key, json={**body, "name": name}), key, 201)
        admin_made = f"auth-admin-for-{key}"
        assert keyed.call("POST", "/schedules", "admin", json={**body, "name": admin_made})
        path = f"/schedules/{admin_made}"
        expect(keyed.call("PATCH", path, key, json={"paused": True}), key, 200)
        expect(keyed.call("DELETE", path, key), key, 204)
        readable = keyed.call("GET", path, key)
        assert readable.status_code == (
            401
            if key in (None, "bogus")
            else 403
            if key == "submit"
            else 404
            if key in ("admin", "env")
            else 200
        ), (key, readable.text)


def test_the_fast_path_checks_keys_too(keyed: Keyed) -> None:
    # A JSON POST without Idempotency-Key is served below FastAPI; its answers must not differ.
    raw = {"Content-Type": "application/json"}
    for key, status in (("submit", 201), ("read", 403), ("bogus", 401), (None, 401)):
        before = keyed.sql("SELECT count(*) FROM tasks")[0][0]
        response = keyed.call("POST", "/tasks/", key, content=json.dumps(FIB).encode(), headers=raw)
        assert response.status_code == status, (key, response.text)
        after = keyed.sql("SELECT count(*) FROM tasks")[0][0]
        assert after == before + (1 if status == 201 else 0)
    no_scheme = keyed.call(
        "POST", "/tasks/", headers={**raw, "Authorization": keyed.keys["submit"]}, json=FIB
    )
    assert no_scheme.status_code == 401


def test_health_and_ready_stay_open(keyed: Keyed) -> None:
    assert keyed.call("GET", "/health").status_code == 200
    assert keyed.call("GET", "/ready").status_code == 200


def test_openapi_shows_the_bearer_scheme_on_each_protected_route(keyed: Keyed) -> None:
    spec = keyed.call("GET", "/openapi.json").json()
    assert spec["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key from `taskq keys create` or TASKQ_API_KEYS.",
    }
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if path in ("/health", "/ready"):
                assert "security" not in operation, path
                continue
            assert operation["security"] == [{"ApiKey": []}], (method, path)
            assert {"401", "403"} <= set(operation["responses"]), (method, path)


def test_artifact_downloads_take_a_read_key_or_the_submitters(keyed: Keyed) -> None:
    other = task_id(keyed, "submit2")
    path = f"/tasks/{other}/artifacts/report.csv"
    for key, status in (
        (None, 401),
        ("bogus", 401),
        ("submit", 403),  # not its task: it learns nothing of the task's artifacts
        ("submit2", 404),
        ("read", 404),
        ("admin", 404),
        ("env", 404),
    ):
        response = keyed.call("GET", path, key)
        assert response.status_code == status, (key, response.text)
    assert "no artifact named 'report.csv'" in keyed.call("GET", path, "read").json()["detail"]
    assert keyed.call("GET", "/tasks/999999/artifacts/x", "read").status_code == 404


def test_a_submit_key_reads_only_the_tasks_it_submitted(keyed: Keyed) -> None:
    own = task_id(keyed, "submit")
    other = task_id(keyed, "submit2")
    assert keyed.call("GET", f"/tasks/{own}", "submit").status_code == 200
    refused = keyed.call("GET", f"/tasks/{other}", "submit")
    assert refused.status_code == 403
    assert "input_data" not in refused.text
    assert keyed.sql("SELECT submitted_by FROM tasks WHERE id = %s", [own]) == [("key:submit",)]


def test_idempotency_keys_belong_to_the_key_that_used_them(keyed: Keyed) -> None:
    header = {"Idempotency-Key": f"order-{uuid.uuid4().hex}"}
    first = keyed.call("POST", "/tasks/", "submit", json=FIB, headers=header)
    assert first.status_code == 201
    # Another client cannot claim (409) or read back (200) the same key: it gets its own task.
    other_body = {**FIB, "input_data": {"n": 11}}
    theirs = keyed.call("POST", "/tasks/", "submit2", json=other_body, headers=header)
    assert theirs.status_code == 201, theirs.text
    assert theirs.json()["id"] != first.json()["id"]
    env = keyed.call("POST", "/tasks/", "env", json=FIB, headers=header)
    assert env.status_code == 201
    assert len({first.json()["id"], theirs.json()["id"], env.json()["id"]}) == 3
    # The owner's replay is still a replay, and a changed body still a conflict.
    replay = keyed.call("POST", "/tasks/", "submit", json=FIB, headers=header)
    assert (replay.status_code, replay.json()["id"]) == (200, first.json()["id"])
    assert (
        keyed.call("POST", "/tasks/", "submit", json=other_body, headers=header).status_code == 409
    )
    owners = keyed.sql(
        "SELECT submitted_by FROM tasks WHERE idempotency_key = %s ORDER BY id",
        [header["Idempotency-Key"]],
    )
    assert [o[0] for o in owners][:2] == ["key:submit", "key:submit2"]
    assert str(owners[2][0]).startswith("env:")
    assert ENV_KEY not in str(owners)


def test_only_admin_keys_see_tracebacks(keyed: Keyed, processes: Processes) -> None:
    failing = keyed.call(
        "POST",
        "/tasks/",
        "submit",
        json={
            "task_type": "FailTask",
            "input_data": {"message": "no luck at postgresql://app:Pa55word@db/x"},
            "max_attempts": 1,
        },
    )
    assert failing.status_code == 201
    number = failing.json()["id"]
    processes.spawn(taskq("worker", "--processes", "1"), keyed.env, "worker")
    wait_for(
        lambda: keyed.sql("SELECT status FROM tasks WHERE id = %s", [number]) == [("failed",)],
        timeout=60,
        what="FailTask to fail",
    )
    admin = keyed.call("GET", f"/tasks/{number}", "admin").json()
    assert admin["error"]["type"] == "ValueError"
    # A password quoted by a task's own error is masked before it is stored.
    assert admin["error"]["message"] == "no luck at postgresql://app:***@db/x"
    assert "Pa55word" not in str(keyed.sql("SELECT error FROM tasks WHERE id = %s", [number]))
    assert "Traceback" in admin["error"]["traceback"]
    assert "Traceback" in admin["history"][-1]["error"]["traceback"]
    for key in ("read", "submit"):
        shown = keyed.call("GET", f"/tasks/{number}", key).json()
        assert shown["error"]["type"] == "ValueError"
        assert "no luck" in shown["error"]["message"]
        assert shown["error"]["traceback"] == ""
        assert all(h["error"] is None or h["error"]["traceback"] == "" for h in shown["history"])
    listed = keyed.call("GET", "/tasks/?status=failed", "read").json()["tasks"]
    assert listed
    assert all("error" not in t for t in listed)  # listings are summaries: no error at all
    listed = keyed.call("GET", "/tasks/?status=failed", "admin").json()["tasks"]
    assert listed
    assert all("error" not in t for t in listed)  # admin keys read it with GET /tasks/{id}


def test_a_revoked_key_stops_working_within_the_cache_expiry(keyed: Keyed) -> None:
    name = f"short-{uuid.uuid4().hex[:6]}"
    key = create_key(keyed.env, "--scope", "read", "--name", name)
    # A new key works at once (an unknown key reloads the cache, at most once a second).
    wait_for(lambda: keyed.call("GET", "/tasks/", key).status_code == 200, timeout=5)
    wait_for(
        lambda: (
            keyed.sql("SELECT last_used_at IS NOT NULL FROM api_keys WHERE name = %s", [name])
            == [(True,)]
        ),
        timeout=10,
        what="last_used_at to be recorded",
    )
    done = subprocess.run(
        taskq("keys", "revoke", str(name)), env=keyed.env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    refused = wait_for(
        lambda: (r := keyed.call("GET", "/tasks/", key)).status_code == 401 and r,
        timeout=15,
        what="the revoked key to be refused",
    )
    assert "revoked" in refused.json()["detail"]
    # Keys that were not revoked keep working.
    assert keyed.call("GET", "/tasks/", "read").status_code == 200


def test_no_key_reaches_the_log(keyed: Keyed) -> None:
    keyed.call("GET", "/tasks/", "bogus")
    keyed.call("GET", "/tasks/", "read")
    log = keyed.log.read_text()
    assert "API keys exist" in log
    for key in keyed.keys.values():
        assert key not in log
