"""WebhookTask end to end: POST through the API, a real worker, a real receiver on 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.conftest import Api, Servers, Workers, wait_for

SECRET = "flow-secret-0123456789abcdef"  # a test key, used only against loopback


@dataclass
class Hook:
    """What the receiver got, and the statuses it answers with, in order (then 200)."""

    port: int
    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        hook = self.server.hook
        hook.requests.append((self.command, self.path, dict(self.headers.items()), body))
        status = hook.statuses.pop(0) if hook.statuses else 200
        answer = b'{"received": true}'
        self.send_response(status)
        self.send_header("Retry-After", "0")  # read on 503 only: retry at once
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hook: Hook


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.hook = Hook(port=server.server_address[1])
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server.hook
    server.shutdown()
    server.server_close()


def finished(api: Api, task_id: int) -> dict[str, Any]:
    task: dict[str, Any] = wait_for(
        lambda: (
            (t := api.client.get(f"/tasks/{task_id}").json())["status"]
            not in ("pending", "running")
            and t
        ),
        timeout=30,
        what="the webhook task to finish",
    )
    return task


def submit(api: Api, input_data: dict[str, Any]) -> int:
    response = api.client.post(
        "/tasks/", json={"task_type": "WebhookTask", "input_data": input_data}
    )
    assert response.status_code == 201, response.text
    task_id: int = response.json()["id"]
    return task_id


def test_a_webhook_is_delivered_signed_and_retried_after_a_503(
    api: Api, workers: Workers, hook: Hook
) -> None:
    # The API has no allow-list: `localhost` is a name, so it is judged by the worker, which
    # resolves it once (127.0.0.1) and finds it in its allow-list.
    workers.start(TASKQ_WEBHOOK_SECRET=SECRET, TASKQ_WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8")
    hook.statuses = [503]
    task_id = submit(
        api,
        {
            "url": f"http://localhost:{hook.port}/in?src=taskq",
            "headers": {"X-Tenant": "acme"},
            "body": {"event": "export.ready", "id": 17},
        },
    )
    task = finished(api, task_id)
    assert task["status"] == "completed", task["error"]
    assert task["attempts"] == 2
    assert [a["outcome"] for a in task["history"]] == ["retry", "completed"]
    assert task["result"]["status_code"] == 200
    assert task["result"]["body"] == '{"received": true}'

    assert len(hook.requests) == 2
    for method, path, headers, body in hook.requests:
        assert (method, path) == ("POST", "/in?src=taskq")
        assert body == b'{"event":"export.ready","id":17}'  # keys sorted, whatever jsonb did
        assert headers["X-Tenant"] == "acme"
        assert headers["X-Taskq-Task-Id"] == str(task_id)
        assert headers["Host"] == f"localhost:{hook.port}"
        # v2 (README: "What the receiver gets"), rebuilt here from what the receiver got.
        fields = [
            b"v2",
            headers["X-Taskq-Timestamp"].encode(),
            str(task_id).encode(),
            method.encode(),
            f"http://{headers['Host']}{path}".encode(),
            body,
        ]
        signed = b"".join(b"%d:%s" % (len(field), field) for field in fields)
        expected = hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
        assert headers["X-Taskq-Signature-V2"] == f"v2={expected}"
        assert "x-taskq-signature" not in {name.lower() for name in headers}  # v1: if configured
    assert SECRET not in str(task)
    log = workers.processes.output()
    assert f"POST http://localhost:{hook.port} -> 503" in log
    assert SECRET not in log


def test_a_name_resolving_to_loopback_fails_at_once_without_a_request(
    api: Api, workers: Workers, hook: Hook
) -> None:
    workers.start(TASKQ_WEBHOOK_SECRET=SECRET)  # no allow-list: the default policy
    task_id = submit(api, {"url": f"http://localhost:{hook.port}/in"})
    task = finished(api, task_id)
    assert task["status"] == "failed"
    assert task["attempts"] == 1  # permanent: no retry
    assert task["error"]["type"] == "WebhookRefusedError"
    assert "localhost (resolves to 127.0.0.1): loopback address" in task["error"]["message"]
    assert hook.requests == []


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/latest/meta-data/", "http://[::1]:8080/", "http://10.0.0.1/"],
)
def test_a_literal_refused_address_is_a_422_and_writes_nothing(
    api: Api, clean: Servers, url: str
) -> None:
    response = api.client.post(
        "/tasks/", json={"task_type": "WebhookTask", "input_data": {"url": url}}
    )
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert tuple(error["loc"][:3]) == ("body", "input_data", "url")
    assert "webhooks may not reach it" in error["msg"]
    assert clean.sql("SELECT count(*) FROM tasks") == [(0,)]


def test_without_a_secret_a_webhook_fails_at_once_naming_the_setting(
    api: Api, workers: Workers, hook: Hook
) -> None:
    workers.start(TASKQ_WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8")  # no secret, as under `make dev`
    task = finished(api, submit(api, {"url": f"http://localhost:{hook.port}/in"}))
    assert task["status"] == "failed"
    assert task["attempts"] == 1  # permanent
    assert task["error"]["type"] == "WebhookConfigError"
    assert task["error"]["message"] == "no signing secret configured: set TASKQ_WEBHOOK_SECRET"
    assert hook.requests == []  # nothing unsigned was sent
