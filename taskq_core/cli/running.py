"""What every command shares: settings from the environment, logging, and one line per failure.

Kept free of the commands' own imports, so `taskq-worker` starts without the API client, rich or
the database layer (start-up time is how fast a worker scaled from zero takes its first task).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from taskq_core import logs
from taskq_core.cli import failures
from taskq_core.errors import TaskqError
from taskq_core.settings import Settings

log = logging.getLogger("taskq")


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def setup_logging(settings: Settings) -> None:
    from taskq_core import redaction

    logs.setup(settings.log_level, settings.log_format)
    redaction.install()


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse `argv`, build the settings and run the chosen command's `func(args, settings)`."""
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValueError as exc:  # pydantic's ValidationError: a TASKQ_* variable is malformed
        print(f"taskq: {failures.describe_settings(exc)}", file=sys.stderr)
        return 2
    setup_logging(settings)
    try:
        code: int = args.func(args, settings)
    except TaskqError as exc:
        print(f"taskq: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # One line, never a traceback (TASKQ_LOG_LEVEL=DEBUG logs it for a bug report).
        log.debug("%s failed", args.command, exc_info=exc)
        print(f"taskq: {failures.describe(exc)}", file=sys.stderr)
        return 1
    return code
