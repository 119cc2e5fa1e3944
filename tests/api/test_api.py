"""The REST API over real HTTP: creating, reading and listing tasks; every bad input refused."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.conftest import Api, Servers

FIB = {"task_type": "FibonacciTask", "input_data": {"n": 10}, "priority": 4}


def nothing_written(servers: Servers) -> None:
    assert servers.sql("SELECT count(*) FROM tasks") == [(0,)]
    with servers.redis() as client:
        assert client.keys("taskq:*") == []


def test_create_returns_the_pending_task_and_queues_its_id(api: Api, clean: Servers) -> None:
    response = api.client.post("/tasks/", json=FIB)
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "task_type", "status", "priority", "created_at"}
    assert body["task_type"] == "FibonacciTask"
    assert body["status"] == "pending"
    assert body["priority"] == 4
    assert clean.sql("SELECT status, input_data FROM tasks WHERE id = %s", [body["id"]]) == [
        ("pending", {"n": 10})
    ]
    with clean.redis() as client:
        assert client.lrange("taskq:{default}:4", 0, -1) == [str(body["id"])]


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json"},  # served below FastAPI (api/fastpath.py)
        {"Content-Type": "application/json; charset=utf-8"},
        {"Content-Type": "application/json", "Idempotency-Key": "k-1"},  # through the route
    ],
)
def test_both_paths_for_a_new_task_answer_alike(
    api: Api, clean: Servers, headers: dict[str, str]
) -> None:
    response = api.client.post("/tasks/", content=json.dumps(FIB).encode(), headers=headers)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"id", "task_type", "status", "priority", "created_at"}
    assert (body["task_type"], body["status"], body["priority"]) == ("FibonacciTask", "pending", 4)
    assert clean.sql("SELECT id, input_data FROM tasks") == [(body["id"], {"n": 10})]


@pytest.mark.parametrize("key", [None, "k-2"])  # below FastAPI, and through the route
def test_run_at_is_an_rfc3339_instant_not_a_number(
    api: Api, clean: Servers, key: str | None
) -> None:
    headers = {"Idempotency-Key": key} if key else {}
    for run_at in (1700000000, 0.5, "1700000000", "2030-01-01"):
        body = {**FIB, "run_at": run_at}
        response = api.client.post("/tasks/", json=body, headers=headers)
        assert response.status_code == 422, response.text
        assert _errors(response)[0]["loc"] == ["body", "run_at"]
    nothing_written(clean)
    fine = api.client.post("/tasks/", json={**FIB, "run_at": "2030-01-01T00:00:00Z"})
    assert fine.status_code == 201, fine.text
    # RFC 3339 allows offsets PostgreSQL does not (over 15:59): taken, as the same instant in UTC.
    far = api.client.post("/tasks/", json={**FIB, "run_at": "2030-01-01T00:00:00+23:59"})
    assert far.status_code == 201, far.text
    row = api.client.get(f"/tasks/{far.json()['id']}").json()
    assert row["run_at"] == "2029-12-31T00:01:00Z"
    # ...unless that instant is outside the years a datetime holds.
    early = api.client.post("/tasks/", json={**FIB, "run_at": "0001-01-01T00:00:00+01:00"})
    assert early.status_code == 422, early.text


def test_a_body_not_declared_json_is_422(api: Api, clean: Servers) -> None:
    response = api.client.post("/tasks/", content=json.dumps(FIB).encode())
    assert response.status_code == 422
    assert _errors(response)[0]["loc"] == ["body"]
    nothing_written(clean)


def test_priority_defaults_to_the_task_types(api: Api) -> None:
    fib = api.client.post("/tasks/", json={"task_type": "FibonacciTask", "input_data": {"n": 1}})
    sleep = api.client.post("/tasks/", json={"task_type": "AsyncSleepTask", "input_data": {}})
    assert fib.json()["priority"] == 3
    assert sleep.json()["priority"] == 2  # AsyncSleepTask declares priority = 2


def test_get_shows_every_field(api: Api) -> None:
    created = api.client.post("/tasks/", json=FIB).json()
    response = api.client.get(f"/tasks/{created['id']}")
    assert response.status_code == 200
    task = response.json()
    for key in ("id", "task_type", "status", "priority", "input_data", "result", "error"):
        assert key in task
    for key in ("attempts", "created_at", "started_at", "finished_at"):
        assert key in task
    assert task["input_data"] == {"n": 10}
    assert task["result"] is None
    assert task["attempts"] == 0


def test_list_is_newest_first_filtered_and_paginated(api: Api) -> None:
    ids = [
        api.client.post(
            "/tasks/", json={"task_type": "FibonacciTask", "input_data": {"n": i}, "priority": p}
        ).json()["id"]
        for i, p in enumerate([1, 5, 5, 2, 5])
    ]
    page = api.client.get("/tasks/", params={"limit": 2}).json()
    assert [t["id"] for t in page["tasks"]] == [ids[4], ids[3]]
    second = api.client.get("/tasks/", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert [t["id"] for t in second["tasks"]] == [ids[2], ids[1]]
    last = api.client.get("/tasks/", params={"limit": 2, "cursor": second["next_cursor"]}).json()
    assert [t["id"] for t in last["tasks"]] == [ids[0]]
    assert last["next_cursor"] is None
    fives = api.client.get("/tasks/", params={"priority": 5}).json()["tasks"]
    assert [t["id"] for t in fives] == [ids[4], ids[2], ids[1]]
    assert api.client.get("/tasks/", params={"status": "completed"}).json()["tasks"] == []
    by_type = api.client.get("/tasks/", params={"task_type": "FailTask"}).json()["tasks"]
    assert by_type == []
    assert api.client.get("/tasks/", params={"status": "bogus"}).status_code == 422
    assert api.client.get("/tasks/", params={"limit": 0}).status_code == 422


def _errors(response: object) -> list[dict[str, object]]:
    detail = response.json()["detail"]  # type: ignore[attr-defined]
    assert isinstance(detail, list)
    return detail


def test_unknown_task_type_is_422_naming_the_known_ones(api: Api, clean: Servers) -> None:
    response = api.client.post("/tasks/", json={"task_type": "NoSuchTask", "input_data": {}})
    assert response.status_code == 422
    (error,) = _errors(response)
    assert error["loc"] == ["body", "task_type"]
    assert "NoSuchTask" in str(error["msg"])
    assert "FibonacciTask" in str(error["msg"])
    nothing_written(clean)


@pytest.mark.parametrize(
    ("input_data", "loc"),
    [
        ({"n": -1}, ["body", "input_data", "n"]),
        ({"n": 10_001}, ["body", "input_data", "n"]),
        ({"n": "ten"}, ["body", "input_data", "n"]),
        ({}, ["body", "input_data", "n"]),
        ({"n": 3, "extra": 1}, ["body", "input_data", "extra"]),
    ],
)
def test_input_failing_the_model_is_422_with_the_field_path(
    api: Api, clean: Servers, input_data: dict[str, object], loc: list[str]
) -> None:
    response = api.client.post(
        "/tasks/", json={"task_type": "FibonacciTask", "input_data": input_data}
    )
    assert response.status_code == 422
    assert loc in [e["loc"] for e in _errors(response)]
    nothing_written(clean)


def test_extra_fields_are_refused_even_when_the_plugin_allows_them(
    api: Api, clean: Servers
) -> None:
    # SleepInput does not forbid extra fields itself; the host does.
    response = api.client.post(
        "/tasks/", json={"task_type": "AsyncSleepTask", "input_data": {"seconds": 0, "x": 1}}
    )
    assert response.status_code == 422
    assert ["body", "input_data", "x"] in [e["loc"] for e in _errors(response)]
    response = api.client.post("/tasks/", json={**FIB, "colour": "red"})
    assert response.status_code == 422
    assert ["body", "colour"] in [e["loc"] for e in _errors(response)]
    nothing_written(clean)


@pytest.mark.parametrize("priority", [0, 6, -1, "high", 2.5])
def test_priority_outside_1_to_5_is_422(api: Api, clean: Servers, priority: object) -> None:
    response = api.client.post("/tasks/", json={**FIB, "priority": priority})
    assert response.status_code == 422
    assert ["body", "priority"] in [e["loc"] for e in _errors(response)]
    nothing_written(clean)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),  # not JSON at all: /openapi.json's 400
        (b"", 422),
        (b"[]", 422),
        (b'"text"', 422),
        (b'{"task_type": "FibonacciTask", "input_data": 5}', 422),
    ],
)
def test_malformed_bodies_are_refused(api: Api, clean: Servers, body: bytes, status: int) -> None:
    response = api.client.post(
        "/tasks/", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status
    assert _errors(response)
    nothing_written(clean)


def test_a_form_body_is_told_to_send_json(api: Api, clean: Servers) -> None:
    # What Python's urllib sends by default.
    response = api.client.post(
        "/tasks/",
        content=b"task_type=FibonacciTask",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 422
    assert "Content-Type: application/json" in response.text
    nothing_written(clean)


def test_body_over_one_mebibyte_is_413(api: Api, clean: Servers) -> None:
    big = json.dumps(
        {"task_type": "FibonacciTask", "input_data": {"n": 1, "pad": "x" * (1024 * 1024)}}
    ).encode()
    response = api.client.post("/tasks/", content=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds for streamed bodies too
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    response = api.client.post(
        "/tasks/", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    nothing_written(clean)


def test_unknown_id_is_404_and_bad_id_422(api: Api) -> None:
    response = api.client.get("/tasks/999999")
    assert response.status_code == 404
    assert response.json() == {"detail": "task 999999 not found"}
    assert api.client.get("/tasks/abc").status_code == 404  # no such resource: ids are digits
    assert api.client.get("/tasks/0").status_code == 422
    assert api.client.get(f"/tasks/{2**63}").status_code == 422


def test_task_types_describe_each_type_and_list_broken_plugins(api: Api) -> None:
    body = api.client.get("/task-types").json()
    types = {t["name"]: t for t in body["task_types"]}
    fib = types["FibonacciTask"]
    assert fib["plugin"]["name"] == "taskq-fibonacci"
    assert fib["plugin"]["version"]
    assert fib["description"]
    assert fib["input_schema"]["properties"]["n"]["maximum"] == 10_000
    assert "result" in fib["output_schema"]["properties"]
    assert fib["defaults"] == {"priority": 3, "max_attempts": 3, "timeout_seconds": None}
    assert types["AsyncSleepTask"]["is_async"] is True
    assert types["AsyncSleepTask"]["plugin"] == {"name": "taskq-testkit", "version": "0.1.0"}
    (failure,) = body["errors"]
    assert failure["plugin"] == "taskq-broken"
    assert "taskq_no_such_dependency" in failure["error"]


def test_health_and_ready(api: Api) -> None:
    assert api.client.get("/health").json() == {"status": "ok"}
    assert api.client.get("/ready").json() == {
        "status": "ready",
        "postgresql": "ok",
        "redis": "ok",
    }


def test_openapi_documents_the_routes(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    assert {"/tasks/", "/tasks/{task_id}", "/task-types", "/health", "/ready"} <= set(paths)
    assert api.client.get("/docs").status_code == 200
