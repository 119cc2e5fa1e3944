"""The dashboard's pages (GET): overview, tasks, one task, task types; each live part is also served
alone, as a fragment the page's script fetches every two seconds."""

from __future__ import annotations

import time
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import RedirectResponse, Response

from taskq_core.api.deps import BackendsDep
from taskq_core.api.ui import forms, session, views
from taskq_core.api.ui.session import Session, SessionDep
from taskq_core.broker import PRIORITIES
from taskq_core.db.overview import PAGE_COLUMNS, OverviewQueries
from taskq_core.records import TaskStatus

router = APIRouter(prefix="/ui", include_in_schema=False)
TEMPLATES = views.templates()
PAGE_SIZE = 50
LIVE_MS = 2000  # how often live parts refresh
# Our own files only, and never inside another site's frame (a framed Cancel button could be
# clicked by a visitor who did not mean to).
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
THROUGHPUT_TTL = 5.0  # seconds a throughput reading serves every viewer of this process
# What the task page says after an action (actions.py redirects with ?done=<code>).
NOTICES = {
    "cancelled": "Cancelled.",
    "stopping": "It was running: its worker was asked to stop it.",
    "not-cancelled": "Not cancelled: it had already finished.",
    "retried": "Pending again: it will run shortly.",
    "not-retried": "Not retried: only a failed or cancelled task can be retried.",
}
RUNNING_SHOWN = 12  # running tasks listed per worker; the rest are counted


def render(
    request: Request, sess: Session, template: str, status_code: int = 200, **context: Any
) -> Response:
    """A page (or fragment) with what every template needs: the session and its CSRF token."""
    context.update(session=sess, csrf_token=session.csrf_token(request, sess), live_ms=LIVE_MS)
    response = TEMPLATES.TemplateResponse(request, template, context, status_code=status_code)
    if sess.fresh:
        session.store(request, response, sess)
    response.headers.update(HEADERS)
    return response


def to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/ui/login?{urlencode({'next': target})}", status_code=303)


def overview_queries(backends: BackendsDep) -> OverviewQueries:
    return OverviewQueries(backends.storage.engine, backends.storage.queue)


async def _throughput(request: Request, queries: OverviewQueries) -> dict[str, Any]:
    # The chart's buckets are 30 s wide: reading them on every 2 s refresh would show nothing
    # new, so one API process reads them at most every THROUGHPUT_TTL seconds, for every viewer.
    cached: tuple[float, dict[str, Any]] | None = getattr(request.app.state, "ui_throughput", None)
    now = time.monotonic()
    if cached is None or now - cached[0] > THROUGHPUT_TTL:
        cached = (now, await queries.throughput())
        request.app.state.ui_throughput = cached
    return cached[1]


async def _overview(request: Request, backends: BackendsDep) -> dict[str, Any]:
    queries = overview_queries(backends)
    settings = request.app.state.settings
    return {
        "running": await queries.running_by_worker(),
        "running_shown": RUNNING_SHOWN,
        "depths": await backends.broker.depths(),
        "counts": await queries.status_counts(),
        "oldest": await queries.oldest_pending(),
        "chart": views.chart(await _throughput(request, queries)),
        "workers": await backends.storage.list_workers(settings.lease_seconds),
    }


@router.get("")
async def overview(request: Request, sess: SessionDep, backends: BackendsDep) -> Response:
    if not sess.can_see:
        return to_login(request)
    return render(request, sess, "overview.html", **await _overview(request, backends))


@router.get("/live/overview")
async def overview_live(request: Request, sess: SessionDep, backends: BackendsDep) -> Response:
    if not sess.can_see:
        return Response(status_code=401)
    return render(request, sess, "_overview.html", **await _overview(request, backends))


@router.get("/tasks")
async def task_list(
    request: Request,
    sess: SessionDep,
    backends: BackendsDep,
    status: Annotated[str, Query(max_length=20)] = "",
    task_type: Annotated[str, Query(max_length=200)] = "",
    priority: Annotated[str, Query(max_length=1)] = "",
    cursor: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    fragment: bool = False,
) -> Response:
    """Tasks newest first; the filters live in the URL so a view can be shared (an empty
    filter, as the form sends for "any", filters nothing)."""
    if not sess.can_see:
        return Response(status_code=401) if fragment else to_login(request)
    if status and status not in set(TaskStatus):
        return render(request, sess, "refused.html", 422, why=f"Unknown status {status!r}.")
    if priority and priority not in {str(p) for p in PRIORITIES}:
        return render(request, sess, "refused.html", 422, why="Priority is 1 to 5.")
    filters: dict[str, Any] = {
        "status": status or None,
        "task_type": task_type or None,
        "priority": int(priority) if priority else None,
    }
    rows = await backends.storage.list_tasks(
        **filters, before_id=cursor, limit=PAGE_SIZE, columns=PAGE_COLUMNS
    )
    shown = {k: v for k, v in filters.items() if v is not None}
    next_url = None
    if len(rows) == PAGE_SIZE:
        next_url = "/ui/tasks?" + urlencode({**shown, "cursor": rows[-1]["id"]})
    return render(
        request,
        sess,
        "_task_rows.html" if fragment else "tasks.html",
        tasks=rows,
        filters=filters,
        statuses=list(TaskStatus),
        priorities=PRIORITIES,
        task_types=[t.name for t in backends.registry],
        next_url=next_url,
        first_url="/ui/tasks?" + urlencode(shown) if cursor else None,
        live_url=None if cursor else "/ui/tasks?" + urlencode({**shown, "fragment": "true"}),
    )


@router.get("/tasks/{task_id}")
async def task_page(
    request: Request,
    sess: SessionDep,
    backends: BackendsDep,
    task_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    fragment: bool = False,
    done: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    """One task: input, result, error with its traceback, every attempt, and what can be done."""
    if not sess.can_see:
        return Response(status_code=401) if fragment else to_login(request)
    task = await backends.storage.get(task_id)
    if task is None:
        return render(request, sess, "missing.html", 404, what=f"Task {task_id}")
    return render(
        request,
        sess,
        "_task.html" if fragment else "task.html",
        task=task,
        notice=NOTICES.get(done or ""),
        finished=task["status"] in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED),
    )


@router.get("/task-types")
async def task_types(request: Request, sess: SessionDep, backends: BackendsDep) -> Response:
    if not sess.can_see:
        return to_login(request)
    described = [t.describe() for t in backends.registry]
    return render(
        request,
        sess,
        "task_types.html",
        types=described,
        failures=backends.registry.failures,
    )


def task_type_page(
    request: Request,
    sess: Session,
    backends: BackendsDep,
    name: str,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    """A task type's description, schemas and its generated form (with errors beside fields)."""
    if name not in backends.registry:
        return render(request, sess, "missing.html", 404, what=f"Task type {name}")
    described = backends.registry.get(name).describe()
    fields = forms.fields_of(described["input_schema"])
    return render(
        request,
        sess,
        "task_type.html",
        status_code,
        kind=described,
        fields=fields,
        values=values,
        errors=errors or {},
        form_errors=(errors or {}).get(forms.FORM_ERRORS),
        priorities=PRIORITIES,
    )


@router.get("/task-types/{name}")
async def task_type(
    request: Request, sess: SessionDep, backends: BackendsDep, name: str
) -> Response:
    if not sess.can_see:
        return to_login(request)
    return task_type_page(request, sess, backends, name)
