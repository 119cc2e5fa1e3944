"""What the sync and async clients share: configuration, the calls they make, when to retry,
and turning answers into models or typed errors. No I/O here."""

from __future__ import annotations

import contextlib
import os
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from taskq_client import _devstate
from taskq_client.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    TaskQError,
    UnauthorizedError,
    UnavailableError,
)

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV, KEY_ENV = "TASKQ_API_URL", "TASKQ_API_KEY"
MAX_SERVER_WAIT = 60.0  # the most one `GET /tasks/{id}?wait=` may ask
RETRY_AFTER_MAX = 30.0  # seconds: a Retry-After above this is not honoured in full
# Never sent, so safe to send again whatever the request.
UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class Config:
    base_url: str
    api_key: str | None
    timeout: float
    retries: int
    backoff: float
    max_backoff: float

    @classmethod
    def build(
        cls,
        base_url: str | None,
        api_key: str | None,
        timeout: float,
        retries: int,
        backoff: float,
        max_backoff: float,
    ) -> Config:
        # The lookup order the README states: argument, TASKQ_API_URL, a running `taskq dev`.
        url = base_url or os.environ.get(URL_ENV) or _devstate.dev_api_url() or DEFAULT_URL
        key = api_key if api_key is not None else os.environ.get(KEY_ENV) or None
        return cls(url.rstrip("/"), key, timeout, retries, backoff, max_backoff)

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "taskq-client/0.1"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers


@dataclass
class Call:
    """One API request, sent again on failure as `safe` allows: a safe call (a read, or a submit
    with an Idempotency-Key) is repeated after any transport error; an unsafe one only when it
    was never sent or the API answered 503/429 (it then wrote nothing)."""

    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    safe: bool = True
    timeout: float | None = None  # seconds, when it must exceed the client's (a long wait)


def submit_call(
    task_type: str,
    input: dict[str, Any] | None,
    *,
    priority: int | None,
    idempotency_key: str | None,
    max_attempts: int | None,
    timeout_seconds: float | None,
    run_at: datetime | None,
    delay_seconds: float | None,
) -> Call:
    body: dict[str, Any] = {"task_type": task_type, "input_data": input or {}}
    options = {
        "priority": priority,
        "max_attempts": max_attempts,
        "timeout_seconds": timeout_seconds,
        "run_at": run_at.isoformat() if run_at is not None else None,
        "delay_seconds": delay_seconds,
    }
    body.update({name: value for name, value in options.items() if value is not None})
    # One key per submit, generated unless given, and the same on every retry of it: the API
    # answers a repeat with the task the first one created, so a retry never makes a twin.
    key = idempotency_key or str(uuid.uuid4())
    return Call("POST", "/tasks/", json=body, headers={"Idempotency-Key": key})


def delay(config: Config, attempt: int, response: httpx.Response | None) -> float:
    """Seconds before retry number `attempt` (0-based): exponential with jitter, or the API's
    Retry-After when it asks for longer."""
    wait: float = min(config.max_backoff, config.backoff * 2**attempt) * random.uniform(0.5, 1.0)
    if response is not None:
        with contextlib.suppress(ValueError):  # an HTTP date: keep the back-off
            wait = max(wait, min(RETRY_AFTER_MAX, float(response.headers.get("Retry-After", 0))))
    return wait


def retryable(call: Call, error: Exception | None, response: httpx.Response | None) -> bool:
    if response is not None:
        return response.status_code in RETRY_STATUSES
    return isinstance(error, UNSENT) or (call.safe and isinstance(error, httpx.TransportError))


def unreachable(config: Config, call: Call, error: Exception) -> UnavailableError:
    maybe = "" if isinstance(error, UNSENT) or call.safe else " (it may or may not have been done)"
    return UnavailableError(
        f"taskq API at {config.base_url} unreachable: {type(error).__name__}: {error}{maybe}"
    )


def _detail(response: httpx.Response) -> Any:
    try:
        return response.json().get("detail")
    except ValueError:
        return response.text


FOLLOW_READ_TIMEOUT = 60.0  # seconds of silence before a follow gives up (the API sends a
# comment every 15 s on a quiet stream)


class SseData:
    """Reads a server-sent event stream line by line; `feed` gives an event's data once the
    blank line ending it comes (comments, `event:` and `id:` lines are not needed here)."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        if line.startswith("data:"):
            self._data.append(line[5:].removeprefix(" "))
        elif not line and self._data:
            data, self._data = "\n".join(self._data), []
            return data
        return None


def raise_for(response: httpx.Response) -> None:
    """Raise the typed error for an answer that is not a success."""
    status = response.status_code
    if status < 400:
        return
    detail = _detail(response)
    where = f"{response.request.method} {response.request.url.path}"
    if status == 422 and isinstance(detail, list):
        parts = [
            f"{'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg', '')}" for e in detail
        ]
        raise InvalidInputError(f"invalid request: {'; '.join(parts)}", detail)
    message = detail if isinstance(detail, str) else f"{where} answered {status}"
    kinds: dict[int, type[TaskQError]] = {
        401: UnauthorizedError,
        403: ForbiddenError,
        404: NotFoundError,
        409: ConflictError,
        422: InvalidInputError,
        429: UnavailableError,
        503: UnavailableError,
    }
    kind = kinds.get(status, TaskQError)
    if kind is InvalidInputError:
        raise InvalidInputError(message, [])
    raise kind(message, status, detail)
