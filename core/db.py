"""Engines, transactions and migrations for SQLite and PostgreSQL.

Writes are short transactions. On SQLite every write transaction starts with
``BEGIN IMMEDIATE`` so two processes never both read-then-write (the claim relies on
it); reads use a deferred ``BEGIN`` and never block writers in WAL mode. On
PostgreSQL the claim path adds row and advisory locks of its own (core/claims.py).
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from lanewarden.core.errors import ConfigError
from lanewarden.core.redaction import hide_url_password
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

# Bump with every new Alembic revision; tests/test_migrations.py checks they agree.
SCHEMA_REVISION = "0007"
# one advisory lock key per purpose, taken in this order when several are needed
MIGRATION_LOCK = 7_420_001
CLAIM_LOCK = 7_420_002
LINK_LOCK = 7_420_003  # link writes: the cycle check and the insert it guards, one at a time
# SQLSTATEs PostgreSQL resolves by aborting one transaction; running it again succeeds
RETRYABLE_SQLSTATES = ("40001", "40P01")  # serialization_failure, deadlock_detected
RETRY_ATTEMPTS = 5


class Database:
    """One board database: an engine plus the transaction discipline above."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.engine = make_engine(url, echo=echo)
        self.dialect = self.engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn.execution_options(lanewarden_readonly=True)
            with conn.begin():
                yield conn

    def dispose(self) -> None:
        self.engine.dispose()

    def describe(self) -> str:
        """The URL without its password, for logs and doctor."""
        return make_url(self.url).render_as_string(hide_password=True)


def retry_on_conflict(fn: Callable[P, R]) -> Callable[P, R]:
    """Run a one-transaction operation again when PostgreSQL aborted it to resolve a
    deadlock or serialisation failure; the aborted attempt changed nothing."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(1, RETRY_ATTEMPTS + 1):
            try:
                return fn(*args, **kwargs)
            except DBAPIError as exc:
                retryable = getattr(exc.orig, "sqlstate", None) in RETRYABLE_SQLSTATES
                if not retryable or attempt == RETRY_ATTEMPTS:
                    raise
                time.sleep(random.uniform(0.005, 0.05) * attempt)
        raise AssertionError("unreachable")

    return wrapper


def make_engine(url: str, *, echo: bool = False) -> Engine:
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError with a long message
        raise ConfigError(hide_url_password(f"board.url = {url!r}: not a database URL ({exc})")) from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        in_memory = database in ("", ":memory:")
        if not in_memory and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            parsed = parsed.set(database=str(Path(database).expanduser()))
        pool_args = {} if in_memory else {"pool_size": 8, "max_overflow": 8}
        engine = create_engine(
            parsed,
            echo=echo,
            connect_args={"timeout": 30, "check_same_thread": False},
            **pool_args,
        )
        _sqlite_discipline(engine)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(
            parsed,
            echo=echo,
            pool_pre_ping=True,
            pool_size=8,
            max_overflow=8,
            # a URL's own ?application_name=... wins: operators tell their processes apart by it
            connect_args={"connect_timeout": 10}
            if "application_name" in parsed.query
            else {"application_name": "lanewarden", "connect_timeout": 10},
        )
    raise ConfigError(
        hide_url_password(f"board.url = {url!r}: only sqlite and postgresql boards are supported")
    )


def _sqlite_discipline(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # let SQLAlchemy's begin event issue BEGIN itself (pysqlite would defer it)
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get("lanewarden_readonly"):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def current_revision(db: Database) -> str | None:
    try:
        with db.read() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except (OperationalError, ProgrammingError):
        return None


def alembic_config(db: Database) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.attributes["database"] = db
    return cfg


def upgrade(db: Database, revision: str = "head") -> None:
    """Apply migrations; safe to run from several processes at once."""
    from alembic import command

    command.upgrade(alembic_config(db), revision)


def ensure_schema(db: Database) -> None:
    """Migrate on start, cheaply: one SELECT when the schema is already current."""
    if current_revision(db) != SCHEMA_REVISION:
        log.info("migrating %s to revision %s", db.describe(), SCHEMA_REVISION)
        upgrade(db)
