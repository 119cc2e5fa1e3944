"""The signatures a receiver checks (README: "Verifying a delivery").

v2, always sent, in `X-Taskq-Signature-V2: v2=<hex>`: HMAC-SHA256 over the request's timestamp,
task id, method, URL as sent and body, so a captured request cannot be resent with another task
id, method or URL. v1, 0.1's, in `X-Taskq-Signature: v1=<hex>`: HMAC-SHA256 over
`"{timestamp}." + body` only; sent while TASKQ_WEBHOOK_SIGNATURE_VERSIONS lists it, for
receivers that have not moved to v2. Two headers, not one list: 0.1's receivers read the whole
`X-Taskq-Signature` value as `v1=<hex>`, and anything appended to it would fail them.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Container

TIMESTAMP_HEADER = "X-Taskq-Timestamp"
TASK_ID_HEADER = "X-Taskq-Task-Id"
SIGNATURE_HEADER = "X-Taskq-Signature"  # v1
SIGNATURE_V2_HEADER = "X-Taskq-Signature-V2"
VERSIONS = ("v1", "v2")  # what TASKQ_WEBHOOK_SIGNATURE_VERSIONS may list


def message_v2(timestamp: str, task_id: str, method: str, url: str, body: bytes) -> bytes:
    """The bytes v2 signs: each field as its length in bytes (decimal), `:`, then the bytes.

    Length prefixes rather than separators: a reader that knows how many fields there are can
    split the message one way only, whatever the fields hold, so no byte can pass from one field
    to its neighbour (`/hook` + `k{...}` against `/hoo` + `kk{...}`). A newline between fields
    would be as safe only while no field but the last can hold one, a promise of today's header
    and URL rules rather than of the encoding. The leading `v2` field keeps this message apart
    from v1's (`{digits}.{body}`) and from any later version's.
    """
    fields = (b"v2", timestamp.encode(), task_id.encode(), method.encode(), url.encode(), body)
    return b"".join(b"%d:%s" % (len(field), field) for field in fields)


def signature_v2(
    key: bytes, timestamp: int, task_id: int, method: str, url: str, body: bytes
) -> str:
    """The `X-Taskq-Signature-V2` value, `v2=<hex>`, for one request exactly as sent."""
    message = message_v2(str(timestamp), str(task_id), method, url, body)
    return "v2=" + hmac.new(key, message, hashlib.sha256).hexdigest()


def signature_v1(key: bytes, timestamp: int, body: bytes) -> str:
    """The `X-Taskq-Signature` value of 0.1, `v1=<hex>`: the timestamp and the body only."""
    return "v1=" + hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signed_headers(
    key: bytes,
    versions: Container[str],
    timestamp: int,
    task_id: int,
    method: str,
    url: str,
    body: bytes,
) -> dict[str, str]:
    """The headers a receiver checks, for one request: `url` as sent, after any redirect."""
    headers = {TIMESTAMP_HEADER: str(timestamp), TASK_ID_HEADER: str(task_id)}
    if "v1" in versions:
        headers[SIGNATURE_HEADER] = signature_v1(key, timestamp, body)
    if "v2" in versions:
        headers[SIGNATURE_V2_HEADER] = signature_v2(key, timestamp, task_id, method, url, body)
    return headers
