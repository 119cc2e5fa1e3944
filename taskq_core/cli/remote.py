"""The commands that talk to the REST API through taskq_client: submit, and tasks show, get,
cancel and retry. The API is TASKQ_API_URL (with TASKQ_API_KEY), else a running `taskq dev`'s."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from taskq_client import TaskQClient, WaitTimeoutError

from taskq_core import devstate
from taskq_core.cli import output
from taskq_core.errors import ConfigurationError
from taskq_core.settings import Settings

NO_API = (
    "no taskq API to talk to: set TASKQ_API_URL (and TASKQ_API_KEY if it wants one), or start "
    "`taskq dev` (or `make dev`) in another terminal"
)


def api_url(settings: Settings) -> str:
    url = os.environ.get("TASKQ_API_URL")
    if url:
        return url
    state = devstate.read(devstate.data_dir(settings) / devstate.STATE_FILE)
    if state is None:
        raise ConfigurationError(NO_API)
    return state.api_url


def client(settings: Settings) -> TaskQClient:
    # A person or a script is waiting: retry an outage briefly, then say so.
    return TaskQClient(api_url(settings), retries=2)


def _dump(model: Any) -> dict[str, Any]:
    result: dict[str, Any] = model.model_dump(mode="json")
    return result


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    try:
        data = json.loads(args.input)
    except ValueError as exc:
        raise ConfigurationError(f"INPUT is not JSON ({exc}): {args.input!r}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"INPUT must be a JSON object, like '{{\"n\": 10}}': {args.input}")
    with client(settings) as taskq:
        summary = taskq.submit(
            args.task_type,
            data,
            priority=args.priority,
            idempotency_key=args.idempotency_key,
            delay_seconds=args.delay,
        )
        if not args.wait:
            if args.json:
                output.print_json(_dump(summary))
            else:
                print(summary.id)
            return 0
        try:
            task = taskq.wait(summary.id, timeout=args.timeout)
        except WaitTimeoutError as exc:
            print(f"taskq: {exc}", file=sys.stderr)
            return 3
    if args.json:
        output.print_json(_dump(task))
    elif task.status == "completed":
        print(output.compact(task.result))
    if task.status != "completed":
        error = f": {task.error.type}: {task.error.message}" if task.error else ""
        print(f"taskq: task {task.id} {task.status}{error}", file=sys.stderr)
        return 1
    return 0


def cmd_tasks_show(args: argparse.Namespace, settings: Settings) -> int:
    limit = args.limit if args.count is None else args.count
    with client(settings) as taskq:
        tasks = [
            _dump(t)
            for t in taskq.list(
                status=args.status, task_type=args.type, priority=args.priority, limit=limit
            )
        ]
    if args.json:
        output.print_json(tasks)
    else:
        output.print_tasks(tasks, f"last {len(tasks)} task(s)")
    return 0


def cmd_tasks_get(args: argparse.Namespace, settings: Settings) -> int:
    if getattr(args, "follow", False):
        return _follow(args, settings)
    with client(settings) as taskq:
        task = _dump(taskq.get(args.id))
    if args.json:
        output.print_json(task)
    else:
        output.print_task(task)
    return 0


def _follow(args: argparse.Namespace, settings: Settings) -> int:
    """Print the task's status and progress as they change (one line each, or one JSON object
    each with --json), then the task once it has finished; exit 1 unless it completed."""
    last: dict[str, Any] | None = None
    with client(settings) as taskq:
        for task in taskq.follow(args.id):
            last = _dump(task)
            if args.json:
                output.print_json_line(last)
            else:
                print(output.progress_line(last), flush=True)
    if last is None:
        return 1
    if not args.json:
        output.print_task(last)
    return 0 if last["status"] == "completed" else 1


def cmd_tasks_cancel(args: argparse.Namespace, settings: Settings) -> int:
    with client(settings) as taskq:
        task = taskq.cancel(args.id)
    if args.json:
        output.print_json(_dump(task))
    elif task.status == "cancelled":
        print(f"task {task.id} cancelled")
    else:
        print(f"task {task.id} is {task.status}: its worker was asked to stop it")
    return 0


def cmd_tasks_retry(args: argparse.Namespace, settings: Settings) -> int:
    with client(settings) as taskq:
        task = taskq.retry(args.id)
    if args.json:
        output.print_json(_dump(task))
    else:
        print(f"task {task.id} is {task.status} again")
    return 0


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    task_commands: argparse._SubParsersAction[argparse.ArgumentParser],
    positive: Any,
) -> None:
    """Add `submit` to `commands` and show/get/cancel/retry to `task_commands`."""
    submit = commands.add_parser("submit", help="submit a task through the API")
    submit.add_argument("task_type", metavar="TYPE", help="a task type, e.g. FibonacciTask")
    submit.add_argument("input", metavar="INPUT", nargs="?", default="{}", help="JSON object")
    submit.add_argument("--priority", type=int, choices=range(1, 6), metavar="1-5")
    submit.add_argument("--delay", type=float, metavar="SECONDS", help="start no sooner")
    submit.add_argument("--idempotency-key", metavar="KEY", help="a repeat returns the first task")
    submit.add_argument(
        "--wait", action="store_true", help="wait for it to finish and print its result"
    )
    submit.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="with --wait: give up after this long"
    )
    _add_json(submit)
    submit.set_defaults(func=cmd_submit)

    show = task_commands.add_parser("show", help="list tasks, newest first (through the API)")
    show.add_argument("count", type=positive, metavar="N", nargs="?", help="same as --limit N")
    show.add_argument("--limit", type=positive, default=20, help="how many (default 20)")
    show.add_argument(
        "--status", choices=("pending", "running", "completed", "failed", "cancelled")
    )
    show.add_argument("--type", metavar="TYPE", help="only this task type")
    show.add_argument("--priority", type=int, choices=range(1, 6), metavar="1-5")
    _add_json(show)
    show.set_defaults(func=cmd_tasks_show)

    for name, func, text in (
        ("get", cmd_tasks_get, "show one task with its attempts"),
        ("cancel", cmd_tasks_cancel, "cancel a pending or running task"),
        ("retry", cmd_tasks_retry, "run a failed or cancelled task again"),
    ):
        command = task_commands.add_parser(name, help=f"{text} (through the API)")
        command.add_argument("id", type=positive, metavar="ID")
        if name == "get":
            command.add_argument(
                "--follow",
                action="store_true",
                help="print its status and progress as they change until it has finished",
            )
        _add_json(command)
        command.set_defaults(func=func)
