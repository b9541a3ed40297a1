"""The database's clock, each process's skew against it, and who is live by it.

Hosts' clocks disagree; the database is the one clock every process of a board shares.
Every lease (run leases, the leader lease) is set and compared on it, never on the
host's: a host 60 s ahead must neither take back a live process's runs nor grab the
leader lease early. On PostgreSQL that is the server's ``clock_timestamp()``, read in the
same transaction as the statements that use it (after any lock wait, unlike ``now()``,
which is the transaction's start). SQLite runs inside this process on this host: its
clock is the host's, and one SQLite board never spans hosts.

Status, doctor and /metrics take "now" from here; who is live by it is the read model's
``live_window``/``live_dispatchers`` (core/readmodel.py).
"""

from __future__ import annotations

import logging
from datetime import datetime

from lanewarden.core.clock import utcnow
from sqlalchemy import Connection, text

log = logging.getLogger("lanewarden.clock")

# above this a host's clock is worth an operator's attention: logs, cron tasks and
# chat timestamps from that host are off, though leases and windows are not
SKEW_WARN_SECONDS = 3.0


def database_now(conn: Connection) -> datetime:
    """The database's current time (UTC, aware), read on ``conn``."""
    if conn.dialect.name == "postgresql":
        value = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
        return value.astimezone(utcnow().tzinfo)
    return utcnow()


def measure_skew(conn: Connection) -> float:
    """Seconds this host's clock is ahead of the database's (negative: behind).

    The database's reading is compared with the middle of the round trip, so the figure
    is good to half a round trip (well under a millisecond on a LAN)."""
    before = utcnow()
    at_database = database_now(conn)
    after = utcnow()
    return ((before + (after - before) / 2) - at_database).total_seconds()


def describe_skew(seconds: float | None) -> str:
    if seconds is None:
        return "clock not measured"
    direction = "ahead of" if seconds >= 0 else "behind"
    return f"clock {abs(seconds):.1f}s {direction} the database"


def skew_is_large(seconds: float | None) -> bool:
    return seconds is not None and abs(seconds) > SKEW_WARN_SECONDS
