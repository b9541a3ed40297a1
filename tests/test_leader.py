"""The leader lease: one holder at a time, takeover after expiry, no acting past the margin."""

from __future__ import annotations

import time
from datetime import timedelta

from lanewarden.core.clock import utcnow
from lanewarden.core.db import Database, ensure_schema
from lanewarden.core.leader import LeaderLease, current_leader
from lanewarden.core.schema import leases
from sqlalchemy import update


def test_one_holder_then_takeover_after_expiry(board_url: str) -> None:
    db = Database(board_url)
    ensure_schema(db)
    a, b = LeaderLease(db, "a", ttl=30), LeaderLease(db, "b", ttl=30)
    assert a.try_acquire() and a.is_leader
    assert not b.try_acquire() and not b.is_leader
    assert a.try_acquire()  # renewal keeps the term
    assert current_leader(db).holder == "a" and current_leader(db).term == 1
    with db.write() as conn:  # a stops renewing and its lease runs out
        conn.execute(update(leases).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert b.try_acquire() and b.term == 2
    assert not a.try_acquire() and not a.is_leader  # a's term is over even if it wakes up
    assert current_leader(db).holder == "b"
    b.release()
    assert current_leader(db) is None
    assert a.try_acquire() and a.term == 1  # a fresh lease row starts over
    db.dispose()


def test_holder_stops_acting_before_the_lease_can_move(board_url: str) -> None:
    db = Database(board_url)
    ensure_schema(db)
    lease = LeaderLease(db, "a", ttl=0.3)
    assert lease.try_acquire() and lease.is_leader
    time.sleep(0.25)  # past 2/3 of the TTL without renewing: stop acting, though the row still says "a"
    assert not lease.is_leader
    assert current_leader(db).holder == "a"
    db.dispose()
