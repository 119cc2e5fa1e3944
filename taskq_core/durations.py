"""Durations as operators write them (`30d`, `12h`, `15m`, `45s`, `off`), parsed to seconds."""

from __future__ import annotations

import re

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}  # seconds per unit
_PATTERN = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([dhms])\s*$")
OFF = "off"


def parse_duration(text: str, *, allow_off: bool = False) -> float | None:
    """Seconds in `text` (`30d`, `12h`, `15m`, `45s`); None for `off` when allowed.

    Raises ValueError naming the accepted forms."""
    if allow_off and text.strip().lower() == OFF:
        return None
    match = _PATTERN.match(text)
    if match is None:
        forms = "30d, 12h, 15m, 45s" + (" or off" if allow_off else "")
        raise ValueError(f"{text!r} is not a duration; write it as {forms}")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return seconds
