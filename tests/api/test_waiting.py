"""Waiting on a task: `GET /tasks/{id}?wait=S` and the `/tasks/{id}/events` stream, woken by the
status announcements workers and the API publish on Redis."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx

from tests.conftest import Api, Servers, Workers
from tests.worker.test_reliability import FAST, post

CHANNEL = "taskq:{default}:status"


def test_wait_answers_when_the_task_finishes(api: Api, workers: Workers) -> None:
    workers.start(**FAST)
    task = post(api, {"task_type": "AsyncSleepTask", "input_data": {"seconds": 0.5}})
    # A client timeout well under the wait: an answer only at the deadline would fail here.
    response = api.client.get(f"/tasks/{task['id']}", params={"wait": 60}, timeout=30)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "completed"
    assert body["result"] == {"slept": 0.5}
    assert [h["outcome"] for h in body["history"]] == ["completed"]


def test_wait_answers_with_the_task_as_it_is_at_the_deadline(api: Api, clean: Servers) -> None:
    task = post(api, {"task_type": "FibonacciTask", "input_data": {"n": 3}})  # no worker runs
    response = api.client.get(f"/tasks/{task['id']}", params={"wait": 0.3})
    assert response.status_code == 200
    assert response.json()["status"] == "pending"


def test_wait_on_a_finished_task_answers_at_once(api: Api, clean: Servers) -> None:
    task = post(api, {"task_type": "FibonacciTask", "input_data": {"n": 3}})
    api.client.post(f"/tasks/{task['id']}/cancel")
    response = api.client.get(f"/tasks/{task['id']}", params={"wait": 60}, timeout=30)
    assert response.json()["status"] == "cancelled"


def test_wait_bounds(api: Api, clean: Servers) -> None:
    task = post(api, {"task_type": "FibonacciTask", "input_data": {"n": 3}})
    for bad in ("61", "-1", "soon"):
        response = api.client.get(f"/tasks/{task['id']}", params={"wait": bad})
        assert response.status_code == 422, bad
        assert response.json()["detail"][0]["loc"] == ["query", "wait"]
    assert api.client.get("/tasks/999999", params={"wait": 1}).status_code == 404
    assert api.client.get("/tasks/999999/events").status_code == 404


def _wait_in_thread(api: Api, task_id: object, out: list[httpx.Response]) -> threading.Thread:
    def run() -> None:
        out.append(api.client.get(f"/tasks/{task_id}", params={"wait": 60}, timeout=30))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_waiter_is_woken_by_the_announcement_not_by_polling(api: Api, clean: Servers) -> None:
    task = post(api, {"task_type": "FibonacciTask", "input_data": {"n": 3}})
    with clean.redis() as client:
        # The API process's one subscriber (the channel is the server's: with a Redis shared by
        # several test processes, their APIs' too); a waiter adds none.
        subscribers = client.pubsub_numsub(CHANNEL)[0][1]
        assert subscribers >= 1
        answers: list[httpx.Response] = []
        thread = _wait_in_thread(api, task["id"], answers)
        time.sleep(0.2)
        assert client.pubsub_numsub(CHANNEL)[0][1] <= subscribers
        # Changed behind the API's back: nothing wakes the waiter until it is announced.
        clean.sql(
            "UPDATE tasks SET status = 'completed', result = '{\"result\": 2}', "
            "finished_at = now() WHERE id = %s",
            [task["id"]],
        )
        client.publish(CHANNEL, json.dumps([[task["id"], "completed"]]))
        thread.join(40)
    assert answers[0].json()["status"] == "completed"
    assert answers[0].json()["result"] == {"result": 2}


def test_cancelling_a_pending_task_wakes_its_waiter(api: Api, clean: Servers) -> None:
    task = post(api, {"task_type": "FibonacciTask", "input_data": {"n": 3}})
    answers: list[httpx.Response] = []
    thread = _wait_in_thread(api, task["id"], answers)
    assert api.client.post(f"/tasks/{task['id']}/cancel").status_code == 200
    thread.join(40)
    assert answers[0].json()["status"] == "cancelled"


def _events(api: Api, task_id: object) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    with httpx.stream("GET", f"{api.url}/tasks/{task_id}/events", timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    return events


def test_events_stream_each_status_and_end_when_the_task_does(api: Api, workers: Workers) -> None:
    task = post(api, {"task_type": "AsyncSleepTask", "input_data": {"seconds": 0.5}})
    workers.start(**FAST)
    events = _events(api, task["id"])  # returns only because the stream ends
    statuses = [body["status"] for _, body in events]
    assert {name for name, _ in events} == {"status"}
    assert statuses[-1] == "completed"
    assert statuses == sorted(set(statuses), key=statuses.index)  # each change once
    assert set(statuses) <= {"pending", "running", "completed"}
    assert events[-1][1]["result"] == {"slept": 0.5}


def test_events_follow_a_retry_through_failure(api: Api, workers: Workers) -> None:
    workers.start(**FAST)
    task = post(api, {"task_type": "FailTask", "input_data": {}, "max_attempts": 2})
    statuses = [body["status"] for _, body in _events(api, task["id"])]
    assert statuses[-1] == "failed"
    assert len(statuses) >= 2  # the first read sees it pending or running, never failed
    assert api.client.get(f"/tasks/{task['id']}").json()["attempts"] == 2
