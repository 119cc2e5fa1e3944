"""One clear line for any failure of a command: what went wrong, in words, without a traceback."""

from __future__ import annotations


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe(exc: BaseException) -> str:
    """A one-line account of `exc`, naming the server it concerns when it is an outage."""
    # By module, so describing a failure imports no driver the command did not.
    module = type(exc).__module__
    original = getattr(exc, "orig", None)  # SQLAlchemy wraps the driver's error
    if module.startswith(("sqlalchemy", "psycopg")):
        reason = _first_line(original if original is not None else exc)
        return f"PostgreSQL unavailable or refused the request: {reason}"
    if module.startswith(("redis", "valkey")):
        return f"Redis unavailable: {_first_line(exc)}"
    if module.startswith("taskq_client"):
        if getattr(exc, "status_code", None) == 401:
            return "the API needs a key: set TASKQ_API_KEY (`taskq keys create --scope read`)"
        if getattr(exc, "status_code", None) == 403:
            return f"TASKQ_API_KEY's scope does not allow this: {_first_line(exc)}"
        return _first_line(exc)  # the API's own message
    if module.startswith("taskq_core.embedded"):
        return _first_line(exc)
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {_first_line(exc)}"
    return f"unexpected {type(exc).__name__}: {_first_line(exc)}"


def describe_settings(exc: ValueError) -> str:
    """A malformed TASKQ_* variable, named, in one line."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return f"invalid settings: {_first_line(exc)}"
    parts = [f"TASKQ_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in errors()]
    return "invalid settings: " + "; ".join(parts)
