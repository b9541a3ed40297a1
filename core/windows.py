"""Scheduled windows: a cron, a timezone and a board command, stored on the board.

The table is the source of truth; the leader's APScheduler (scheduler/) mirrors it.
Windows from ``[[scheduler.jobs]]`` are upserted at start with ``source = 'config'`` and
can only be changed in the config file.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from lanewarden.core.board import check_batch
from lanewarden.core.clock import utcnow
from lanewarden.core.commands import Digest, Pause, PromoteBatch, Resume
from lanewarden.core.config import NAME_PATTERN, JobConfig, LanewardenConfig
from lanewarden.core.cron import parse_cron
from lanewarden.core.errors import ConfigError, Conflict, LanewardenError, NotFound, UsageError
from lanewarden.core.grammar import Command, parse
from lanewarden.core.liveness import database_now
from lanewarden.core.schema import window_fires, windows
from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

if TYPE_CHECKING:
    from lanewarden.core.board import Board

DIGEST_HOURS_MAX = 24 * 31
WINDOW_VERBS = ("promote-batch", "promote", "pause", "resume", "digest")


@dataclass(frozen=True, slots=True)
class Window:
    name: str
    cron: str
    timezone: str
    command: str
    source: str
    created_by: str
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        return data


def host_timezone() -> str:
    try:
        from tzlocal import get_localzone_name

        return get_localzone_name() or "UTC"
    except Exception:  # no tz database entry for the host: UTC is the honest fallback
        return "UTC"


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"unknown timezone {name!r}; use an IANA name such as Europe/Paris or UTC") from None
    return name


def window_command(text: str, config: LanewardenConfig | None = None) -> Command:
    """Parse a window's command and check it as far as can be done before it fires: only the
    verbs a schedule may run, and (given the config) every option a run would refuse."""
    command = parse(text)
    if command.VERB.name not in WINDOW_VERBS:
        raise UsageError(f"a window runs {', '.join(WINDOW_VERBS)}; {command.VERB.name!r} is not one of them")
    if config is not None:
        _check_against(command, config)
    return command


def _check_against(command: Command, config: LanewardenConfig) -> None:
    """What the board would refuse when the window fires, found now instead."""
    profile = getattr(command, "profile", None)
    if profile is not None and profile not in config.profiles:
        known = ", ".join(sorted(config.profiles)) or "none configured"
        raise NotFound(f"no profile {profile!r} (known: {known})")
    gateway = getattr(command, "gateway", None)
    if gateway is not None and gateway not in config.gateways:
        known = ", ".join(sorted(config.gateways)) or "none configured"
        raise NotFound(f"no gateway {gateway!r} (known: {known})")
    if isinstance(command, PromoteBatch):
        check_batch(command.from_column, command.to_column, command.max)
    elif isinstance(command, Pause | Resume):
        if sum(bool(x) for x in (command.profile, command.gateway, command.board)) > 1:
            raise UsageError("name one of --board, --profile or --gateway")
    elif isinstance(command, Digest) and not 1 <= command.hours <= DIGEST_HOURS_MAX:
        raise UsageError(f"--hours must be between 1 and {DIGEST_HOURS_MAX}, got {command.hours}")


def check_jobs(config: LanewardenConfig) -> None:
    """Every ``[[scheduler.jobs]]`` entry, as ``windows add`` would check it; the first error
    is raised as a ConfigError that names the job (doctor reports it, serve refuses to start)."""
    for job in config.scheduler.jobs:
        try:
            validate(job.name, job.cron, job.timezone, job.command, config)
        except LanewardenError as exc:
            raise ConfigError(f"[[scheduler.jobs]] {job.name!r}: {exc}") from None


def validate(
    name: str, cron: str, timezone: str | None, command: str, config: LanewardenConfig | None = None
) -> tuple[str, str, str]:
    if not re.match(NAME_PATTERN, name):
        raise UsageError(f"window name {name!r}: use letters, digits, '-', '_' or '.' (at most 64)")
    spec = parse_cron(cron)
    zone = check_timezone(timezone or host_timezone())
    window_command(command, config)
    return spec.expression, zone, command.strip()


class WindowStore:
    def __init__(self, board: Board) -> None:
        self.board = board
        self.db = board.db

    def list(self) -> list[Window]:
        with self.db.read() as conn:
            return [Window(**row._mapping) for row in conn.execute(select(windows).order_by(windows.c.name))]

    def get(self, name: str) -> Window:
        with self.db.read() as conn:
            row = conn.execute(select(windows).where(windows.c.name == name)).first()
        if row is None:
            raise NotFound(f"no window {name!r}")
        return Window(**row._mapping)

    def add(self, name: str, cron: str, timezone: str | None, command: str, actor: str) -> Window:
        cron, zone, command = validate(name, cron, timezone, command, self.board.config)
        now = utcnow()
        with self.db.write() as conn:
            if conn.execute(select(windows.c.name).where(windows.c.name == name)).first():
                raise Conflict(f"a window named {name!r} exists; remove it first")
            _insert(conn, name, cron, zone, command, "user", actor, now)
            self.board.record(
                conn, actor, "window_added", f"window {name}: {cron} ({zone}) -> {command}", now=now
            )
            self.board.signal(conn, "windows")
        return self.get(name)

    def remove(self, name: str, actor: str) -> Window:
        window = self.get(name)
        if window.source == "config":
            raise Conflict(f"window {name!r} comes from [[scheduler.jobs]] in the config; remove it there")
        with self.db.write() as conn:
            conn.execute(delete(windows).where(windows.c.name == name))
            self.board.record(conn, actor, "window_removed", f"window {name} removed")
            self.board.signal(conn, "windows")
        return window

    def database_now(self) -> datetime:
        with self.db.read() as conn:
            return database_now(conn)

    def claim_fire(self, name: str, fire_time: datetime, holder: str) -> bool:
        """Record that ``name`` fires for ``fire_time``; False if it already fired for it (or
        for a later time): whichever leader asks, a scheduled time fires once."""
        try:
            with self.db.write() as conn:
                now = database_now(conn)
                values = {"fire_time": fire_time, "holder": holder, "fired_at": now}
                moved = conn.execute(
                    update(window_fires)
                    .where(window_fires.c.name == name, window_fires.c.fire_time < fire_time)
                    .values(**values)
                ).rowcount
                if moved:
                    return True
                if conn.execute(select(window_fires.c.name).where(window_fires.c.name == name)).first():
                    return False
                conn.execute(insert(window_fires).values(name=name, **values))
                return True
        except IntegrityError:  # another process recorded the first firing at the same moment
            return False

    def sync_config(self, jobs: list[JobConfig], actor: str = "config") -> None:
        """Make the config's windows match ``[[scheduler.jobs]]``; user windows are kept."""
        config = self.board.config
        wanted = {job.name: validate(job.name, job.cron, job.timezone, job.command, config) for job in jobs}
        now = utcnow()
        with self.db.write() as conn:
            existing = {r.name: r for r in conn.execute(select(windows))}
            for name, (cron, zone, command) in wanted.items():
                row = existing.get(name)
                if row is None:
                    _insert(conn, name, cron, zone, command, "config", actor, now)
                elif (row.cron, row.timezone, row.command, row.source) != (cron, zone, command, "config"):
                    conn.execute(
                        update(windows)
                        .where(windows.c.name == name)
                        .values(cron=cron, timezone=zone, command=command, source="config")
                    )
            for name, row in existing.items():
                if row.source == "config" and name not in wanted:
                    conn.execute(delete(windows).where(windows.c.name == name))
            self.board.signal(conn, "windows")


def _insert(
    conn: Connection, name: str, cron: str, zone: str, command: str, source: str, actor: str, now: datetime
) -> None:
    conn.execute(
        insert(windows).values(
            name=name,
            cron=cron,
            timezone=zone,
            command=command,
            source=source,
            created_by=actor,
            created_at=now,
        )
    )
