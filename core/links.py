"""Dependencies between tasks: ``link`` and ``unlink`` (a mixin of ``Board``,
core/board.py). A link never makes a cycle, even when two people link at once: on
PostgreSQL link writes take one advisory lock, so cycle checks run one at a time
(SQLite's write lock already does that)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lanewarden.core.clock import utcnow
from lanewarden.core.db import LINK_LOCK, retry_on_conflict
from lanewarden.core.errors import Conflict, NotFound
from lanewarden.core.schema import task_links, tasks
from lanewarden.core.statuses import Status
from lanewarden.core.tasks import Task
from sqlalchemy import Connection, delete, exists, insert, select, text, update
from sqlalchemy.exc import IntegrityError

if TYPE_CHECKING:
    from lanewarden.core.db import Database


class Links:
    db: Database

    if TYPE_CHECKING:  # provided by Board

        def _lock(self, conn: Connection, task_id: int) -> Task: ...

        def record(self, conn: Connection, actor: str, kind: str, message: str, **kw: Any) -> Any: ...

        def signal(self, conn: Connection, topic: str) -> None: ...

    @retry_on_conflict
    def link(self, parent_id: int, child_id: int, actor: str) -> None:
        if parent_id == child_id:
            raise Conflict(f"#{parent_id} cannot depend on itself")
        with self.db.write() as conn:
            parent, child = self._lock_for_link(conn, parent_id, child_id)
            if child.status in (Status.ACTIVE, Status.DONE):
                raise Conflict(
                    f"{child.ref} is {child.status}; links only constrain tasks that have not started"
                )
            if self._reaches(conn, start=child_id, target=parent_id):
                raise Conflict(
                    f"linking {parent.ref} -> {child.ref} would make a cycle "
                    f"({child.ref} already leads to {parent.ref})"
                )
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(task_links).values(parent_id=parent_id, child_id=child_id, created_at=utcnow())
                    )
            except IntegrityError:
                raise Conflict(f"{parent.ref} is already a parent of {child.ref}") from None
            message = f"now waits for {parent.ref}"
            if child.released and parent.status != Status.DONE:
                # a released task may start at once; a new unfinished parent withdraws that
                conn.execute(
                    update(tasks).where(tasks.c.id == child_id).values(released=False, updated_at=utcnow())
                )
                message += " (release withdrawn until it is done)"
            self.record(conn, actor, "linked", message, task=child, data={"parent": parent_id})

    @retry_on_conflict
    def unlink(self, parent_id: int, child_id: int, actor: str) -> None:
        with self.db.write() as conn:
            _, child = self._lock_for_link(conn, parent_id, child_id)
            gone = conn.execute(
                delete(task_links).where(
                    task_links.c.parent_id == parent_id, task_links.c.child_id == child_id
                )
            ).rowcount
            if not gone:
                raise NotFound(f"#{parent_id} is not a parent of #{child_id}")
            self.record(
                conn,
                actor,
                "unlinked",
                f"no longer waits for #{parent_id}",
                task=child,
                data={"parent": parent_id},
            )
            self.signal(conn, "dispatch")

    def _lock_for_link(self, conn: Connection, parent_id: int, child_id: int) -> tuple[Task, Task]:
        """Link writes one at a time (PostgreSQL): two links that each pass the cycle check
        alone could close a cycle together (1->2 and 3->4 with 2->3 and 4->1 in place).
        SQLite's BEGIN IMMEDIATE already serialises them. Rows are then locked in id order."""
        if self.db.is_postgres:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LINK_LOCK})
        first, second = sorted((parent_id, child_id))
        locked = {first: self._lock(conn, first), second: self._lock(conn, second)}
        return locked[parent_id], locked[child_id]

    def _reaches(self, conn: Connection, start: int, target: int) -> bool:
        """Does following child links from ``start`` reach ``target``?"""
        reach = (
            select(task_links.c.child_id.label("id"))
            .where(task_links.c.parent_id == start)
            .cte("reach", recursive=True)
        )
        reach = reach.union(select(task_links.c.child_id).join(reach, task_links.c.parent_id == reach.c.id))
        return conn.execute(select(exists().where(reach.c.id == target))).scalar_one()
