"""What any JSON a task carries must be before it is stored: bounded, and storable in jsonb.

PostgreSQL's jsonb refuses a string holding U+0000, UTF-8 has no lone surrogate (`"\\ud800"` in
JSON decodes to one) and jsonb no NaN or Infinity; a value nested
without end costs recursion wherever it is read. Each is refused here, at submit, with the path
of the offending field, so nothing reaches the INSERT that PostgreSQL would refuse.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

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
    every NaN or infinite number, and the first place nesting passes `max_depth`.

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
        elif isinstance(item, dict | list):
            if depth >= max_depth:
                if not too_deep:
                    found.append(_error("too_deep", where, f"nests deeper than {max_depth} levels"))
                    too_deep = True
                continue
            if isinstance(item, dict):
                for key, child in item.items():
                    if isinstance(key, str) and ("\x00" in key or not _encodable(key)):
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
    return found


def size_problem(data: Any, loc: Loc, max_bytes: int) -> dict[str, Any] | None:
    """An error when `data`, as the compact JSON stored, is over `max_bytes`."""
    size = len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())
    if size <= max_bytes:
        return None
    return _error("too_large", loc, f"is {size} bytes as JSON; the limit is {max_bytes}")
