"""An export whose artifact store (S3-compatible) cannot be reached: the attempt fails with an error
saying so and publishes nothing (no artifact row pointing at missing bytes); a store that is back
for the next attempt gets the whole file, as the task's retry policy allows."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from taskq_core.artifacts import ArtifactStore
from tests.conftest import Processes, Servers, free_port, taskq, wait_for
from tests.export.conftest import plugin_env, start_api
from tests.plugins.taskq_testqueries import GATE_LOCK
from tests.relay import Relay
from tests.s3server import S3, s3_server  # noqa: F401  (a fixture)

# Past one upload part (16 MiB), so the store holds half an upload when the export stops at its
# gate, and the rest, sent when the file is closed, meets the outage.
WIDTH = 1000
ROWS = 20_000
GATE = 18_000


def padded_csv(rows: int, width: int) -> bytes:
    """What `padded` exports as CSV."""
    pad = "x" * width
    return ("n,pad\n" + "".join(f"{i},{pad}\n" for i in range(1, rows + 1))).encode()


def submit(api: httpx.Client, params: dict[str, Any]) -> int:
    response = api.post(
        "/tasks/",
        json={"task_type": "ExportTask", "input_data": {"query": "padded", "params": params}},
    )
    assert response.status_code == 201, response.text
    task_id: int = response.json()["id"]
    return task_id


def task(api: httpx.Client, task_id: int) -> dict[str, Any]:
    body: dict[str, Any] = api.get(f"/tasks/{task_id}").json()
    return body


def finished(api: httpx.Client, task_id: int, timeout: float = 120) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = task(api, task_id)
        return body if body["status"] in ("completed", "failed") else None

    found: dict[str, Any] = wait_for(done, timeout=timeout, what=f"export {task_id} to finish")
    return found


def artifact_rows(servers: Servers, task_id: int) -> list[tuple[Any, ...]]:
    return servers.sql(
        "SELECT attempt, name, key, size, sha256 FROM task_artifacts WHERE task_id = %s", (task_id,)
    )


@pytest.fixture
def store(
    s3_server: S3,  # noqa: F811
    clean: Servers,
    export_table: Servers,
    query_site: Path,
    processes: Processes,
    tmp_path: Path,
) -> Iterator[tuple[Relay, dict[str, str], httpx.Client]]:
    """The S3 server behind a relay that can go away, and an API process using it."""
    upstream = s3_server.endpoint.removeprefix("http://").split(":")
    relay = Relay((upstream[0], int(upstream[1])))
    env = plugin_env(
        clean,
        query_site,
        **{**s3_server.env(), "AWS_ENDPOINT_URL": relay.url},
        TASKQ_ARTIFACTS_URL=f"s3://{s3_server.bucket}/{tmp_path.name}",
    )
    api = start_api(processes, env)
    yield relay, env, api
    api.close()
    relay.stop()


def test_an_unreachable_store_fails_the_export_truthfully(
    store: tuple[Relay, dict[str, str], httpx.Client],
    clean: Servers,
    processes: Processes,
) -> None:
    _, env, api = store
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    task_id = submit(api, {"rows": 100, "width": 10})
    processes.spawn(taskq("worker"), {**env, "AWS_ENDPOINT_URL": closed}, "worker")
    body = finished(api, task_id)
    assert body["status"] == "failed"
    assert body["attempts"] == 2  # ExportTask's max_attempts: an outage may pass
    assert [a["outcome"] for a in body["history"]] == ["retry", "failed"]
    for error in (body["error"], *(a["error"] for a in body["history"])):
        assert closed in error["message"], error
        assert "permanent" not in error
    assert body["artifacts"] == []
    assert artifact_rows(clean, task_id) == []
    missing = api.get(f"/tasks/{task_id}/artifacts/padded.csv")
    assert missing.status_code == 404


def gate_waiters(servers: Servers) -> int:
    """Sessions waiting for the gate's advisory lock."""
    rows = servers.sql(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = %s",
        (GATE_LOCK,),
    )
    return int(rows[0][0])


