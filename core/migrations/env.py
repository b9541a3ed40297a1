"""Alembic environment: runs inside the caller's process with the board's engine."""

from alembic import context
from lanewarden.core.db import MIGRATION_LOCK
from lanewarden.core.schema import metadata
from sqlalchemy import text

config = context.config
database = config.attributes["database"]

with database.engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=database.is_sqlite,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        # SQLite: the transaction began with BEGIN IMMEDIATE, which already excludes other
        # migrators. PostgreSQL: serialise concurrent `serve` start-ups on an advisory lock.
        if database.is_postgres:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()
