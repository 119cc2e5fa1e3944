"""How `taskq api` runs uvicorn: bounds on connections, idle time and header size, from Settings."""

from __future__ import annotations

from typing import Any

from taskq_core.settings import Settings


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.run options that keep slow or numerous clients from holding the API."""
    return {
        # Connections and requests in flight per process; beyond, an immediate 503.
        "limit_concurrency": settings.api_max_connections,
        "timeout_keep_alive": settings.api_keep_alive_seconds,
        "http": settings.api_http,
        # The largest request head the h11 parser buffers (httptools sets no bound of its own).
        "h11_max_incomplete_event_size": settings.api_max_header_bytes,
        # On stop, requests still open after this long are cut rather than awaited for ever.
        "timeout_graceful_shutdown": settings.api_shutdown_seconds,
        "server_header": False,
    }
