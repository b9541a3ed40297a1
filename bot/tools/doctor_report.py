"""Doctor's report: one line per check, ``ok``, ``WARN`` or ``FAIL``, with the fix."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

OK, WARN, FAIL = "ok", "WARN", "FAIL"
EXIT_STATUS = {OK: 0, WARN: 1, FAIL: 2}


@dataclass(frozen=True, slots=True)
class Check:
    level: str
    name: str
    message: str
    fix: str = ""

    def line(self) -> str:
        tail = f" -> {self.fix}" if self.fix else ""
        return f"{self.level:<4} {self.name}: {self.message}{tail}"


class Report:
    def __init__(self, out: Callable[[str], None]) -> None:
        self.out = out
        self.checks: list[Check] = []

    def add(self, level: str, name: str, message: str, fix: str = "") -> None:
        check = Check(level, name, message, fix)
        self.checks.append(check)
        self.out(check.line())

    @property
    def worst(self) -> str:
        levels = {c.level for c in self.checks}
        return FAIL if FAIL in levels else WARN if WARN in levels else OK


def ago(delta: timedelta) -> str:
    seconds = max(0.0, delta.total_seconds())
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.0f}d"


def first_line(value: Any) -> str:
    lines = str(value).strip().splitlines()
    return lines[0][:300] if lines else type(value).__name__
