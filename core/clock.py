"""Time, in one place, always UTC and timezone-aware."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from lanewarden.core.errors import UsageError


def utcnow() -> datetime:
    return datetime.now(UTC)


_DURATION = re.compile(r"^\+?(?:in\s+)?(\d+(?:\.\d+)?)\s*(s|sec|secs|m|min|mins|h|hr|hrs|d|day|days)$")
_UNIT_SECONDS = {
    "s": 1,
    "sec": 1,
    "secs": 1,
    "m": 60,
    "min": 60,
    "mins": 60,
    "h": 3600,
    "hr": 3600,
    "hrs": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``2h``, ``1d`` (also ``+15m`` and ``in 15m``)."""
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise UsageError(f"{text!r} is not a duration; use e.g. 90s, 15m, 2h or 1d")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """An absolute ISO 8601 time (UTC unless it names an offset) or a duration from now."""
    now = now or utcnow()
    stripped = text.strip()
    try:
        return now + parse_duration(stripped)
    except UsageError:
        pass
    try:
        parsed = datetime.fromisoformat(stripped.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{text!r} is not a time; use ISO 8601 (2026-05-01T22:00, 2026-05-01T22:00+02:00) "
            "or a delay such as 30m or 2h"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def age(since: datetime | None, now: datetime | None = None) -> str:
    """A short human age: ``42s``, ``7m``, ``3h``, ``2d``."""
    if since is None:
        return "-"
    return format_seconds(((now or utcnow()) - since).total_seconds())


def format_seconds(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
