"""The dashboard's forms (POST): log in and out, submit a task, cancel or retry one. Every POST
carries the session's CSRF token; acting on tasks needs an admin key, submitting a submit key."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Path, Request
from fastapi.responses import RedirectResponse, Response

from taskq_core import enqueue
from taskq_core.api.deps import BackendsDep
from taskq_core.api.routes.tasks import retry_and_dispatch
from taskq_core.api.ui import forms, keys, session
from taskq_core.api.ui.pages import render, task_type_page
from taskq_core.api.ui.session import Session, SessionDep
from taskq_core.errors import InvalidTaskError, TaskNotFoundError, TaskStateError
from taskq_core.records import TaskStatus

router = APIRouter(prefix="/ui", include_in_schema=False)
TaskId = Annotated[int, Path(ge=1, le=2**63 - 1)]


async def form_of(request: Request) -> dict[str, str]:
    """The posted urlencoded form (the body size is already capped by the API's limit)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return dict(parse_qsl(body, keep_blank_values=True))


def refused(request: Request, sess: Session, why: str, status_code: int = 403) -> Response:
    return render(request, sess, "refused.html", status_code, why=why)


def redirect(request: Request, sess: Session, url: str) -> Response:
    response = RedirectResponse(url, status_code=303)
    if sess.fresh:
        session.store(request, response, sess)
    return response


def _safe_next(target: str | None) -> str:
    # Only our own pages: never an absolute URL or a scheme-relative one (open redirect).
    if target and target.startswith("/ui") and not target.startswith("//"):
        return target
    return "/ui"


@router.get("/login")
async def login_page(request: Request, sess: SessionDep, next: str | None = None) -> Response:
    if sess.open_api:
        return redirect(request, sess, _safe_next(next))
    return render(request, sess, "login.html", next=_safe_next(next), error=None)


@router.post("/login")
async def login(request: Request, sess: SessionDep) -> Response:
    form = await form_of(request)
    if not session.csrf_ok(request, sess, form.get("csrf_token")):
        return refused(request, sess, "The form expired; reload the page and try again.")
    target = _safe_next(form.get("next"))
    if sess.open_api:
        return redirect(request, sess, target)
    holder = await keys.check(request, form.get("key", "").strip())
    if holder is None or holder.open:
        return render(request, sess, "login.html", 401, next=target, error="That key is not valid.")
    if not holder.scopes & {keys.READ, keys.ADMIN}:
        error = "That key cannot read tasks: the dashboard needs a read or admin key."
        return render(request, sess, "login.html", 403, next=target, error=error)
    # A new session id on login, so a token or cookie planted before it is worthless.
    fresh = session.new_session(
        holder.scopes, holder.owner, open_api=False, key_hash=holder.key_hash
    )
    return redirect(request, fresh, target)


@router.post("/logout")
async def logout(request: Request, sess: SessionDep) -> Response:
    form = await form_of(request)
    if not session.csrf_ok(request, sess, form.get("csrf_token")):
        return refused(request, sess, "The form expired; reload the page and try again.")
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(session.COOKIE, path="/ui")
    return response


@router.post("/task-types/{name}")
async def submit(request: Request, sess: SessionDep, backends: BackendsDep, name: str) -> Response:
    """Submit a task from the generated form; invalid input shows beside its field (422)."""
    form = await form_of(request)
    if not session.csrf_ok(request, sess, form.get("csrf_token")):
        return refused(request, sess, "The form expired; reload the page and try again.")
    if not sess.can_submit:
        return refused(request, sess, "Your key cannot submit tasks (it needs submit or admin).")
    if name not in backends.registry:
        return task_type_page(request, sess, backends, name)
    fields = forms.fields_of(backends.registry.get(name).describe()["input_schema"])
    data, errors = forms.parse(fields, form)
    priority: int | None = None
    delay: float | None = None
    try:
        priority = int(form["priority"]) if form.get("priority") else None
    except ValueError:
        errors["priority"] = "Choose a priority from 1 to 5."
    try:
        delay = float(form["delay_seconds"]) if form.get("delay_seconds") else None
        if delay is not None and not 0 <= delay <= 365 * 24 * 3600:
            errors["delay_seconds"] = "Between 0 and one year."
    except ValueError:
        errors["delay_seconds"] = "A number of seconds."
    if not errors:
        try:
            new = enqueue.prepare(
                backends.registry,
                name,
                data,
                priority,
                delay_seconds=delay,
                submitted_by=sess.owner or "",
            )
        except InvalidTaskError as exc:
            errors = forms.errors_by_field(exc.errors, fields)
    if errors:
        return task_type_page(request, sess, backends, name, form, errors, status_code=422)
    rows = await enqueue.submit(backends.storage, backends.broker, [new])
    return redirect(request, sess, f"/ui/tasks/{rows[0]['id']}")


async def _checked(request: Request, sess: Session) -> Response | None:
    """A refusal unless the POST carries the CSRF token and the session may act."""
    form = await form_of(request)
    if not session.csrf_ok(request, sess, form.get("csrf_token")):
        return refused(request, sess, "The form expired; reload the page and try again.")
    if not sess.can_act:
        return refused(request, sess, "Your key can read but not act: cancel and retry need admin.")
    return None


def _back(task_id: int, done: str) -> str:
    # A code, not the text: a link someone sends cannot make our page say what they like.
    return f"/ui/tasks/{task_id}?{urlencode({'done': done})}"


@router.post("/tasks/{task_id}/cancel")
async def cancel(
    request: Request, sess: SessionDep, backends: BackendsDep, task_id: TaskId
) -> Response:
    if (refusal := await _checked(request, sess)) is not None:
        return refusal
    try:
        task = await backends.storage.cancel(task_id)
    except TaskNotFoundError:
        return render(request, sess, "missing.html", 404, what=f"Task {task_id}")
    except TaskStateError:
        return redirect(request, sess, _back(task_id, "not-cancelled"))
    if task["status"] == TaskStatus.RUNNING:
        await backends.broker.request_cancel(task_id)  # as POST /tasks/{id}/cancel does
        return redirect(request, sess, _back(task_id, "stopping"))
    return redirect(request, sess, _back(task_id, "cancelled"))


@router.post("/tasks/{task_id}/retry")
async def retry(
    request: Request, sess: SessionDep, backends: BackendsDep, task_id: TaskId
) -> Response:
    """Run a failed or cancelled task again, as POST /tasks/{id}/retry does."""
    if (refusal := await _checked(request, sess)) is not None:
        return refusal
    try:
        await retry_and_dispatch(backends, task_id)
    except TaskNotFoundError:
        return render(request, sess, "missing.html", 404, what=f"Task {task_id}")
    except TaskStateError:
        return redirect(request, sess, _back(task_id, "not-retried"))
    return redirect(request, sess, _back(task_id, "retried"))
