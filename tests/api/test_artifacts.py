"""ctx.artifact through real workers into a local folder and a real S3 server (moto): listed on
the completed task, downloaded whole or by range, never visible from a failed attempt, deleted
with their task."""

from __future__ import annotations

import hashlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    Api,
    Processes,
    Servers,
    Workers,
    free_port,
    taskq,
    wait_for,
)
from tests.plugins.taskq_longwork import pattern
from tests.s3server import S3, s3_server  # noqa: F401  (a fixture)


@pytest.fixture
def long_workers(clean: Servers, processes: Processes, sites: Any) -> Workers:
    return Workers(clean, processes, [sites["taskq-testkit"], sites["taskq-longwork"]])


def submit(api: Api, task_type: str, input_data: dict[str, Any]) -> int:
    response = api.client.post("/tasks/", json={"task_type": task_type, "input_data": input_data})
    assert response.status_code == 201, response.text
    task_id: int = response.json()["id"]
    return task_id


def finished(api: Api, task_id: int) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body: dict[str, Any] = api.client.get(f"/tasks/{task_id}").json()
        return body if body["status"] in ("completed", "failed") else None

    found: dict[str, Any] = wait_for(done, timeout=30, what=f"task {task_id} to finish")
    return found


def _deletions_queued(servers: Servers) -> int:
    count: int = servers.sql("SELECT count(*) FROM artifact_deletions")[0][0]
    return count


def check_download(api: Api, task_id: int, name: str, expected: bytes) -> None:
    whole = api.client.get(f"/tasks/{task_id}/artifacts/{name}")
    assert whole.status_code == 200
    assert whole.content == expected
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["etag"] == f'"{hashlib.sha256(expected).hexdigest()}"'
    size = len(expected)
    part = api.client.get(f"/tasks/{task_id}/artifacts/{name}", headers={"Range": "bytes=10-99"})
    assert part.status_code == 206
    assert part.content == expected[10:100]
    assert part.headers["content-range"] == f"bytes 10-99/{size}"
    tail = api.client.get(f"/tasks/{task_id}/artifacts/{name}", headers={"Range": "bytes=-7"})
    assert tail.status_code == 206
    assert tail.content == expected[-7:]
    rest = api.client.get(
        f"/tasks/{task_id}/artifacts/{name}", headers={"Range": f"bytes={size - 3}-"}
    )
    assert rest.status_code == 206
    assert rest.content == expected[-3:]
    past = api.client.get(f"/tasks/{task_id}/artifacts/{name}", headers={"Range": f"bytes={size}-"})
    assert past.status_code == 416
    assert "outside" in past.json()["detail"]


@pytest.mark.parametrize("task_type", ["ArtifactTask", "AsyncArtifactTask"])
def test_a_completed_task_lists_and_serves_its_artifacts(
    api: Api, long_workers: Workers, task_type: str
) -> None:
    size = 3 * 65536 + 17
    wanted = {"name": "report.csv", "size": size, "content_type": "text/csv", "also": "n"}
    task_id = submit(api, task_type, wanted)
    long_workers.start(1, 4, TASKQ_ARTIFACTS_URL=str(api.artifacts))
    body = finished(api, task_id)
    assert body["status"] == "completed", body["error"]
    expected = pattern(size)
    listed = {a["name"]: a for a in body["artifacts"]}
    assert set(listed) == {"report.csv", "n"}
    assert listed["report.csv"]["size"] == size
    assert listed["report.csv"]["sha256"] == hashlib.sha256(expected).hexdigest()
    assert listed["report.csv"]["content_type"] == "text/csv"
    assert listed["n"]["content_type"] == "text/plain; charset=utf-8"
    check_download(api, task_id, "report.csv", expected)
    note = api.client.get(f"/tasks/{task_id}/artifacts/n")
    assert note.content == b"hello\n"
    assert note.headers["content-type"].startswith("text/plain")
    assert note.headers["content-disposition"] == 'attachment; filename="n"'


@pytest.mark.parametrize("task_type", ["ArtifactTask", "AsyncArtifactTask"])
@pytest.mark.parametrize("fail", ["inside", "after"])
def test_a_failed_attempt_leaves_nothing_visible_nor_stored(
    api: Api, long_workers: Workers, task_type: str, fail: str
) -> None:
    task_id = submit(api, task_type, {"name": "half.bin", "size": 500_000, "fail": fail})
    long_workers.start(1, 4, TASKQ_ARTIFACTS_URL=str(api.artifacts))
    body = finished(api, task_id)
    assert body["status"] == "failed"
    assert body["artifacts"] == []
    missing = api.client.get(f"/tasks/{task_id}/artifacts/half.bin")
    assert missing.status_code == 404
    assert "no artifact named 'half.bin'" in missing.json()["detail"]
    assert not list((api.artifacts / str(task_id)).rglob("*.bin"))