def test_a_store_gone_mid_upload_fails_the_attempt_and_the_retry_completes(
    store: tuple[Relay, dict[str, str], httpx.Client],
    s3_server: S3,  # noqa: F811
    clean: Servers,
    processes: Processes,
    tmp_path: Path,
) -> None:
    relay, env, api = store
    prefix = f"{tmp_path.name}"
    gate = psycopg.connect(clean.database_url, autocommit=True)
    later = psycopg.connect(clean.database_url, autocommit=True)
    try:
        gate.execute("SELECT pg_advisory_lock(%s)", (GATE_LOCK,))
        task_id = submit(api, {"rows": ROWS, "width": WIDTH, "gate": GATE})
        processes.spawn(taskq("worker"), env, "worker")

        # Attempt 1 has sent its first part and waits at the gate: the store goes away.
        fs = s3_server.fs()

        def first_part_stored() -> bool:
            uploads = fs.call_s3(
                "list_multipart_uploads", Bucket=s3_server.bucket, Prefix=f"{prefix}/{task_id}/1/"
            ).get("Uploads", [])
            if not uploads:
                return False
            (upload,) = uploads
            parts = fs.call_s3(
                "list_parts",
                Bucket=s3_server.bucket,
                Key=upload["Key"],
                UploadId=upload["UploadId"],
            )
            return len(parts.get("Parts", [])) == 1

        wait_for(first_part_stored, timeout=60, what="attempt 1's first part to be stored")
        relay.stop()
        # The gate opens for attempt 1 only: the next holder (queued behind it) keeps it shut
        # for attempt 2 until the store is back.
        holder = threading.Thread(
            target=lambda: later.execute("SELECT pg_advisory_lock(%s)", (GATE_LOCK,))
        )
        holder.start()
        wait_for(lambda: gate_waiters(clean) == 2, what="the next holder to queue at the gate")
        gate.execute("SELECT pg_advisory_unlock(%s)", (GATE_LOCK,))

        def attempt_failed() -> dict[str, Any] | None:
            body = task(api, task_id)
            return body if body["history"] else None

        failed = wait_for(attempt_failed, timeout=120, what="attempt 1 to fail")
        holder.join(10)
        assert not holder.is_alive()
        (first,) = failed["history"]
        assert first["outcome"] == "retry"
        assert relay.url in first["error"]["message"], first["error"]
        assert "permanent" not in first["error"]
        assert failed["artifacts"] == []
        assert artifact_rows(clean, task_id) == []
        assert s3_server.keys(f"{prefix}/{task_id}") == []

        relay.start()
        later.execute("SELECT pg_advisory_unlock(%s)", (GATE_LOCK,))
        done = finished(api, task_id)
    finally:
        gate.close()
        later.close()

    assert done["status"] == "completed", done["error"]
    assert done["attempts"] == 2
    assert [a["outcome"] for a in done["history"]] == ["retry", "completed"]
    expected = padded_csv(ROWS, WIDTH)
    (listed,) = done["artifacts"]
    assert listed["size"] == len(expected)
    download = api.get(f"/tasks/{task_id}/artifacts/padded.csv")
    assert download.status_code == 200
    assert download.content == expected
    ((attempt, name, key, size, _),) = artifact_rows(clean, task_id)
    assert (attempt, name, size) == (2, "padded.csv", len(expected))
    # The bytes the row points at, and nothing else: attempt 1's half upload is gone too.
    assert s3_server.keys(f"{prefix}/{task_id}") == [f"{s3_server.bucket}/{prefix}/{key}"]
    assert [k for k in s3_server.pending_uploads() if k.startswith(f"{prefix}/")] == []


def test_deleting_a_prefix_aborts_the_unfinished_uploads_under_it_only(
    s3_server: S3,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    store = ArtifactStore(f"s3://{s3_server.bucket}/{tmp_path.name}")
    fs = s3_server.fs()
    for key in ("5/1/a.csv", "5/10/b.csv", "5/2/c.csv", "50/1/d.csv"):
        fs.call_s3("create_multipart_upload", Bucket=s3_server.bucket, Key=f"{tmp_path.name}/{key}")

    def pending() -> set[str]:
        mine = f"{tmp_path.name}/"
        return {k.removeprefix(mine) for k in s3_server.pending_uploads() if k.startswith(mine)}

    assert pending() == {"5/1/a.csv", "5/10/b.csv", "5/2/c.csv", "50/1/d.csv"}
    store.delete_prefix("5/1")  # attempt 1 of task 5: not attempt 10
    assert pending() == {"5/10/b.csv", "5/2/c.csv", "50/1/d.csv"}
    store.delete_prefix("5")  # task 5: not task 50
    assert pending() == {"50/1/d.csv"}
    store.delete_prefix("50/1/d.csv")  # one file's key
    assert pending() == set()
