"""A task whose result or error PostgreSQL cannot store (a NUL character) or should not (over the
size limit) still ends, failed, with an error saying why; the worker goes on with other tasks."""

from __future__ import annotations

import pytest

from tests.conftest import Api, Servers, Workers, wait_finished


@pytest.mark.parametrize(
    ("kind", "error_type", "words"),
    [
        ("nul", "UnstorableResultError", "NUL"),
        ("huge", "UnstorableResultError", "limit"),
        ("error_nul", "ValueError", "bad\\x00thing"),
    ],
)
def test_an_unstorable_outcome_fails_the_task_and_nothing_else(
    api: Api, workers: Workers, clean: Servers, kind: str, error_type: str, words: str
) -> None:
    bad = api.client.post(
        "/tasks/",
        json={"task_type": "UnstorableTask", "input_data": {"kind": kind}, "max_attempts": 1},
    ).json()["id"]
    good = api.client.post(
        "/tasks/", json={"task_type": "FibonacciTask", "input_data": {"n": 10}}
    ).json()["id"]
    workers.start()
    wait_finished(clean, 2, timeout=60)
    task = api.client.get(f"/tasks/{bad}").json()
    assert task["status"] == "failed"
    assert task["error"]["type"] == error_type
    assert words in task["error"]["message"]
    assert api.client.get(f"/tasks/{good}").json()["result"] == {"result": 55}
