"""What any JSON a task carries must be before it is stored: JSON data, bounded, storable in
jsonb; and `check_input`, the one check of a task's input against its type, wherever the input
comes from.

PostgreSQL's jsonb refuses a string holding U+0000, UTF-8 has no lone surrogate (`"\\ud800"` in
JSON decodes to one) and jsonb no NaN or Infinity; a value nested
without end costs recursion wherever it is read; from Python, a value JSON has no form for (a
datetime, a set) would reach the type's model as something no request could send. Each is refused
here, at submit, with the path of the offending field, so nothing reaches the INSERT that
PostgreSQL would refuse.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from taskq_core.errors import InvalidTaskError

if TYPE_CHECKING:
    from taskq_core.plugins import TaskType

DEFAULT_MAX_BYTES = 256 * 1024  # input_data as compact JSON
DEFAULT_MAX_DEPTH = 32  # objects and arrays inside input_data


@dataclass(frozen=True, slots=True)
class InputLimits:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH


DEFAULT_LIMITS = InputLimits()

Loc = tuple[str | int, ...]


def _error(kind: str, loc: Loc, msg: str) -> dict[str, Any]:
    return {"type": kind, "loc": loc, "msg": msg, "input": None}


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _shown(key: str) -> str:
    """`key` as an error may name it: a lone surrogate cannot be written in a UTF-8 response."""
    return key if _encodable(key) else key.encode("utf-8", "backslashreplace").decode()


def problems(value: Any, loc: Loc, max_depth: int) -> list[dict[str, Any]]:
    """Errors (pydantic's shape, `loc` starting with `loc`) for every NUL in a string or key,
    every NaN or infinite number, every value that is not JSON data (objects with string keys,
    arrays (lists or tuples), strings, numbers, booleans, None), and the first place nesting
    passes `max_depth`.

    Iterative, so a value nested deeper than Python's recursion limit is refused, not crashed on.
    """
    found: list[dict[str, Any]] = []
    stack: list[tuple[Any, Loc, int]] = [(value, loc, 0)]
    too_deep = False
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                found.append(_error("string_nul", where, "must not contain the NUL character"))
            if not _encodable(item):
                found.append(_error("string_unicode", where, "must not contain a lone surrogate"))
        elif isinstance(item, float):
            if not math.isfinite(item):
                found.append(_error("finite_number", where, "must be a finite number"))
        elif isinstance(item, dict | list | tuple):
            if depth >= max_depth:
                if not too_deep:
                    found.append(_error("too_deep", where, f"nests deeper than {max_depth} levels"))
                    too_deep = True
                continue
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        # json.dumps would turn 1 into "1" unasked, and fail on the rest.
                        found.append(
                            _error("json_type", where, f"keys must be strings, not {key!r}")
                        )
                        continue
                    if "\x00" in key or not _encodable(key):
                        found.append(
                            _error(
                                "string_nul",
                                (*where, _shown(key)),
                                "keys must not contain NUL or a lone surrogate",
                            )
                        )
                    stack.append((child, (*where, key), depth + 1))
            else:
                stack.extend((child, (*where, i), depth + 1) for i, child in enumerate(item))
        elif not (item is None or isinstance(item, bool | int)):
            found.append(
                _error(
                    "json_type",
                    where,
                    "must be JSON data (an object, array, string, number, true, false or null), "
                    f"not {type(item).__name__}",
                )
            )
    return found


def size_problem(data: Any, loc: Loc, max_bytes: int) -> dict[str, Any] | None:
    """An error when `data`, as the compact JSON stored, is over `max_bytes`."""
    size = len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())
    if size <= max_bytes:
        return None
    return _error("too_large", loc, f"is {size} bytes as JSON; the limit is {max_bytes}")


def check_input(
    kind: TaskType, input_data: Any, limits: InputLimits = DEFAULT_LIMITS
) -> dict[str, Any]:
    """The one check of a task's input, wherever it comes from (a request to the API, the
    dashboard's form, `Client.enqueue`, a schedule): JSON data and storable, valid for the type's
    `Input` as JSON (`TaskType.parse_input`), and within `limits`. Returns what is stored: the
    input as the model dumps it (defaults filled in, values normalized), which the worker reads
    back the same way. Raises InvalidTaskError naming each bad field under `input_data`."""
    loc: Loc = ("input_data",)
    if not isinstance(input_data, dict):
        # The API's own words for a body whose `input_data` is no object.
        msg = "Input should be a valid dictionary"
        raise InvalidTaskError([{"type": "dict_type", "loc": loc, "msg": msg, "input": input_data}])
    unstorable = problems(input_data, loc, limits.max_depth)
    if unstorable:
        raise InvalidTaskError(unstorable)
    try:
        data = kind.parse_input(input_data)
    except ValidationError as exc:
        raise InvalidTaskError(
            [
                {
                    "type": e["type"],
                    "loc": (*loc, *e["loc"]),
                    "msg": e["msg"],
                    "input": e.get("input"),
                }
                for e in exc.errors(include_url=False, include_context=False)
            ]
        ) from None
    stored: dict[str, Any] = data.model_dump(mode="json")
    # The plugin's model may fill in defaults or transform: what is stored is checked again.
    errors = problems(stored, loc, limits.max_depth)
    too_large = size_problem(stored, loc, limits.max_bytes)
    if too_large is not None:
        errors.append(too_large)
    if errors:
        raise InvalidTaskError(errors)
    return stored
