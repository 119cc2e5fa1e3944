"""One validation of a task's input, whichever way it comes in (the REST API, the command line
through it, `Client.enqueue` in-process): the same inputs pass, the same fail with the same
errors, what is stored is the model's normalized dump, and the worker reads it back."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from taskq_core.client import Client
from taskq_core.errors import InvalidTaskError
from taskq_core.plugins import load_registry
from tests.cli.test_remote import cli
from tests.conftest import Api, Servers, Workers, wait_finished
from tests.worker.test_reliability import FAST

AT = "2026-01-02T03:04:05+01:00"


@pytest.fixture
def client(clean: Servers, sites: dict[str, Path]) -> Iterator[Client]:
    """`Client` with the testkit's task types, as the API and the workers have them."""
    sys.path.insert(0, str(sites["taskq-testkit"]))
    try:
        registry = load_registry()
        with Client(
            redis_url=clean.redis_url, database_url=clean.database_url, registry=registry
        ) as made:
            yield made
    finally:
        sys.path.remove(str(sites["taskq-testkit"]))


def through_api(api: Api, task_type: str, data: dict[str, Any]) -> tuple[int, Any]:
    response = api.client.post("/tasks/", json={"task_type": task_type, "input_data": data})
    body = response.json()
    return response.status_code, body["id"] if response.status_code == 201 else body["detail"]


def through_cli(api: Api, task_type: str, data: dict[str, Any]) -> tuple[int, str]:
    result = cli(api, "submit", task_type, json.dumps(data))
    return result.returncode, result.stdout.strip() if result.returncode == 0 else result.stderr


def test_fields_json_writes_as_strings_and_arrays_pass_every_way_and_run(
    api: Api, client: Client, workers: Workers, clean: Servers
) -> None:
    # A strict model's datetime, Enum and tuple: JSON writes them as a string and an array.
    data = {"at": AT, "unit": "min", "window": [5, 10]}
    status, api_id = through_api(api, "WhenTask", data)
    assert status == 201, api_id
    code, cli_id = through_cli(api, "WhenTask", data)
    assert code == 0, cli_id
    python_id = client.enqueue("WhenTask", data)
    # Python's own array type is an array too; an unset field is stored with its default.
    tuple_id = client.enqueue("WhenTask", {"at": AT, "unit": "min", "window": (5, 10)})
    defaults_id = client.enqueue("WhenTask", {"at": "2026-01-02T02:04:05Z"})

    stored = dict(clean.sql("SELECT id, input_data FROM tasks"))
    for task_id in (api_id, int(cli_id), python_id, tuple_id):
        assert stored[task_id] == data
    assert stored[defaults_id] == {"at": "2026-01-02T02:04:05Z", "unit": "s", "window": [0, 60]}

    workers.start(**FAST)
    wait_finished(clean, 5)
    results = clean.sql("SELECT status, result FROM tasks ORDER BY id")
    echoed = {"at": "2026-01-02T03:04:05+01:00", "unit": "min", "window": [5, 10]}
    assert results[:4] == [("completed", echoed)] * 4
    assert results[4] == (
        "completed",
        {"at": "2026-01-02T02:04:05+00:00", "unit": "s", "window": [0, 60]},
    )


REFUSED = [
    ("WhenTask", {"at": "yesterday"}),
    ("WhenTask", {"at": "2026-01-02T03:04:05"}),  # no time zone
    ("WhenTask", {"at": AT, "unit": "hours"}),
    ("WhenTask", {"at": AT, "window": [1]}),
    ("WhenTask", {"at": AT, "window": [1, "2"]}),
    ("WhenTask", {"at": AT, "extra": 1}),
    ("WhenTask", {}),
    ("FibonacciTask", {"n": True}),
    ("FibonacciTask", {"n": "3"}),
    ("FibonacciTask", {"n": 3.0}),
    ("FibonacciTask", {"n": -1}),
]


@pytest.mark.parametrize(("task_type", "data"), REFUSED, ids=[json.dumps(d) for _, d in REFUSED])
def test_every_way_in_refuses_the_same_input_with_the_same_errors(
    api: Api, client: Client, clean: Servers, task_type: str, data: dict[str, Any]
) -> None:
    status, detail = through_api(api, task_type, data)
    assert status == 422, detail
    from_api = [(e["type"], tuple(e["loc"]), e["msg"]) for e in detail]
    assert all(loc[:2] == ("body", "input_data") for _, loc, _ in from_api)

    with pytest.raises(InvalidTaskError) as caught:
        client.enqueue(task_type, data)
    from_python = [(e["type"], ("body", *e["loc"]), e["msg"]) for e in caught.value.errors]
    assert from_python == from_api

    code, stderr = through_cli(api, task_type, data)
    assert code == 1
    for _, loc, msg in from_api:
        assert f"{'.'.join(map(str, loc))}: {msg}" in stderr
    assert clean.sql("SELECT count(*) FROM tasks") == [(0,)]


def test_python_values_json_has_no_form_for_are_refused_at_their_path(
    client: Client, clean: Servers
) -> None:
    cases: list[tuple[Any, tuple[str | int, ...]]] = [
        ({"at": datetime(2026, 1, 2, tzinfo=UTC)}, ("input_data", "at")),
        ({"at": AT, "window": [1, {2}]}, ("input_data", "window", 1)),
        ({"at": AT, "note": {1: "one"}}, ("input_data", "note")),
        ({"at": AT, "window": (1, b"2")}, ("input_data", "window", 1)),
    ]
    for data, loc in cases:
        with pytest.raises(InvalidTaskError) as caught:
            client.enqueue("WhenTask", data)
        assert [(e["type"], e["loc"]) for e in caught.value.errors] == [("json_type", loc)]
    with pytest.raises(InvalidTaskError) as caught:
        client.enqueue("WhenTask", [AT])  # the input is an object, as in a request
    assert [(e["type"], e["loc"]) for e in caught.value.errors] == [("dict_type", ("input_data",))]
    assert clean.sql("SELECT count(*) FROM tasks") == [(0,)]
