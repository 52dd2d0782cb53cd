"""Access windows as the API spells them (`1h30m`) and as the operator computes with them.

The grammar is the one the CRD's pattern and CEL rules enforce at admission; the parser repeats
the check so a request that slipped past admission is answered with `Invalid`, never a crash.
"""

from __future__ import annotations

import re
from datetime import timedelta

from lapse.core.models import DURATION_PATTERN

_DURATION = re.compile(DURATION_PATTERN)


class DurationError(ValueError):
    """The text is not a positive duration in hours, minutes and seconds."""


def parse_duration(text: str) -> timedelta:
    """`2h`, `30m`, `1h30m`, `45s` → timedelta; anything else, or zero, raises DurationError."""
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise DurationError(f"{text!r} is not a duration such as 30m, 2h or 1h30m")
    hours, minutes, seconds = (int(part[:-1]) if part else 0 for part in match.groups())
    value = timedelta(hours=hours, minutes=minutes, seconds=seconds)
    if value <= timedelta(0):
        raise DurationError(f"{text!r} is not a positive duration")
    return value


def format_duration(value: timedelta) -> str:
    """The shortest canonical spelling: 5400 s → `1h30m`; sub-second parts are dropped."""
    total = int(value.total_seconds())
    if total <= 0:
        return "0s"
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    parts.append(f"{seconds}s" if seconds else "")
    return "".join(parts)