def test_a_killed_runner_leaves_nothing_stored(api: Api, long_workers: Workers) -> None:
    body = {
        "task_type": "ArtifactTask",
        "input_data": {"name": "slow.bin", "size": 400_000, "chunk": 10_000, "hang": True},
        "timeout_seconds": 5,
        "max_attempts": 1,
    }
    created = api.client.post("/tasks/", json=body)
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    long_workers.start(1, 4, TASKQ_ARTIFACTS_URL=str(api.artifacts))
    written = api.artifacts / str(task_id) / "1" / "slow.bin"
    wait_for(written.exists, what="the runner to start writing")
    failed = finished(api, task_id)
    assert failed["status"] == "failed"
    assert failed["error"]["type"] == "TaskTimeoutError"
    assert failed["artifacts"] == []
    # The runner wrote half before it was killed; the worker deletes it in the background.
    wait_for(
        lambda: not list((api.artifacts / str(task_id)).rglob("slow.bin")),
        what="the killed attempt's file to be deleted",
    )


def test_a_dead_workers_half_file_goes_when_a_later_attempt_completes(
    api: Api, long_workers: Workers
) -> None:
    body = {
        "task_type": "ArtifactTask",
        "input_data": {"name": "slow.bin", "size": 400_000, "chunk": 10_000, "hang": True},
        "max_attempts": 2,
    }
    created = api.client.post("/tasks/", json=body)
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    env = {
        "TASKQ_ARTIFACTS_URL": str(api.artifacts),
        "TASKQ_LEASE_SECONDS": "2",
        "TASKQ_SWEEP_INTERVAL_SECONDS": "0.5",
    }
    (first,) = long_workers.start(1, 4, **env)
    half = api.artifacts / str(task_id) / "1" / "slow.bin"
    wait_for(half.exists, what="the first attempt to start writing")
    first.send_signal(signal.SIGKILL)  # its runner dies with it; nobody discards the file
    first.wait(10)
    long_workers.start(1, 4, **env)
    done = finished(api, task_id)
    assert done["status"] == "completed", done["error"]
    assert done["attempts"] == 2
    (listed,) = done["artifacts"]
    assert listed["size"] == 400_000
    assert not half.exists()
    assert (api.artifacts / str(task_id) / "2" / "slow.bin").stat().st_size == 400_000


def test_artifact_names_are_one_safe_file_name(api: Api, long_workers: Workers) -> None:
    ids = [submit(api, "BadNameTask", {"name": name}) for name in ("../x", ".hidden", "a/b", "")]
    long_workers.start(1, 4, TASKQ_ARTIFACTS_URL=str(api.artifacts))
    for task_id in ids:
        body = finished(api, task_id)
        assert body["status"] == "failed"
        assert body["error"]["type"] == "ArtifactNameError"
    assert not [p for p in api.artifacts.parent.rglob("x") if p.is_file()]
    for path in ("..%2Fx", "%2E%2E", ".hidden"):
        response = api.client.get(f"/tasks/{ids[0]}/artifacts/{path}")
        assert response.status_code in (404, 422), (path, response.status_code)


def test_deleting_a_task_deletes_its_stored_artifacts(
    api: Api, long_workers: Workers, clean: Servers
) -> None:
    task_id = submit(api, "ArtifactTask", {"name": "gone.bin", "size": 1000})
    long_workers.start(
        1, 4, TASKQ_ARTIFACTS_URL=str(api.artifacts), TASKQ_SWEEP_INTERVAL_SECONDS="0.5"
    )
    assert finished(api, task_id)["status"] == "completed"
    folder = api.artifacts / str(task_id)
    assert (folder / "1" / "gone.bin").stat().st_size == 1000
    clean.sql("DELETE FROM tasks WHERE id = %s", (task_id,))  # as retention or purge would
    wait_for(lambda: not folder.exists(), what="the sweeper to delete the stored artifact")
    # The bytes go first, then the queue row (in the next statement): the folder can be gone a
    # moment before the row is.
    wait_for(lambda: _deletions_queued(clean) == 0, what="the deletion to leave the queue")


