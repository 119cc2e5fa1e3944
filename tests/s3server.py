"""A real S3-speaking server for the suite: moto in server mode on a free loopback port."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskq_core.processes import spawn
from tests.conftest import free_port, wait_for


@dataclass
class S3:
    endpoint: str
    bucket: str

    def env(self) -> dict[str, str]:
        """What a taskq process needs to reach it (the standard AWS variables)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "taskq-test",
            "AWS_SECRET_ACCESS_KEY": "taskq-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def fs(self) -> Any:
        import s3fs

        fs = s3fs.S3FileSystem(
            key="taskq-test", secret="taskq-test-secret", endpoint_url=self.endpoint
        )
        fs.invalidate_cache()
        return fs

    def keys(self, prefix: str) -> list[str]:
        found: list[str] = self.fs().find(f"{self.bucket}/{prefix}")
        return found

    def pending_uploads(self) -> list[str]:
        """Multipart uploads begun and neither completed nor aborted."""
        uploads = self.fs().call_s3("list_multipart_uploads", Bucket=self.bucket)
        return [upload["Key"] for upload in uploads.get("Uploads", [])]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    moto = Path(sys.executable).with_name("moto_server")
    with log.open("wb") as out:
        proc = spawn(
            [str(moto), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            new_session=False,
        )
    endpoint = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"moto_server exited:\n{log.read_text()}")
        try:
            return httpx.get(f"{endpoint}/moto-api/").status_code < 500
        except httpx.HTTPError:
            return False

    wait_for(up, what="the S3 server to start")
    bucket = "taskq-artifacts"
    assert httpx.put(f"{endpoint}/{bucket}").status_code == 200
    yield S3(endpoint, bucket)
    proc.terminate()
    proc.wait(15)
