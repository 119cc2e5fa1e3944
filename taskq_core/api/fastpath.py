"""The API's busiest request, served below FastAPI.

`POST /tasks/` without an Idempotency-Key is what a busy API mostly gets. FastAPI's routing,
dependency solving and response plumbing cost more CPU than recording the task (one API process,
`wrk -c32`: 2,745 requests/s through the route, 5,400-7,500/s here), so this middleware takes
those requests first. It does what the route does, with the route's own helpers: validate the body
as `TaskCreate` and against its task type, hand it to the group submitter, answer 201 with the
same body. It takes a request only when that will succeed: a body that is not valid JSON for the
model, a type or input that is invalid, an Idempotency-Key, a content type other than JSON, a
missing or unknown API key or one without the submit scope: all of these are replayed to the route
(`routes/tasks.py`), so every validation and auth error has one source. The key is checked first,
through the same cache as the route's (api/auth.py: a hash and a dict lookup), so a body is not
parsed for a caller who may not submit. An outage met while submitting is answered through the same
error table as the route's.
"""

from __future__ import annotations

import json

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as ASGIScope

from taskq_core.api import errors
from taskq_core.api.auth import KeyRing, Scope, authorization_token
from taskq_core.api.deps import Backends
from taskq_core.api.limits import replaying
from taskq_core.api.routes.tasks import prepare, summary_response
from taskq_core.api.schemas import TaskCreate
from taskq_core.errors import InvalidTaskError

PATH = "/tasks/"


def _takes(scope: ASGIScope) -> tuple[bool, bytes | None]:
    """Whether the request is one for the fast path, and its Authorization header."""
    if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH:
        return False, None
    content_type = b""
    authorization = None
    for name, value in scope["headers"]:
        if name == b"idempotency-key":
            return False, None
        if name == b"content-type":
            content_type = value
        elif name == b"authorization":
            authorization = value
    return content_type.split(b";", 1)[0].strip().lower() == b"application/json", authorization


class SubmitFastPath:
    """Install inside the body-size limit, so the body read here is bounded."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        takes, authorization = _takes(scope)
        if not takes:
            await self.app(scope, receive, send)
            return
        ring: KeyRing = scope["app"].state.keyring
        try:
            principal = await ring.authenticate(authorization_token(authorization))
        except Exception:  # an outage reading the keys: the route answers it (503)
            principal = None
        if principal is None or not principal.allows(Scope.SUBMIT):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        backends: Backends = scope["app"].state.backends
        try:
            # As FastAPI reads a JSON body: json.loads, then the model in Python mode.
            new = prepare(
                TaskCreate.model_validate(json.loads(body)),
                backends,
                submitted_by=principal.owner,
            )
        # JSONDecodeError is a ValueError; RecursionError: nested deeper than json can read.
        except (ValueError, RecursionError, ValidationError, InvalidTaskError):
            await self.app(scope, replaying(body, receive), send)
            return
        response: Response
        try:
            row = await backends.submitter.submit(new)
        except Exception as exc:
            handler = errors.handler_for(exc)
            if handler is None:
                raise
            response = await handler(Request(scope), exc)
        else:
            response = summary_response(row, 201)
        await response(scope, receive, send)
