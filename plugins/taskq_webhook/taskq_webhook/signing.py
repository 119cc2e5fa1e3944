"""The signature: HMAC-SHA256 over `"{timestamp}." + body bytes`, sent as `v1=<hex>`."""

from __future__ import annotations

import hashlib
import hmac

TIMESTAMP_HEADER = "X-Taskq-Timestamp"
SIGNATURE_HEADER = "X-Taskq-Signature"
TASK_ID_HEADER = "X-Taskq-Task-Id"
VERSION = "v1"


def signature(key: bytes, timestamp: int, body: bytes) -> str:
    """The header value `v1=<hex>` for this timestamp (Unix seconds) and these exact bytes."""
    digest = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"{VERSION}={digest}"


def signed_headers(key: bytes, timestamp: int, body: bytes) -> dict[str, str]:
    """The two headers a receiver checks (README: "Verifying a delivery")."""
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(key, timestamp, body),
    }
