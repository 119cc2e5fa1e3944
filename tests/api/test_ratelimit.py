"""The optional rate limit: counted in Redis, so two API processes share one count; 429 with
Retry-After beyond it; probes never limited; a malformed setting refused at start."""

from __future__ import annotations

import httpx
import pytest

from taskq_core.api.ratelimit import Rate, parse_rate
from taskq_core.errors import ConfigurationError
from tests.conftest import Processes, Servers, free_port, taskq, wait_for

FIB = {"task_type": "FibonacciTask", "input_data": {"n": 3}}


def _start_api(processes: Processes, servers: Servers, rate: str, **env: str) -> str:
    port = free_port()
    proc = processes.spawn(
        taskq("api", "--port", str(port)), servers.env(TASKQ_RATE_LIMIT=rate, **env), "api"
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, processes.output()
        try:
            return httpx.get(f"{url}/health").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, what="the API to start")
    return url


def test_two_replicas_share_one_count(clean: Servers, processes: Processes) -> None:
    # Per hour, so the window cannot roll over during the test.
    first, second = (_start_api(processes, clean, "5/hour") for _ in range(2))
    answers = [httpx.post(f"{url}/tasks/", json=FIB) for url in (first, second) * 2]
    answers.append(httpx.get(f"{first}/tasks/"))
    assert [a.status_code for a in answers] == [201, 201, 201, 201, 200]
    for url in (first, second):
        refused = httpx.post(f"{url}/tasks/", json=FIB)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 3600
        assert "rate limit" in refused.json()["detail"]
    assert clean.sql("SELECT count(*) FROM tasks") == [(4,)]  # the refused ones wrote nothing
    for _ in range(3):  # probes are never limited
        assert httpx.get(f"{first}/health").status_code == 200
        assert httpx.get(f"{first}/ready").status_code == 200


def test_a_large_refused_body_still_hears_its_429(clean: Servers, processes: Processes) -> None:
    url = _start_api(processes, clean, "1/hour")
    assert httpx.get(f"{url}/task-types").status_code == 200
    body = {"task_type": "FibonacciTask", "input_data": {"n": 1}, "pad": "x" * 900_000}
    for _ in range(5):
        assert httpx.post(f"{url}/tasks/", json=body).status_code == 429


def test_each_api_key_has_its_own_count(clean: Servers, processes: Processes) -> None:
    first, second = "first-key-0123456789abcdef", "second-key-0123456789abcdef"
    url = _start_api(processes, clean, "3/hour", TASKQ_API_KEYS=f"{first},{second}")

    def post(key: str) -> int:
        headers = {"Authorization": f"Bearer {key}"}
        return httpx.post(f"{url}/tasks/", json=FIB, headers=headers).status_code

    assert [post(first) for _ in range(4)] == [201, 201, 201, 429]
    assert post(second) == 201  # another key, another count, from the same address
    # Unknown keys are all counted as their address: making up keys buys no fresh counts.
    assert [post(f"made-up-key-{n:020d}") for n in range(4)] == [401, 401, 401, 429]
    assert clean.sql("SELECT count(*) FROM tasks") == [(4,)]


@pytest.mark.parametrize(
    ("text", "rate"),
    [("100/s", Rate(100, 1)), (" 6000 / min ", Rate(6000, 60)), ("10/HOUR", Rate(10, 3600))],
)
def test_rates_parse(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["100", "0/s", "5/day", "x/s", "-1/s"])
def test_malformed_rates_are_refused_naming_the_setting(text: str) -> None:
    with pytest.raises(ConfigurationError, match="TASKQ_RATE_LIMIT"):
        parse_rate(text)


def test_the_api_refuses_to_start_with_a_malformed_rate(servers: Servers) -> None:
    import subprocess

    result = subprocess.run(
        taskq("api", "--port", str(free_port())),
        env=servers.env(TASKQ_RATE_LIMIT="lots"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "TASKQ_RATE_LIMIT='lots'" in result.stderr
