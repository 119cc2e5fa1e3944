"""WebhookTask: deliver one signed HTTP request, follow checked 307/308s, judge the answer."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import TYPE_CHECKING

from taskq_core import Retry, Task, TaskContext
from taskq_webhook.delivery import (
    Answer,
    exchange,
    make_client,
    origin,
    pin,
    sent_url,
    tls_context,
)
from taskq_webhook.errors import WebhookRefusedError, WebhookRejectedError
from taskq_webhook.retries import backoff, retry_after
from taskq_webhook.schema import WebhookInput, WebhookOutput, encode_body, parse_url
from taskq_webhook.settings import WebhookSettings, load_settings
from taskq_webhook.signing import signed_headers

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

FOLLOWED_REDIRECTS = frozenset({307, 308})  # the two that keep the method and the body
# Response headers kept in the output; the rest may be large or sensitive (Set-Cookie).
KEPT_HEADERS = (
    "content-type",
    "content-length",
    "content-encoding",
    "location",
    "retry-after",
    "date",
    "x-request-id",
)
MAX_KEPT_HEADER_LENGTH = 256  # characters per value
# Sent to the first origin only: a redirect elsewhere must not carry the caller's credentials.
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie"})


class WebhookTask(Task):
    """Send a signed JSON HTTP request to a public URL (SSRF-checked); retry 5xx, 429, timeouts."""

    name = "WebhookTask"
    description = (
        "Send an HMAC-signed HTTP POST/PUT/PATCH with a JSON body to a URL; private, loopback "
        "and metadata addresses are refused; 5xx, 429 and connection errors are retried."
    )
    Input = WebhookInput
    Output = WebhookOutput
    max_attempts = 5
    retry_backoff_base = 5.0  # seconds: retries after 5xx or errors wait up to 5, 10, 20, 40 s
    retry_backoff_max = 600.0

    def __init__(self, settings: WebhookSettings | None = None) -> None:
        # The host instantiates with no arguments: settings come from TASKQ_WEBHOOK_* and `.env`.
        self.settings = settings if settings is not None else load_settings()
        self.tls = tls_context()

    async def run(self, data: WebhookInput, ctx: TaskContext) -> WebhookOutput:
        """Deliver the request; raise Retry for what may pass, a WebhookError for what won't."""
        import httpx  # here, not at the top: see the package's docstring

        key = self.settings.signing_key  # before any I/O: no secret, no request
        url = httpx.URL(data.url)
        try:
            async with asyncio.timeout(self.settings.total_timeout_seconds):
                return await self._deliver(data, url, key, ctx)
        except TimeoutError:
            raise Retry(
                self._backoff(ctx),
                f"{origin(url)} did not answer within "
                f"{self.settings.total_timeout_seconds:g}s in all",
            ) from None
        except httpx.TimeoutException as exc:
            raise Retry(self._backoff(ctx), f"{origin(url)}: timed out ({_kind(exc)})") from None
        except httpx.TransportError as exc:
            raise Retry(
                self._backoff(ctx), f"{origin(url)}: {_kind(exc)}: {exc or 'connection failed'}"
            ) from None
        except socket.gaierror as exc:
            raise Retry(
                self._backoff(ctx), f"could not resolve {url.host}: {exc.strerror}"
            ) from None

    async def _deliver(
        self, data: WebhookInput, url: httpx.URL, key: bytes, ctx: TaskContext
    ) -> WebhookOutput:
        body = encode_body(data.body)
        base_headers = dict(data.headers)
        if body and not any(name.lower() == "content-type" for name in base_headers):
            base_headers["Content-Type"] = "application/json"
        first_origin, redirects = origin(url), list[str]()
        started = time.perf_counter()
        async with make_client(self.settings, self.tls) as client:
            while True:
                address = await pin(url, self.settings.allowed_networks)
                headers = {
                    name: value
                    for name, value in base_headers.items()
                    if origin(url) == first_origin or name.lower() not in CREDENTIAL_HEADERS
                }
                # Signed afresh for each request: a redirect target gets a current timestamp and
                # a signature for its own URL, which the previous hop's would not match.
                headers |= signed_headers(
                    key,
                    self.settings.signature_versions,
                    int(time.time()),
                    ctx.task_id,
                    data.method,
                    sent_url(url),
                    body,
                )
                answer = await exchange(
                    client,
                    data.method,
                    url,
                    address,
                    headers,
                    body,
                    self.settings.max_response_bytes,
                )
                elapsed_ms = (time.perf_counter() - started) * 1000
                logger.info(
                    "task %s: %s %s -> %d in %.0f ms",
                    ctx.task_id,
                    data.method,
                    origin(url),
                    answer.status_code,
                    elapsed_ms,
                )
                location = answer.headers.get("location")
                if (
                    answer.status_code in FOLLOWED_REDIRECTS
                    and location
                    and len(redirects) < self.settings.max_redirects
                ):
                    redirects.append(str(url))
                    url = _redirect_target(url, location)
                    continue
                return self._judge(answer, url, redirects, elapsed_ms, ctx)

    def _judge(
        self,
        answer: Answer,
        url: httpx.URL,
        redirects: list[str],
        elapsed_ms: float,
        ctx: TaskContext,
    ) -> WebhookOutput:
        code, where = answer.status_code, origin(url)
        if 200 <= code < 300:
            return _output(answer, url, redirects, elapsed_ms)
        if code == 429 or code >= 500:
            asked = retry_after(
                answer.headers.get("retry-after"), self.settings.max_retry_after_seconds
            )
            delay = self._backoff(ctx) if asked is None else asked
            then = f"; retrying in {delay:.3g}s" if ctx.attempt < ctx.max_attempts else ""
            raise Retry(delay, f"{where} answered {code} {answer.reason}{then}")
        if 300 <= code < 400:
            raise WebhookRejectedError(
                f"{where} answered {code} {answer.reason} (redirect to "
                f"{answer.headers.get('location', 'nowhere')!r}); only 307 and 308 are "
                f"followed, at most {self.settings.max_redirects}: send to the final URL"
            )
        snippet = answer.body[:200].decode("utf-8", "replace")
        raise WebhookRejectedError(f"{where} answered {code} {answer.reason}: {snippet!r}")

    def _backoff(self, ctx: TaskContext) -> float:
        return backoff(ctx.attempt, self.retry_backoff_base, self.retry_backoff_max)


