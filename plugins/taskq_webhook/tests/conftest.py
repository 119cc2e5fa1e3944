"""Fixtures: a real HTTP(S) receiver on 127.0.0.1, an isolated environment, one-call delivery."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from taskq_webhook import WebhookInput, WebhookOutput, WebhookSettings, WebhookTask
from taskq_webhook.addresses import parse_networks
from webhook_receiver import LOOPBACK, SECRET, Receiver, Send, serving

from taskq_core import TaskContext
from tests.plugin_support import isolate_env, self_signed, server_context


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A plain HTTP receiver on 127.0.0.1."""
    with serving(None) as recv:
        yield recv


@pytest.fixture
def receiver6() -> Iterator[Receiver]:
    """A plain HTTP receiver on the IPv6 loopback, ::1."""
    with serving(None, host="::1") as recv:
        yield recv


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for the name `localhost` only (no IP)."""
    return self_signed(tmp_path_factory.mktemp("tls"), "localhost", "DNS:localhost")


@pytest.fixture
def tls_receiver(
    tls_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Receiver]:
    """An HTTPS receiver on 127.0.0.1 whose certificate is trusted (SSL_CERT_FILE)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files[0]))
    with serving(server_context(*tls_files)) as recv:
        yield recv


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_env(monkeypatch, tmp_path, "TASKQ_WEBHOOK_")


@pytest.fixture
def allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Allow 127.0.0.0/8 the way an operator would: the environment variable."""
    monkeypatch.setenv("TASKQ_WEBHOOK_ALLOWED_NETWORKS", LOOPBACK)


def context(attempt: int = 1, task_id: int = 42) -> TaskContext:
    return TaskContext(
        task_id=task_id,
        task_type="WebhookTask",
        attempt=attempt,
        max_attempts=5,
        priority=3,
        worker_id="test",
    )


@pytest.fixture
def send() -> Send:
    """Run one delivery: `send(input_dict, allowed=LOOPBACK, attempt=1, **settings)`.

    The input goes through WebhookInput's validation unless `unchecked=True` (which builds it
    as a worker would see an input accepted under another allow-list).
    """

    def run(
        data: dict[str, Any],
        *,
        allowed: str = LOOPBACK,
        attempt: int = 1,
        unchecked: bool = False,
        **settings: Any,
    ) -> WebhookOutput:
        settings.setdefault("secret", SECRET)
        task = WebhookTask(WebhookSettings(allowed_networks=parse_networks(allowed), **settings))
        if unchecked:
            payload = WebhookInput.model_construct(
                **{"method": "POST", "headers": {}, "body": None, **data}
            )
        else:
            payload = WebhookInput.model_validate(data)
        return asyncio.run(task.run(payload, context(attempt)))

    return run
