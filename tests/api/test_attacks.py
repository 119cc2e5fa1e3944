"""Requests an attacker sent (docs/security.md): each is refused with a 4xx and writes nothing."""

from __future__ import annotations

import pytest

from taskq_core.api.hosts import acceptable
from tests.conftest import Api, Servers


@pytest.mark.parametrize(
    "run_at", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "1800-01-01T00:00:00Z"]
)
def test_a_run_at_python_could_not_read_back_is_refused(
    api: Api, clean: Servers, run_at: str
) -> None:
    task = {"task_type": "FibonacciTask", "input_data": {"n": 3}, "run_at": run_at}
    single = api.client.post("/tasks/", json=task)
    assert single.status_code == 422, single.text
    assert single.json()["detail"][0]["loc"] == ["body", "run_at"]
    batch = api.client.post("/tasks/batch", json={"tasks": [task]})
    assert batch.status_code == 422, batch.text
    assert clean.sql("SELECT count(*) FROM tasks") == [(0,)]
    # The listing stays readable for everyone.
    assert api.client.get("/tasks/").status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        '{"task_type": "FibonacciTask", "input_data": {"n": 3, "zz\\ud800": 1}}',
        '{"task_type": "Fib\\ud800", "input_data": {"n": 3}}',
        '{"task_type": "WebhookTask", "input_data": {"url": "https://example.com/", '
        '"body": "\\ud800"}}',
        '{"tasks": [{"task_type": "FibonacciTask", "input_data": {"n": "\\udfff"}}]}',
    ],
)
def test_a_lone_surrogate_is_a_422_not_a_500(api: Api, clean: Servers, body: str) -> None:
    path = "/tasks/batch" if body.startswith('{"tasks"') else "/tasks/"
    response = api.client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    response.json()  # valid JSON, the surrogate escaped
    assert clean.sql("SELECT count(*) FROM tasks") == [(0,)]


def test_an_open_api_answers_only_ip_addresses_and_localhost(api: Api, clean: Servers) -> None:
    # The suite's API runs without keys: a DNS rebinding page's Host is refused.
    rebinding = api.client.get("/tasks/", headers={"Host": "attacker.example:8000"})
    assert rebinding.status_code == 403
    assert "DNS rebinding" in rebinding.json()["detail"]
    for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000", "localhost"):
        assert api.client.get("/tasks/", headers={"Host": host}).status_code == 200, host
    # Probes stay open whatever their Host: they tell a page nothing.
    assert api.client.get("/health", headers={"Host": "probe.internal"}).status_code == 200


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("127.0.0.1", True),
        ("10.0.0.5:8000", True),
        ("[::1]:8000", True),
        ("LOCALHOST:1", True),
        ("app.localhost", True),
        ("example.com", False),
        ("127.0.0.1.nip.io", False),
        ("localhost.attacker.example", False),
    ],
)
def test_which_hosts_an_open_api_serves(host: str, ok: bool) -> None:
    assert acceptable(host) is ok
