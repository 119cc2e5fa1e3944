"""Operators' commands: purge and clear tasks, schedules, pausing task types."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from typing import Any

from taskq_core import schedules
from taskq_core.durations import parse_duration
from taskq_core.errors import ConfigurationError
from taskq_core.settings import Settings

FINISHED = ("completed", "failed", "cancelled")


def with_storage(settings: Settings, action: Callable[[Any], Any]) -> Any:
    """Run `action` on a Storage over the configured (or `taskq dev`'s) PostgreSQL."""
    from taskq_core import devstate
    from taskq_core.db import engines
    from taskq_core.db.storage import Storage

    database_url, _ = devstate.resolve_urls(settings)

    async def main() -> Any:
        engine = engines.async_engine(database_url, pool_size=1, prepare=settings.database_prepare)
        try:
            return await action(Storage(engine, settings.queue))
        finally:
            await engine.dispose()

    return asyncio.run(main())


def age(text: str) -> tuple[str, float]:
    """argparse type: `30d`, `12h`, `15m`, `45s`, as written and in seconds."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    assert seconds is not None
    return text, seconds


def cmd_purge(args: argparse.Namespace, settings: Settings) -> int:
    statuses = (args.status,) if args.status else FINISHED
    written, seconds = args.older_than
    deleted = with_storage(settings, lambda s: s.purge(seconds, statuses))
    print(f"deleted {deleted} {'/'.join(statuses)} task(s) finished more than {written} ago")
    return 0


def cmd_clear(args: argparse.Namespace, settings: Settings) -> int:
    deleted, kept = with_storage(
        settings, lambda s: s.clear(args.count, include_unfinished=args.include_unfinished)
    )
    if args.include_unfinished:
        print(f"deleted the {deleted} oldest task(s), pending and running ones included")
    else:
        print(f"deleted the {deleted} oldest finished task(s)")
        if kept:
            print(
                f"kept {kept} older pending or running task(s); --include-unfinished deletes "
                "them too"
            )
    return 0


# ---- schedules ------------------------------------------------------------------------------


def _print_schedules(rows: list[dict[str, Any]]) -> None:
    print("name\tcron\ttimezone\ttask_type\tpaused\tnext_run_at\tsource\tinput_data")
    for row in rows:
        print(
            "\t".join(
                [
                    row["name"],
                    row["cron"],
                    row["timezone"],
                    row["task_type"],
                    "paused" if row["paused"] else "active",
                    row["next_run_at"].isoformat(),
                    row["source"],
                    json.dumps(row["input_data"], separators=(",", ":")),
                ]
            )
        )


def cmd_schedules_list(args: argparse.Namespace, settings: Settings) -> int:
    _print_schedules(with_storage(settings, lambda s: s.list_schedules()))
    return 0


def cmd_schedules_create(args: argparse.Namespace, settings: Settings) -> int:
    from taskq_core.plugins import load_registry

    try:
        input_data = json.loads(args.input)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"INPUT is not JSON: {exc}") from None
    values = schedules.validate(
        load_registry(),
        {
            "name": args.name,
            "cron": args.cron,
            "timezone": args.timezone,
            "task_type": args.task_type,
            "input_data": input_data,
            "priority": args.priority,
            "catch_up": args.catch_up,
            "paused": False,
        },
    )
    # The database's clock, which the workers fire ticks on, not this host's.
    now = with_storage(settings, lambda s: s.now())
    values["next_run_at"] = schedules.next_tick(values["cron"], values["timezone"], now)
    row = with_storage(settings, lambda s: s.create_schedule(values))
    _print_schedules([row])
    return 0


def cmd_schedules_pause(args: argparse.Namespace, settings: Settings) -> int:
    async def action(storage: Any) -> dict[str, Any]:
        current = await storage.get_schedule(args.name)
        paused = args.schedules_command == "pause"
        restart = None
        if current["paused"] and not paused:  # resuming: from the next tick after now
            restart = schedules.next_tick(current["cron"], current["timezone"], await storage.now())
        return dict(await storage.update_schedule(args.name, {"paused": paused}, restart))

    _print_schedules([with_storage(settings, action)])
    return 0


def cmd_schedules_delete(args: argparse.Namespace, settings: Settings) -> int:
    with_storage(settings, lambda s: s.delete_schedule(args.name))
    print(f"deleted schedule {args.name}")
    return 0


# ---- task types -----------------------------------------------------------------------------


def cmd_task_types_pause(args: argparse.Namespace, settings: Settings) -> int:
    paused = args.task_types_command == "pause"
    with_storage(settings, lambda s: s.set_paused(args.name, paused))
    print(f"{args.name} {'paused' if paused else 'resumed'}")
    return 0


def cmd_task_types_paused(args: argparse.Namespace, settings: Settings) -> int:
    rows = with_storage(settings, lambda s: s.paused_task_types())
    print("task_type\tpaused_at")
    for name, since in sorted(rows.items()):
        print(f"{name}\t{since.isoformat()}")
    return 0


# ---- parsers --------------------------------------------------------------------------------


def add_task_commands(task_commands: Any) -> None:
    """`tasks purge` (and the `clear` options) on the `tasks` sub-command."""
    purge = task_commands.add_parser(
        "purge", help="delete finished tasks older than a duration, now (the sweeper's retention)"
    )
    purge.add_argument(
        "--older-than", required=True, type=age, metavar="D", help="e.g. 7d, 12h, 15m, 45s"
    )
    purge.add_argument("--status", choices=FINISHED, help="only this status (default: all three)")
    purge.set_defaults(func=cmd_purge)


def add_commands(commands: Any, positive: Callable[[str], int]) -> None:
    """`taskq schedules ...` and `taskq task-types ...`."""
    group = commands.add_parser("schedules", help="periodic tasks")
    actions = group.add_subparsers(dest="schedules_command", required=True, metavar="ACTION")
    actions.add_parser("list", help="every schedule, tab-separated").set_defaults(
        func=cmd_schedules_list
    )
    create = actions.add_parser("create", help="run a task type at every tick of a cron")
    create.add_argument("name")
    create.add_argument("cron", help="e.g. '0 * * * *' (hourly); six fields put seconds first")
    create.add_argument("task_type")
    create.add_argument("input", nargs="?", default="{}", help="JSON input (default {})")
    create.add_argument("--timezone", default="UTC", help="IANA time zone (default UTC)")
    create.add_argument("--priority", type=int, choices=range(1, 6), metavar="1..5")
    create.add_argument(
        "--catch-up",
        choices=schedules.CATCH_UP_POLICIES,
        default="once",
        help="ticks missed during an outage: run once for them all (default), or skip",
    )
    create.set_defaults(func=cmd_schedules_create)
    for verb, text in (("pause", "stop creating tasks"), ("resume", "start again from now")):
        command = actions.add_parser(verb, help=text)
        command.add_argument("name")
        command.set_defaults(func=cmd_schedules_pause)
    delete = actions.add_parser("delete", help="delete a schedule (its tasks stay)")
    delete.add_argument("name")
    delete.set_defaults(func=cmd_schedules_delete)

    types = commands.add_parser("task-types", help="pause and resume task types")
    type_actions = types.add_subparsers(dest="task_types_command", required=True, metavar="ACTION")
    for verb, text in (
        ("pause", "no task of this type starts until resumed; the rest keep running"),
        ("resume", "let tasks of this type start again"),
    ):
        command = type_actions.add_parser(verb, help=text)
        command.add_argument("name", help="the task type, e.g. EmailTask")
        command.set_defaults(func=cmd_task_types_pause)
    type_actions.add_parser("paused", help="the paused task types").set_defaults(
        func=cmd_task_types_paused
    )