def _redirect_target(current: httpx.URL, location: str) -> httpx.URL:
    """The URL a Location points to, held to the input's rules; `pin` checks its address."""
    import httpx  # here, not at the top: see the package's docstring

    try:
        target = parse_url(str(current.join(location)))
    except (httpx.InvalidURL, ValueError) as exc:
        raise WebhookRefusedError(f"refused redirect from {origin(current)}: {exc}") from None
    if current.scheme == "https" and target.scheme != "https":
        raise WebhookRefusedError(f"refused redirect from {origin(current)} to plain http")
    return target


def _output(answer: Answer, url: httpx.URL, redirects: list[str], ms: float) -> WebhookOutput:
    encoding = answer.headers.get("content-encoding", "identity").strip().lower()
    return WebhookOutput(
        status_code=answer.status_code,
        reason=answer.reason,
        url=str(url),
        redirects=redirects,
        headers={
            name: answer.headers[name][:MAX_KEPT_HEADER_LENGTH]
            for name in KEPT_HEADERS
            if name in answer.headers
        },
        body=answer.body.decode("utf-8", "replace") if encoding == "identity" else None,
        body_bytes=len(answer.body),
        truncated=answer.truncated,
        elapsed_ms=round(ms, 3),
    )


def _kind(exc: Exception) -> str:
    # httpx's class names say what failed: ConnectTimeout, ReadTimeout, ConnectError...
    return type(exc).__name__
