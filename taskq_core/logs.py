"""How every taskq process logs and names itself: one timestamp format (UTC ISO 8601 with `Z`,
as the API's answers), text or JSON lines (TASKQ_LOG_FORMAT=json), no library chatter at INFO,
outages logged when they start and end, and process titles that say what each process does."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any

import setproctitle

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes a LogRecord has of its own; anything else came through `extra=` and is a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
# Libraries whose INFO lines narrate their own work (a request, a migration step).
QUIET = ("httpx", "httpcore", "alembic", "uvicorn.access", "asyncio")


# The fields of a LogRecord that cost something to fill in (a frame walk; the current thread)
# and the format keys that need each: taskq's formats use none of them. See "Optimization" in
# the logging HOWTO, which names these switches.
_SOURCE_KEYS = ("%(pathname", "%(filename", "%(module", "%(funcName", "%(lineno")
_THREAD_KEYS = ("%(thread", "%(threadName")
_SRCFILE = logging._srcfile


# The text of the latest whole second: a worker writes thousands of lines a second, and formatting
# the date was a fifth of each line's cost. One tuple, replaced whole: safe across threads.
_second: tuple[int, str] = (-1, "")


def timestamp(seconds: float) -> str:
    """`2026-11-29T05:49:42.123Z`: the format of every time taskq writes."""
    global _second
    whole = int(seconds)
    second, prefix = _second
    if second != whole:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(whole))
        _second = (whole, prefix)
    return f"{prefix}{int((seconds - whole) * 1000):03d}Z"


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


class TurnHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes the lines of one turn of the running event loop together.

    A worker logs a line per task, thousands a second: a write (a system call, and a wake-up of
    whatever reads the stream) per line was a tenth of each line's cost. Lines logged in an
    event loop's thread wait at most until the end of the loop's current turn. A warning or
    worse, a line from another thread or from outside a running loop is written at once, after
    those waiting before it; and whatever waits is written at exit (logging.shutdown flushes)."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._waiting: list[str] = []
        self._turn_of: asyncio.AbstractEventLoop | None = None  # whose turn's end will write

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._waiting.append(self.format(record) + self.terminator)
            if record.levelno < logging.WARNING:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    pass
                else:
                    if self._turn_of is not loop:
                        self._turn_of = loop
                        loop.call_soon(self._end_of_turn)
                    return
            self.flush()
        except Exception:
            self.handleError(record)

    def _end_of_turn(self) -> None:
        self._turn_of = None
        self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._waiting:
                text = "".join(self._waiting)
                self._waiting.clear()
                self.stream.write(text)
            super().flush()


def setup(level: str, fmt: str = "text", text_format: str = TEXT_FORMAT) -> None:
    """Log to stderr at `level`, as text or JSON lines, replacing any earlier set-up."""
    handler = TurnHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(text_format))
    shown = "" if fmt == "json" else text_format
    logging._srcfile = _SRCFILE if any(key in shown for key in _SOURCE_KEYS) else None
    logging.logThreads = any(key in shown for key in _THREAD_KEYS)
    logging.logMultiprocessing = "%(processName" in shown
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
