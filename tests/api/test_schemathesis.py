"""Schemathesis against a real API process (real PostgreSQL and Redis behind it) that requires API
keys: every check, a fixed seed, bounded examples (tests/api/schemathesis.toml); it must find
nothing. Requests carry an admin key; the auth checks also try them without it, or with another."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import Processes, Servers, free_port, taskq, wait_for

CONFIG = Path(__file__).parent / "schemathesis.toml"


def test_schemathesis_finds_no_failure_with_every_check_on(
    clean: Servers, processes: Processes, sites: dict[str, Path]
) -> None:
    key = secrets.token_urlsafe(32)
    port = free_port()
    env = clean.env(sites["taskq-testkit"], TASKQ_API_KEYS=key)
    api = processes.spawn(taskq("api", "--port", str(port)), env, "api")
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert api.poll() is None, processes.output()
        try:
            return httpx.get(f"{url}/health").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, what="the API to start")
    schemathesis = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [
            str(schemathesis),
            "--config-file",
            str(CONFIG),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
            "--header",
            f"Authorization: Bearer {key}",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    print(result.stdout)  # shown with -s: the phases, cases and warnings
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout
    assert "failed" not in result.stdout.split("SUMMARY", 1)[-1]
