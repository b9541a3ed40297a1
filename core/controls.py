"""Caps and pauses: the live controls an admin changes for every process on the board.

A mixin of ``Board`` (core/board.py): each change is one short transaction that also
records its event and wakes the dispatchers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lanewarden.core.caps import (
    SCOPES,
    Limits,
    Usage,
    config_caps,
    config_disagreements,
    scope_label,
    seed_caps,
)
from lanewarden.core.clock import utcnow
from lanewarden.core.db import retry_on_conflict
from lanewarden.core.errors import NotFound, UsageError
from lanewarden.core.schema import cap_overrides, pauses
from sqlalchemy import Connection, Table, delete
from sqlalchemy.dialects import postgresql, sqlite

if TYPE_CHECKING:
    from lanewarden.core.config import LanewardenConfig
    from lanewarden.core.db import Database

CAP_RANGE = (0, 100_000)


def upsert(db: Database, table: Table) -> Any:
    """``INSERT ... ON CONFLICT`` in the board's dialect (both have the same API)."""
    return (postgresql.insert if db.is_postgres else sqlite.insert)(table)


class Controls:
    """Caps (``caps set``/``caps reset``) and pauses (``pause``/``resume``)."""

    db: Database
    config: LanewardenConfig

    if TYPE_CHECKING:  # provided by Board

        def record(self, conn: Connection, actor: str, kind: str, message: str, **kw: Any) -> Any: ...

        def signal(self, conn: Connection, topic: str) -> None: ...

    @retry_on_conflict
    def set_cap(self, scope: str, name: str | None, value: int, actor: str) -> None:
        scope_name = self._scope_name(scope, name)
        if not CAP_RANGE[0] <= value <= CAP_RANGE[1]:
            raise UsageError(f"cap must be between {CAP_RANGE[0]} and {CAP_RANGE[1]}, got {value}")
        now = utcnow()
        with self.db.write() as conn:
            # an upsert: two admins setting the same cap at once both succeed, the later wins
            row = {"scope": scope, "name": scope_name, "value": value, "set_by": actor, "set_at": now}
            conn.execute(
                upsert(self.db, cap_overrides)
                .values(**row)
                .on_conflict_do_update(
                    index_elements=[cap_overrides.c.scope, cap_overrides.c.name],
                    set_={"value": value, "set_by": actor, "set_at": now},
                )
            )
            label = scope_label(scope, scope_name)
            self.record(
                conn,
                actor,
                "caps_changed",
                f"{label} cap set to {value}",
                data={"scope": scope, "name": scope_name, "value": value},
                now=now,
            )
            self.signal(conn, "dispatch")

    @retry_on_conflict
    def reset_cap(self, scope: str, name: str | None, actor: str) -> None:
        scope_name = self._scope_name(scope, name)
        with self.db.write() as conn:
            conn.execute(
                delete(cap_overrides).where(
                    cap_overrides.c.scope == scope, cap_overrides.c.name == scope_name
                )
            )
            # the board keeps a value for every process: the config of whoever resets it
            seed_caps(conn, self.config, utcnow(), keys=[(scope, scope_name)])
            value = config_caps(self.config).get((scope, scope_name))
            label = scope_label(scope, scope_name)
            self.record(
                conn,
                actor,
                "caps_changed",
                f"{label} cap back to the config value ({value}) for every process",
                data={"scope": scope, "name": scope_name, "value": value},
            )
            self.signal(conn, "dispatch")

    @retry_on_conflict
    def pause(self, scope: str, name: str | None, actor: str) -> bool:
        """Stop new claims for the board, a profile or a gateway. False if already paused."""
        scope_name = self._scope_name(scope, name)
        with self.db.write() as conn:
            # insert-or-nothing: of several concurrent pauses exactly one takes effect
            added = conn.execute(
                upsert(self.db, pauses)
                .values(scope=scope, name=scope_name, paused_by=actor, paused_at=utcnow())
                .on_conflict_do_nothing(index_elements=[pauses.c.scope, pauses.c.name])
                .returning(pauses.c.scope)
            ).first()
            if added is None:
                return False
            label = scope_label(scope, scope_name)
            self.record(conn, actor, "paused", f"{label} paused", data={"scope": scope, "name": scope_name})
            return True

    @retry_on_conflict
    def resume(self, scope: str, name: str | None, actor: str) -> bool:
        scope_name = self._scope_name(scope, name)
        with self.db.write() as conn:
            gone = conn.execute(
                delete(pauses).where(pauses.c.scope == scope, pauses.c.name == scope_name)
            ).rowcount
            if not gone:
                return False
            label = scope_label(scope, scope_name)
            self.record(conn, actor, "resumed", f"{label} resumed", data={"scope": scope, "name": scope_name})
            self.signal(conn, "dispatch")
            return True

    def seed_caps(self) -> str:
        """At ``serve`` start: give the board this config's caps where it has none; return
        the caps where this config disagrees with the board's (empty if none)."""
        with self.db.write() as conn:
            seed_caps(conn, self.config, utcnow())
            return config_disagreements(Limits.load(conn, self.config))

    def limits(self) -> tuple[Limits, Usage]:
        with self.db.read() as conn:
            return Limits.load(conn, self.config), Usage.load(conn)

    def _scope_name(self, scope: str, name: str | None) -> str:
        if scope not in SCOPES:
            raise UsageError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        if scope == "board":
            if name:
                raise UsageError("the board scope takes no name")
            return ""
        if not name:
            raise UsageError(f"say which {scope}: e.g. --{scope} NAME")
        if scope == "profile":
            self.require_profile(name)
        elif name not in self.config.gateways:
            known = ", ".join(sorted(self.config.gateways)) or "none configured"
            raise NotFound(f"no gateway {name!r} (known: {known})")
        return name

    def require_profile(self, profile: str) -> None:
        if profile not in self.config.profiles:
            known = ", ".join(sorted(self.config.profiles)) or "none configured"
            raise NotFound(f"no profile {profile!r} (known: {known})")
