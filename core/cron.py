"""Standard 5-field cron, validated and normalised.

``minute hour day-of-month month day-of-week`` with the meanings of cron(5): day of
week 0 or 7 is Sunday, names (``mon``, ``jan``) are accepted, and when both day fields
are restricted a time matches if *either* does. A sixth, leading field for seconds
(``*/10 * * * * *``) is accepted too, as in Quartz, for sub-minute windows. APScheduler counts weekdays from
Monday and ANDs its fields, so scheduler/ builds its triggers from a ``CronSpec`` and
never from the raw text.
"""

from __future__ import annotations

from dataclasses import dataclass

from lanewarden.core.errors import UsageError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
SECONDS_FIELD = ("second", 0, 59, {})
FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    (
        "month",
        1,
        12,
        {
            m: i + 1
            for i, m in enumerate(
                ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
            )
        },
    ),
    ("day-of-week", 0, 7, {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}),
)
WEEKDAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@dataclass(frozen=True, slots=True)
class CronSpec:
    expression: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]  # 0 = Sunday ... 6 = Saturday
    day_restricted: bool
    weekday_restricted: bool


def parse_cron(expression: str) -> CronSpec:
    text = " ".join(expression.strip().split())
    text = MACROS.get(text.lower(), text)
    parts = text.split(" ")
    if len(parts) not in (5, 6):
        raise UsageError(
            f"cron {expression!r} has {len(parts)} fields; use 5: minute hour day-of-month month "
            'day-of-week, e.g. "*/15 * * * *" or "0 22 * * 1-5" (or 6 with leading seconds)'
        )
    seconds = [0]
    if len(parts) == 6:
        seconds = _field(parts[0], *SECONDS_FIELD, expression)
        parts = parts[1:]
    values = [_field(part, *spec, expression) for part, spec in zip(parts, FIELDS, strict=True)]
    weekdays = tuple(sorted({d % 7 for d in values[4]}))
    return CronSpec(
        expression=text,
        seconds=tuple(seconds),
        minutes=tuple(values[0]),
        hours=tuple(values[1]),
        days=tuple(values[2]),
        months=tuple(values[3]),
        weekdays=weekdays,
        day_restricted=parts[2] not in ("*", "?"),
        weekday_restricted=parts[4] not in ("*", "?"),
    )


def _field(part: str, name: str, low: int, high: int, names: dict[str, int], expression: str) -> list[int]:
    found: set[int] = set()
    for item in part.lower().split(","):
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise UsageError(f"cron {expression!r}: {name} step {step_text!r} must be a positive number")
            step = int(step_text)
        if base in ("*", "?"):
            start, end = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            start, end = (
                _value(a, name, low, high, names, expression),
                _value(b, name, low, high, names, expression),
            )
            if start > end:
                raise UsageError(f"cron {expression!r}: {name} range {base!r} runs backwards")
        else:
            start = _value(base, name, low, high, names, expression)
            end = high if slash else start
        found.update(range(start, end + 1, step))
    return sorted(found)


def _value(text: str, name: str, low: int, high: int, names: dict[str, int], expression: str) -> int:
    if text in names:
        return names[text]
    if not text.isdigit():
        raise UsageError(f"cron {expression!r}: {name} value {text!r} is not a number or name")
    value = int(text)
    if not low <= value <= high:
        raise UsageError(f"cron {expression!r}: {name} value {value} is outside {low}-{high}")
    return value
