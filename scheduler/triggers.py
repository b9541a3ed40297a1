"""APScheduler triggers built from a standard cron spec (core/cron.py), not raw text.

Why not ``CronTrigger.from_crontab``: APScheduler numbers weekdays from Monday and ANDs
day-of-month with day-of-week, while cron(5) counts from Sunday and ORs them when both
are restricted. We pass explicit weekday names and build an OR of two triggers.

DST, defined once here and tested: a window that falls in the hour skipped in spring
runs once, one wall-clock hour late (at the instant it would have had before the
change, which is APScheduler's own choice); a window in the hour repeated in autumn
runs once, on the first pass. A batch window must never release its batch twice.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from lanewarden.core.cron import WEEKDAY_NAMES, CronSpec, parse_cron


def _field(values: tuple[int, ...]) -> str:
    return ",".join(str(v) for v in values)


class CronWindowTrigger(BaseTrigger):
    """cron(5) semantics over APScheduler's CronTrigger, at most once per wall-clock time."""

    def __init__(self, expression: str, timezone: str) -> None:
        self.expression = expression
        self.timezone = timezone
        self._build()

    def _build(self) -> None:
        spec: CronSpec = parse_cron(self.expression)
        zone: tzinfo = ZoneInfo(self.timezone)
        self._zone = zone
        common = {
            "second": _field(spec.seconds),
            "minute": _field(spec.minutes),
            "hour": _field(spec.hours),
            "month": _field(spec.months),
            "timezone": zone,
        }
        weekdays = ",".join(WEEKDAY_NAMES[d] for d in spec.weekdays)
        if spec.day_restricted and spec.weekday_restricted:
            self._inner: BaseTrigger = OrTrigger(
                [
                    CronTrigger(day=_field(spec.days), day_of_week="*", **common),
                    CronTrigger(day="*", day_of_week=weekdays, **common),
                ]
            )
        else:
            self._inner = CronTrigger(
                day=_field(spec.days) if spec.day_restricted else "*",
                day_of_week=weekdays if spec.weekday_restricted else "*",
                **common,
            )

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        candidate = self._inner.get_next_fire_time(previous_fire_time, now)
        # the second pass through an autumn hour repeats wall-clock times already served
        while candidate is not None and candidate.astimezone(self._zone).fold == 1:
            candidate = self._inner.get_next_fire_time(candidate, candidate)
        return candidate

    def __getstate__(self) -> dict[str, object]:
        return {"version": 1, "expression": self.expression, "timezone": self.timezone}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.expression = str(state["expression"])
        self.timezone = str(state["timezone"])
        self._build()

    def __str__(self) -> str:
        return f"cron[{self.expression} {self.timezone}]"

    def __repr__(self) -> str:
        return f"CronWindowTrigger({self.expression!r}, {self.timezone!r})"