def test_retention_deletes_artifacts_with_their_task(
    api: Api, long_workers: Workers, clean: Servers
) -> None:
    task_id = submit(api, "ArtifactTask", {"name": "old.bin", "size": 1000})
    long_workers.start(
        1,
        4,
        TASKQ_ARTIFACTS_URL=str(api.artifacts),
        TASKQ_SWEEP_INTERVAL_SECONDS="0.5",
        TASKQ_RETENTION_COMPLETED="2s",
    )
    folder = api.artifacts / str(task_id)
    wait_for((folder / "1" / "old.bin").exists, what="the artifact to be written")
    wait_for(lambda: not folder.exists(), timeout=30, what="retention to delete the artifact")
    assert clean.sql("SELECT count(*) FROM tasks WHERE id = %s", (task_id,)) == [(0,)]
    wait_for(lambda: _deletions_queued(clean) == 0, what="the deletion to leave the queue")


# ---- S3-compatible storage


@pytest.fixture
def s3_api(
    s3_server: S3,  # noqa: F811
    clean: Servers,
    sites: Any,
    processes: Processes,
    tmp_path: Path,
) -> Iterator[tuple[Api, dict[str, str]]]:
    """An API process (and the env for its workers) storing artifacts in the S3 server."""
    env = {
        **s3_server.env(),
        "TASKQ_ARTIFACTS_URL": f"s3://{s3_server.bucket}/{tmp_path.name}",
    }
    port = free_port()
    proc = processes.spawn(
        taskq("api", "--port", str(port)),
        clean.env(sites["taskq-testkit"], sites["taskq-longwork"], **env),
        "api-s3",
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(processes.output())
        try:
            return client.get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, what="the API to start")
    yield Api(str(client.base_url), client, tmp_path / "unused", Path(tmp_path.name)), env
    client.close()
    if proc.poll() is None:
        proc.terminate()
        proc.wait(15)


def test_artifacts_in_s3_compatible_storage(
    s3_api: tuple[Api, dict[str, str]],
    s3_server: S3,  # noqa: F811
    long_workers: Workers,
    clean: Servers,
) -> None:
    api, env = s3_api
    prefix = str(api.artifacts)
    # Past one upload part (16 MiB): a multipart upload, completed; and one aborted halfway.
    size = 17 * 1024 * 1024 + 5
    good = submit(api, "ArtifactTask", {"name": "big.bin", "size": size, "chunk": 1 << 20})
    half = {"name": "half.bin", "size": size * 2, "chunk": 1 << 20, "fail": "inside"}
    bad = submit(api, "ArtifactTask", half)
    small = {"name": "small.bin", "size": 300_000, "fail": "inside"}
    bad_async = submit(api, "AsyncArtifactTask", small)
    long_workers.start(1, 4, TASKQ_SWEEP_INTERVAL_SECONDS="0.5", **env)
    body = finished(api, good)
    assert body["status"] == "completed", body["error"]
    expected = pattern(size)
    (listed,) = body["artifacts"]
    assert listed["size"] == size
    assert listed["sha256"] == hashlib.sha256(expected).hexdigest()
    check_download(api, good, "big.bin", expected)
    for failed in (bad, bad_async):
        assert finished(api, failed)["status"] == "failed"
        assert s3_server.keys(f"{prefix}/{failed}") == []
    assert s3_server.pending_uploads() == []
    assert s3_server.keys(f"{prefix}/{good}") == [f"{s3_server.bucket}/{prefix}/{good}/1/big.bin"]
    clean.sql("DELETE FROM tasks WHERE id = %s", (good,))
    wait_for(lambda: s3_server.keys(f"{prefix}/{good}") == [], what="the stored artifact to go")


def test_bytes_gone_from_the_store_are_a_404_not_a_broken_stream(
    s3_api: tuple[Api, dict[str, str]],
    long_workers: Workers,
    clean: Servers,
    s3_server: S3,  # noqa: F811
) -> None:
    api, env = s3_api
    task_id = submit(api, "ArtifactTask", {"name": "a.bin", "size": 10})
    long_workers.start(1, 4, **env)
    assert finished(api, task_id)["status"] == "completed"
    # The object removed behind taskq's back: the row stays, the bytes are gone.
    import s3fs

    fs = s3fs.S3FileSystem(key="x", secret="y", endpoint_url=s3_server.endpoint)
    fs.rm(f"{s3_server.bucket}/{api.artifacts}/{task_id}", recursive=True)
    response = api.client.get(f"/tasks/{task_id}/artifacts/a.bin")
    assert response.status_code == 404
    assert "are gone" in response.json()["detail"]
