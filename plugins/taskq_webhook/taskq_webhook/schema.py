"""WebhookTask's input and output models: the JSON a caller sends and the result it gets back."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, field_validator

from taskq_webhook.addresses import literal_address, refusal
from taskq_webhook.settings import NetworkSettings

if TYPE_CHECKING:
    import httpx

MAX_URL_LENGTH = 2048  # characters
MAX_HEADERS = 50
MAX_HEADER_NAME_LENGTH = 128  # characters
MAX_HEADER_VALUE_LENGTH = 4096  # characters
MAX_BODY_BYTES = 1024 * 1024  # the body as sent (compact JSON, UTF-8)

# RFC 9110 token characters: a header name is one token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Printable ASCII and tab: no CR, LF, NUL or other controls (header injection), and nothing
# non-ASCII (httpx would refuse it only when sending, an attempt too late).
_VALUE = re.compile(r"[\x20-\x7e\t]*")

# Headers the sender owns: hop-by-hop ones, framing, the Host the SSRF check pins, and our own
# signature namespace (a caller's X-Taskq-Signature would be a forged one).
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "upgrade",
        "expect",
    }
)
RESERVED_PREFIX = "x-taskq-"


def parse_url(value: str) -> httpx.URL:
    """An absolute http(s) URL with a host and without credentials, else ValueError."""
    import httpx  # here, not at the top: see the package's docstring

    if len(value) > MAX_URL_LENGTH:
        raise ValueError(f"at most {MAX_URL_LENGTH} characters")
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https"):
        raise ValueError("only http:// and https:// URLs are allowed")
    if not url.host:
        raise ValueError("the URL needs a host")
    if url.userinfo:
        raise ValueError("credentials in the URL are not allowed: send them in a header")
    return url


def check_url(value: str) -> str:
    """`parse_url`, and the host may not be an IP literal the SSRF policy refuses."""
    url = parse_url(value)
    address = literal_address(url.host)
    if address is not None:
        # Read per call (~0.1 ms), only for literal hosts: a changed allow-list needs no restart.
        reason = refusal(address, NetworkSettings().allowed_networks)
        if reason is not None:
            raise ValueError(
                f"{address}: {reason} address; webhooks may not reach it "
                "(an operator can allow it with TASKQ_WEBHOOK_ALLOWED_NETWORKS)"
            )
    return value


def _check_headers(value: dict[str, str]) -> dict[str, str]:
    seen: set[str] = set()
    for name, text in value.items():
        lowered = name.lower()
        if not _TOKEN.fullmatch(name) or len(name) > MAX_HEADER_NAME_LENGTH:
            raise ValueError(f"{name!r} is not a valid header name")
        if lowered in RESERVED_HEADERS or lowered.startswith(RESERVED_PREFIX):
            raise ValueError(f"header {name!r} is set by the sender and may not be given")
        if lowered in seen:
            raise ValueError(f"header {name!r} is given twice (names are case-insensitive)")
        seen.add(lowered)
        if not _VALUE.fullmatch(text):
            raise ValueError(
                f"header {name!r}: only printable ASCII and tab are allowed "
                "(CR, LF and other control characters would inject headers)"
            )
        if text != text.strip(" \t"):
            raise ValueError(f"header {name!r}: no leading or trailing whitespace")
        if len(text) > MAX_HEADER_VALUE_LENGTH:
            raise ValueError(f"header {name!r}: at most {MAX_HEADER_VALUE_LENGTH} characters")
    return value


def encode_body(body: JsonValue) -> bytes:
    """The exact bytes sent and signed: compact JSON in UTF-8, keys sorted; nothing for null.

    Sorted because PostgreSQL's jsonb, where the input waits, does not keep the caller's key
    order: sorting makes the bytes the same on every attempt and on every worker.
    """
    if body is None:
        return b""
    return json.dumps(
        body, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
    ).encode()


Url = Annotated[str, AfterValidator(check_url)]


class WebhookInput(BaseModel):
    """One HTTP request: where, how, extra headers and a JSON body; signed by the sender."""

    model_config = ConfigDict(extra="forbid")

    url: Url = Field(description="Where to send: an http:// or https:// URL without credentials.")
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, str] = Field(
        default_factory=dict,
        max_length=MAX_HEADERS,
        description="Extra request headers (not Host, Content-Length, hop-by-hop or X-Taskq-*).",
    )
    body: JsonValue = Field(
        default=None,
        description="Any JSON value, sent as compact UTF-8 JSON with sorted keys; null sends an "
        "empty body.",
    )

    _headers_ok = field_validator("headers")(_check_headers)

    @field_validator("body")
    @classmethod
    def _body_fits(cls, value: JsonValue) -> JsonValue:
        try:
            size = len(encode_body(value))
        except ValueError:
            raise ValueError("NaN and Infinity are not JSON") from None
        if size > MAX_BODY_BYTES:
            raise ValueError(f"the body is {size} bytes as JSON; at most {MAX_BODY_BYTES}")
        return value


class WebhookOutput(BaseModel):
    """The receiver's answer: status, a few headers, and the start of its body."""

    status_code: int
    reason: str = Field(description="The reason phrase, e.g. `OK`.")
    url: str = Field(description="The URL that answered (after any redirects followed).")
    redirects: list[str] = Field(
        default_factory=list, description="URLs that redirected (307/308), in order."
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="A subset of the response headers (lower-case names)."
    )
    body: str | None = Field(
        description="The response body as text (UTF-8, invalid bytes replaced), at most "
        "TASKQ_WEBHOOK_MAX_RESPONSE_BYTES; null when it was compressed."
    )
    body_bytes: int = Field(description="How many body bytes were read.")
    truncated: bool = Field(description="True when the body was longer than the cap.")
    elapsed_ms: float = Field(description="From sending the request to the end of the body.")
