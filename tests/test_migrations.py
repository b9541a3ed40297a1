"""Alembic migrations: from an empty database to head, on both engines, matching the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from lanewarden.core.db import (
    SCHEMA_REVISION,
    Database,
    alembic_config,
    current_revision,
    ensure_schema,
    upgrade,
)
from lanewarden.core.schema import metadata
from sqlalchemy import inspect, text


def test_upgrade_from_empty_matches_schema(board_url: str) -> None:
    db = Database(board_url)
    assert current_revision(db) is None
    upgrade(db)
    assert current_revision(db) == SCHEMA_REVISION
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
        tables = set(inspect(conn).get_table_names())
    assert diff == [], diff
    assert {"tasks", "task_links", "runs", "events", "outbox", "leases", "windows"} <= tables
    ensure_schema(db)  # idempotent
    db.dispose()


def test_schema_revision_constant_is_head() -> None:
    db = Database("sqlite://")
    head = ScriptDirectory.from_config(alembic_config(db)).get_current_head()
    assert head == SCHEMA_REVISION


def test_constraints_are_enforced(board_url: str) -> None:
    import pytest
    from sqlalchemy.exc import IntegrityError

    db = Database(board_url)
    upgrade(db)
    with pytest.raises(IntegrityError), db.write() as conn:
        conn.execute(
            text(
                "INSERT INTO tasks (title, body, profile, priority, status, released, attempts, max_attempts,"
                " "
                "created_by, created_at, updated_at) VALUES ('t', '', 'p', 0, 'nonsense', false, 0, 1, 'x', "
                "'2026-01-01', '2026-01-01')"
            )
        )
    with pytest.raises(IntegrityError), db.write() as conn:  # foreign keys are on (SQLite too)
        conn.execute(
            text("INSERT INTO task_links (parent_id, child_id, created_at) VALUES (98, 99, '2026-01-01')")
        )
    db.dispose()


def test_sqlite_runs_in_wal_with_busy_timeout(tmp_path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'b.db'}")
    with db.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    db.dispose()
