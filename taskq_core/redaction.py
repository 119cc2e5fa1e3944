"""Keeping secrets out of output: passwords in URLs, API keys, and a logging filter for both.

Print a URL only through `redact_url`; every taskq process installs `RedactingFilter` on its log
handlers (the CLI's `_setup_logging`, uvicorn's config from `uvicorn_log_config`), so a driver
error that echoes a connection string or a key cannot put the secret in a log line.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
_SECRET_QUERY_KEYS = {"password", "pass", "passwd", "sslpassword", "token", "secret"}
# scheme://user:password@  (user may be empty: redis://:password@host)
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)([^@\s/]+)@")
_QUERY_PASSWORD = re.compile(
    r"([?&](?:" + "|".join(sorted(_SECRET_QUERY_KEYS)) + r")=)([^&\s]+)", re.IGNORECASE
)
# taskq's own API keys (db/keys.py: "tq_" + token_urlsafe(32)), and any bearer credential.
_API_KEY = re.compile(r"\btq_[A-Za-z0-9_-]{20,}")
_BEARER = re.compile(r"(\bBearer\s+)[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
# What each of the four patterns needs to match at all: a text without any of these (nearly every
# log line, a worker's line per task among them) is left alone after one scan instead of four.
_MAYBE_SECRET = re.compile(r"://|[?&]|tq_|bearer", re.IGNORECASE)


def redact_url(url: str) -> str:
    """`url` with its password (and secret query parameters) replaced by ***; user kept."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in _SECRET_QUERY_KEYS for k, _ in pairs):
            query = urlencode(
                [(k, MASK if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs]
            )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact(text: str) -> str:
    """`text` with URL passwords, API keys and bearer credentials replaced by ***."""
    if _MAYBE_SECRET.search(text) is None:
        return text
    text = _URL_PASSWORD.sub(rf"\1{MASK}@", text)
    text = _QUERY_PASSWORD.sub(rf"\1{MASK}", text)
    text = _BEARER.sub(rf"\1{MASK}", text)
    return _API_KEY.sub(f"tq_{MASK}", text)


class RedactingFilter(logging.Filter):
    """Redacts every record's message and traceback before a handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Formatted once here; the formatter then finds it done (args None).
        record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Put a RedactingFilter on every handler of `logger` (default: the root logger)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def uvicorn_log_config(root_format: str, level: str) -> dict[str, Any]:
    """uvicorn's own logging configuration with the filter on each of its handlers, and a
    filtered stderr handler for everything else (taskq's loggers), in `root_format`. uvicorn
    applies it in each API process, the extra ones of `--workers N` included."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact"] = {"()": RedactingFilter}
    config["formatters"]["taskq"] = {"format": root_format}
    config["handlers"]["taskq"] = {
        "class": "logging.StreamHandler",
        "formatter": "taskq",
        "stream": "ext://sys.stderr",
    }
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact")
    config["root"] = {"handlers": ["taskq"], "level": level.upper()}
    return config
