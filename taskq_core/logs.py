"""How every taskq process logs and names itself: one timestamp format (UTC ISO 8601 with `Z`,
as the API's answers), text or JSON lines (TASKQ_LOG_FORMAT=json), no library chatter at INFO,
outages logged when they start and end, and process titles that say what each process does."""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

import setproctitle

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes a LogRecord has of its own; anything else came through `extra=` and is a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
# Libraries whose INFO lines narrate their own work (a request, a migration step).
QUIET = ("httpx", "httpcore", "alembic", "uvicorn.access", "asyncio")


def timestamp(seconds: float) -> str:
    """`2026-11-29T05:49:42.123Z`: the format of every time taskq writes."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class TextFormatter(logging.Formatter):
    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return timestamp(record.created)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, pid, message, the record's `extra` fields,
    and the traceback as `exc` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        line.update(
            {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
        )
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup(level: str, fmt: str = "text", text_format: str = TEXT_FORMAT) -> None:
    """Log to stderr at `level`, as text or JSON lines, replacing any earlier set-up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(text_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def set_title(title: str) -> None:
    """What `ps` and `top` show for this process."""
    setproctitle.setproctitle(title)


class Outage:
    """Logs an outage of `what` once when it starts (with the back-off it retries with) and once
    when it ends, however many retries fail in between (those go to DEBUG)."""

    def __init__(self, log: logging.Logger, what: str, backoff_max: float) -> None:
        self.log = log
        self.what = what
        self.backoff_max = backoff_max
        self.since: float | None = None
        self.failures = 0

    def failed(self, exc: BaseException, retry_in: float) -> None:
        self.failures += 1
        if self.since is None:
            self.since = time.monotonic()
            self.log.warning(
                "%s unavailable (%s); retrying in %.1fs, backing off to every %.0fs",
                self.what,
                _first_line(exc),
                retry_in,
                self.backoff_max,
                extra={"outage": self.what, "state": "started"},
            )
        else:
            self.log.debug("%s still unavailable (%s)", self.what, _first_line(exc))

    def recovered(self) -> None:
        if self.since is None:
            return
        self.log.warning(
            "%s available again after %.1fs (%d failed attempt(s))",
            self.what,
            time.monotonic() - self.since,
            self.failures,
            extra={"outage": self.what, "state": "ended"},
        )
        self.since = None
        self.failures = 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
