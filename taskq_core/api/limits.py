"""An ASGI middleware refusing request bodies over the size limit with 413, heard by every client.

A client such as Python's urllib writes its whole body before it reads the answer. If the server
answers and closes while the body is still arriving, the client's kernel sees a reset and the
413 is lost to it ("connection reset by peer"). So an oversized body is read to its end and
thrown away, within bounds (DRAIN_FACTOR times the limit, DRAIN_SECONDS), before the 413 goes.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskq_core.api.errors import AsciiJSONResponse


def replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the body already read as one message, then defers to `receive`."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


DRAIN_FACTOR = 16  # an oversized body up to this many times the limit is read and discarded
DRAIN_SECONDS = 10.0  # and for no longer than this


class BodySizeLimit:
    """Reads the body up to `max_bytes` before the app sees it, so an oversized request is refused
    whole (413) instead of half-parsed, whether or not it declares a Content-Length."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            if int(declared) <= self.max_bytes * DRAIN_FACTOR:
                await self._drain(receive, 0)
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                if message.get("more_body", False):
                    await self._drain(receive, size)
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, replaying(b"".join(chunks), receive), send)

    async def _drain(self, receive: Receive, size: int) -> None:
        """Read and drop the rest of the body, up to the drain bounds."""
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                while size <= self.max_bytes * DRAIN_FACTOR:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    size += len(message.get("body", b""))
                    if not message.get("more_body", False):
                        return
        except TimeoutError:
            return

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"request body is larger than the limit of {self.max_bytes} bytes"
        await AsciiJSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
