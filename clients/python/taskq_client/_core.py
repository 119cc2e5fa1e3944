"""What the sync and async clients share about sending: configuration, a call, when to send it
again, and turning an answer into its JSON or a typed error (what each method sends and makes
of the JSON: `_calls`). No I/O here."""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass, field
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


def delay(config: Config, attempt: int, response: httpx.Response | None) -> float:
    """Seconds before retry number `attempt` (0-based): exponential with jitter, or the API's
    Retry-After when it asks for longer."""
    wait: float = min(config.max_backoff, config.backoff * 2**attempt) * random.uniform(0.5, 1.0)
    if response is not None:
        with contextlib.suppress(ValueError):  # an HTTP date: keep the back-off
            wait = max(wait, min(RETRY_AFTER_MAX, float(response.headers.get("Retry-After", 0))))
    return wait


def request_args(config: Config, call: Call) -> dict[str, Any]:
    """`call` as the arguments of httpx's `request`."""
    return {
        "method": call.method,
        "url": call.path,
        "params": call.params or None,
        "json": call.json,
        "headers": call.headers,
        "timeout": call.timeout or config.timeout,
    }


def pause(
    config: Config, call: Call, attempt: int, outcome: httpx.Response | httpx.TransportError
) -> float | None:
    """Seconds to wait before sending `call` again after try number `attempt` (0-based) came to
    `outcome`, or None when that try is the last (`answer` then reads it)."""
    if attempt >= config.retries:
        return None
    if isinstance(outcome, httpx.Response):
        retry = outcome.status_code in RETRY_STATUSES
        return delay(config, attempt, outcome) if retry else None
    return delay(config, attempt, None) if isinstance(outcome, UNSENT) or call.safe else None


def answer(config: Config, call: Call, outcome: httpx.Response | httpx.TransportError) -> Any:
    """The JSON of the last try's answer, or the typed error it came to."""
    if isinstance(outcome, httpx.TransportError):
        raise unreachable(config, call, outcome) from outcome
    raise_for(outcome)
    return outcome.json()


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
