"""`/tasks/{id}/artifacts/{name}`: stream back a file a task published, whole or by byte range."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from taskq_core.api.auth import AUTH_RESPONSES, check_reader
from taskq_core.api.deps import BackendsDep
from taskq_core.api.responses import GUARDED, documented
from taskq_core.api.routes.tasks import ReaderOrSubmitter, TaskId
from taskq_core.artifacts import NAME_PATTERN, ArtifactStore
from taskq_core.errors import (
    ArtifactNotFoundError,
    BackendUnavailableError,
    RangeNotSatisfiableError,
    TaskNotFoundError,
)

router = APIRouter(prefix="/tasks", tags=["artifacts"], responses=AUTH_RESPONSES)

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
ArtifactName = Annotated[str, Path(pattern=NAME_PATTERN.pattern, description="Its name.")]


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) of a single `Range: bytes=...` header, None for the whole file.
    Several ranges, or a header that is not a byte range, get the whole file (RFC 9110 allows
    ignoring Range); a range past the end is RangeNotSatisfiableError."""
    if header is None:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        length = int(last)
        if length == 0:
            raise RangeNotSatisfiableError(f"the range {header!r} asks for no bytes")
        return max(0, size - length), size
    start = int(first)
    end = size if not last else min(size, int(last) + 1)
    if start >= size or end <= start:
        raise RangeNotSatisfiableError(f"the range {header!r} is outside the {size} bytes")
    return start, end


@router.get(
    "/{task_id}/artifacts/{name}",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The artifact's bytes, with its content type",
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        },
        206: {"description": "The byte range asked for (`Range: bytes=start-end`)"},
        **documented(
            *GUARDED,
            404,
            416,
            422,
            _404="No such task, or it published no artifact of that name",
            _503="PostgreSQL or the artifact store unavailable",
        ),
    },
)
async def get_artifact(
    task_id: TaskId,
    name: ArtifactName,
    backends: BackendsDep,
    request: Request,
    principal: ReaderOrSubmitter,
    range_: Annotated[str | None, Header(alias="Range")] = None,
) -> StreamingResponse:
    """Download one artifact of a task (published when the task completed); a submit key, only
    of the tasks it submitted."""
    row = await backends.storage.artifact(task_id, name)
    if row is None:
        raise TaskNotFoundError(f"task {task_id} not found")
    # Whose task it is first: a key that may not read it learns nothing of its artifacts.
    check_reader(principal, row["submitted_by"])
    if row["key"] is None:
        raise ArtifactNotFoundError(f"task {task_id} has no artifact named {name!r}")
    store: ArtifactStore = request.app.state.artifact_store
    size: int = row["size"]
    # Reached before the answer starts, so a missing file or an unreachable store is a clear
    # 404 or 503 rather than a stream cut short.
    try:
        await run_in_threadpool(store.size, row["key"])
    except FileNotFoundError as exc:
        raise ArtifactNotFoundError(
            f"the stored bytes of artifact {name!r} of task {task_id} are gone"
        ) from exc
    except Exception as exc:
        raise BackendUnavailableError(
            f"the artifact store is unavailable ({type(exc).__name__})"
        ) from exc
    headers: dict[str, Any] = {
        "Accept-Ranges": "bytes",
        "ETag": f'"{row["sha256"]}"',
        "Content-Disposition": f'attachment; filename="{name}"',
    }
    span = byte_range(range_, size)
    if span is None:
        start, end, status = 0, size, 200
    else:
        start, end = span
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    chunks = store.read(row["key"], start, end)
    return StreamingResponse(
        iterate_in_threadpool(chunks),
        status_code=status,
        media_type=row["content_type"],
        headers=headers,
    )
