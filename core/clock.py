"""Time, in one place, always UTC and timezone-aware."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from lanewarden.core.errors import UsageError

# times a user may give: wide enough for any real schedule, narrow enough that adding a
# lease or a backoff to them never overflows
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


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
    out_of_range = UsageError(
        f"{text!r} is out of range: give a time between {EARLIEST.year} and {LATEST.year}"
    )
    try:
        when = now + parse_duration(stripped)
    except UsageError:
        when = None
    except OverflowError:  # 99999999d: past the end of the calendar
        raise out_of_range from None
    if when is None:
        try:
            parsed = datetime.fromisoformat(stripped.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            when = parsed.astimezone(UTC)
        except ValueError:
            raise UsageError(
                f"{text!r} is not a time; use ISO 8601 (2026-05-01T22:00, 2026-05-01T22:00+02:00) "
                "or a delay such as 30m or 2h"
            ) from None
        except OverflowError:  # 0001-01-01T00:00+05:00 has no UTC equivalent
            raise out_of_range from None
    if not EARLIEST <= when < LATEST:
        raise out_of_range
    return when


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
