"""The leader lease: exactly one process runs the scheduler, the alert rules and the
outbox delivery at a time, with failover when the holder dies.

The lease is a row in the board database (``leases.name = 'leader'``) with a holder,
an expiry and a term that grows at every change of hands. The holder renews it every
third of its TTL; anyone may take it over once it has expired. Expiry is set and
judged on the database's clock (core/liveness.py), so a host whose clock is off neither
grabs the lease early nor keeps it late. A holder acts only while its lease is valid *by
its own monotonic clock minus a safety margin*, so a process that was paused (GC,
SIGSTOP, a slow disk) stops acting before another can take over.

Failover after the holder dies takes up to the TTL (the lease runs out) plus a quarter
of it (how often the others ask), plus one database round trip.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from lanewarden.core.db import Database
from lanewarden.core.liveness import database_now
from lanewarden.core.schema import leases
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

log = logging.getLogger("lanewarden.leader")
LEADER = "leader"


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    holder: str
    term: int
    acquired_at: datetime
    expires_at: datetime


def current_leader(db: Database, name: str = LEADER) -> LeaseHolder | None:
    with db.read() as conn:
        row = conn.execute(select(leases).where(leases.c.name == name)).first()
    if row is None:
        return None
    return LeaseHolder(row.holder, row.term, row.acquired_at, row.expires_at)


class LeaderLease:
    def __init__(self, db: Database, holder: str, ttl: float, name: str = LEADER) -> None:
        self.db = db
        self.holder = holder
        self.ttl = ttl
        self.name = name
        self.term: int | None = None
        self._valid_until = 0.0  # monotonic; we act only before this

    @property
    def _role(self) -> str:
        # other leases (the Discord gateway's) share this code: say which one changed hands
        return "the leader" if self.name == LEADER else f"the {self.name} lease holder"

    @property
    def is_leader(self) -> bool:
        return self.term is not None and time.monotonic() < self._valid_until

    def try_acquire(self) -> bool:
        """Take or renew the lease; True while we hold it."""
        asked = time.monotonic()
        query = select(leases).where(leases.c.name == self.name)
        try:
            with self.db.write() as conn:
                if self.db.is_postgres:
                    query = query.with_for_update()
                row = conn.execute(query).first()
                now = database_now(conn)
                expires = now + timedelta(seconds=self.ttl)
                if row is None:
                    conn.execute(
                        insert(leases).values(
                            name=self.name, holder=self.holder, term=1, acquired_at=now, expires_at=expires
                        )
                    )
                    term = 1
                elif row.holder == self.holder and row.term == self.term:
                    conn.execute(update(leases).where(leases.c.name == self.name).values(expires_at=expires))
                    term = row.term
                elif row.expires_at <= now:
                    term = row.term + 1
                    conn.execute(
                        update(leases)
                        .where(leases.c.name == self.name, leases.c.term == row.term)
                        .values(holder=self.holder, term=term, acquired_at=now, expires_at=expires)
                    )
                else:
                    self._lose()
                    return False
        except IntegrityError:  # another process inserted the first lease at the same moment
            self._lose()
            return False
        if self.term != term:
            log.info("%s is now %s (term %d)", self.holder, self._role, term)
        self.term = term
        # keep a margin: act only for 2/3 of the TTL after we asked, never past the expiry
        self._valid_until = asked + self.ttl * 2 / 3
        return True

    def release(self) -> None:
        if self.term is None:
            return
        with self.db.write() as conn:
            conn.execute(
                delete(leases).where(
                    leases.c.name == self.name, leases.c.holder == self.holder, leases.c.term == self.term
                )
            )
        self._lose()

    def _lose(self) -> None:
        if self.term is not None:
            log.warning("%s lost the %s lease (term %d)", self.holder, self.name, self.term)
        self.term = None
        self._valid_until = 0.0

    async def run(
        self, on_gain: Callable[[], Awaitable[None]], on_lose: Callable[[], Awaitable[None]]
    ) -> None:
        """Renew every third of the TTL; call on_gain/on_lose at each change of hands."""
        leading = False
        try:
            while True:
                try:
                    held = await asyncio.to_thread(self.try_acquire)
                except SQLAlchemyError as exc:  # a killed connection may also leave a PendingRollbackError
                    log.warning("leader lease check failed: %s", getattr(exc, "orig", None) or exc)
                    held = self.is_leader  # keep acting only while the local margin lasts
                if held and not leading:
                    leading = True
                    await on_gain()
                elif not held and leading:
                    leading = False
                    await on_lose()
                await asyncio.sleep(self.ttl / 3 if held else self.ttl / 4)
        finally:
            if leading:
                await on_lose()
