"""Schemathesis against the real API process (real PostgreSQL and Redis behind it): every check,
a fixed seed, bounded examples (tests/api/schemathesis.toml); it must find nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import Api

CONFIG = Path(__file__).parent / "schemathesis.toml"


def test_schemathesis_finds_no_failure_with_every_check_on(api: Api) -> None:
    schemathesis = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [
            str(schemathesis),
            "--config-file",
            str(CONFIG),
            "run",
            f"{api.url}/openapi.json",
            "--checks",
            "all",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout
    assert "failed" not in result.stdout.split("SUMMARY", 1)[-1]
