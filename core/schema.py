"""The board's tables (SQLAlchemy Core). Alembic migrations mirror this file.

Every table is written by core/ only. Timestamps are UTC; on SQLite they are stored
naive (ISO text that sorts correctly), on PostgreSQL as ``timestamptz``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from lanewarden.core.statuses import RUN_OUTCOMES, TASK_STATUSES
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.engine import Dialect

TITLE_MAX = 200
BODY_MAX = 20_000
COMMENT_MAX = 4_000

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

# SQLite only makes INTEGER PRIMARY KEY an alias of rowid, so ids stay Integer there.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the board; use core.clock.utcnow()")
        if dialect.name == "sqlite":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


tasks = Table(
    "tasks",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("title", String(TITLE_MAX), nullable=False),
    Column("body", Text, nullable=False, server_default=""),
    Column("profile", String(64), nullable=False),
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("status", String(16), nullable=False),
    # windowed mode: a ready task released by promote/promote-batch to start when caps allow
    Column("released", Boolean, nullable=False, server_default=text("false")),
    Column("blocked_from", String(16)),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("max_attempts", Integer, nullable=False, server_default="3"),
    Column("not_before", UTCDateTime),
    Column("created_by", String(128), nullable=False),
    Column("origin", String(128)),
    Column("result", Text),
    Column("error", Text),
    Column("current_run_id", Id),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    CheckConstraint(_in("status", TASK_STATUSES), name="status"),
    CheckConstraint(_in("blocked_from", TASK_STATUSES), name="blocked_from"),
    CheckConstraint("length(title) > 0", name="title_not_empty"),
    CheckConstraint("attempts >= 0", name="attempts"),
    CheckConstraint("max_attempts >= 1", name="max_attempts"),
    CheckConstraint("status <> 'active' OR current_run_id IS NOT NULL", name="active_has_run"),
)
Index("ix_tasks_claim", tasks.c.status, tasks.c.profile, tasks.c.priority.desc(), tasks.c.id)
Index("ix_tasks_status_id", tasks.c.status, tasks.c.id)

task_links = Table(
    "task_links",
    metadata,
    Column("parent_id", Id, ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    Column("child_id", Id, ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
    CheckConstraint("parent_id <> child_id", name="not_self"),
)
Index("ix_task_links_child", task_links.c.child_id)

runs = Table(
    "runs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("task_id", Id, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("dispatcher", String(128), nullable=False),
    Column("profile", String(64), nullable=False),
    Column("gateway", String(64)),
    Column("claimed_at", UTCDateTime, nullable=False),
    Column("ready_at", UTCDateTime),
    Column("started_at", UTCDateTime),
    Column("lease_expires_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("stop_requested", String(16)),
    Column("outcome", String(16)),
    Column("latency_ms", Float),
    Column("ttft_ms", Float),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    Column("error", Text),
    # where a command agent runs (core/processes.py): a dispatcher reclaiming the run on
    # the same host kills what is left of this process group before freeing the slot
    Column("host", String(128)),
    Column("process_group", Integer),
    Column("process_start", String(96)),
    CheckConstraint(_in("outcome", RUN_OUTCOMES), name="outcome"),
    CheckConstraint("(finished_at IS NULL) = (outcome IS NULL)", name="finished_has_outcome"),
)
Index("ix_runs_task", runs.c.task_id)
Index(
    "ix_runs_open",
    runs.c.gateway,
    runs.c.profile,
    sqlite_where=runs.c.finished_at.is_(None),
    postgresql_where=runs.c.finished_at.is_(None),
)
Index("ix_runs_gateway_finished", runs.c.gateway, runs.c.finished_at)

events = Table(
    "events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("task_id", Id, ForeignKey("tasks.id", ondelete="CASCADE")),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("message", Text, nullable=False, server_default=""),
    Column("data", JSON),
)
Index("ix_events_task", events.c.task_id, events.c.id)
Index("ix_events_kind_at", events.c.kind, events.c.at)

# dm: a direct message to a task's creator (core/notifications.py), channel = their user id
OUTBOX_KINDS = ("card", "update", "alert", "digest", "message", "chart", "dm")

outbox = Table(
    "outbox",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("adapter", String(16), nullable=False),
    Column("channel", String(128), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("task_id", Id, ForeignKey("tasks.id", ondelete="CASCADE")),
    Column("event_id", Id),
    # pending rows with the same key collapse into the newest (card edits)
    Column("coalesce_key", String(128)),
    Column("payload", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("state", String(12), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("claimed_by", String(128)),
    Column("claim_expires_at", UTCDateTime),
    Column("delivered_at", UTCDateTime),
    Column("remote_ref", String(128)),
    Column("last_error", Text),
    CheckConstraint(_in("state", ("pending", "sending", "delivered", "superseded", "dead")), name="state"),
    CheckConstraint(_in("kind", OUTBOX_KINDS), name="kind"),
)
Index("ix_outbox_due", outbox.c.state, outbox.c.next_attempt_at)

# where a task's card lives in each chat, so later states edit it and reply in its thread
cards = Table(
    "cards",
    metadata,
    Column("task_id", Id, ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    Column("adapter", String(16), primary_key=True),
    Column("channel", String(128), primary_key=True),
    Column("message_ref", String(128), nullable=False),
    Column("thread_ref", String(128)),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("adapter", String(16), primary_key=True),
    Column("channel", String(128), primary_key=True),
    Column("topic", String(16), primary_key=True),
    Column("created_by", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    CheckConstraint(_in("topic", ("tasks", "alerts", "digest")), name="topic"),
)

# people who asked for a direct message when a task they created finishes or fails
# (`notify me on`); user_ref is the chat identity as tasks.created_by records it
dm_optins = Table(
    "dm_optins",
    metadata,
    Column("user_ref", String(128), primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
)

# live cap changes; they override the config for every process on this board
cap_overrides = Table(
    "cap_overrides",
    metadata,
    Column("scope", String(16), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("value", Integer, nullable=False),
    Column("set_by", String(128), nullable=False),
    Column("set_at", UTCDateTime, nullable=False),
    CheckConstraint(_in("scope", ("board", "profile", "gateway")), name="scope"),
    CheckConstraint("value >= 0", name="value"),
)

pauses = Table(
    "pauses",
    metadata,
    Column("scope", String(16), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("paused_by", String(128), nullable=False),
    Column("paused_at", UTCDateTime, nullable=False),
    CheckConstraint(_in("scope", ("board", "profile", "gateway")), name="scope"),
)

# what each run printed (a command's stdout and stderr, an llm run's streamed answer), in
# chunks appended as it streams, the oldest dropped past a bound (core/run_output.py)
run_output = Table(
    "run_output",
    metadata,
    Column("run_id", Id, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", UTCDateTime, nullable=False),
    Column("text", Text, nullable=False),
)

# the shared view of each gateway: health from probes, the current window (slow start /
# adaptive limit) and backpressure, so every dispatcher process claims against the same limit
gateway_state = Table(
    "gateway_state",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("healthy", Boolean),
    Column("checked_at", UTCDateTime),
    Column("changed_at", UTCDateTime),
    Column("current_limit", Integer),
    Column("limiter", JSON),
    Column("backoff_until", UTCDateTime),
    Column("last_error", Text),
    Column("signals", JSON),
)

gateway_limit_history = Table(
    "gateway_limit_history",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("gateway", String(64), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("current_limit", Integer, nullable=False),
    Column("in_flight", Integer, nullable=False),
    Column("reason", String(32), nullable=False),
)
Index("ix_gateway_limit_history", gateway_limit_history.c.gateway, gateway_limit_history.c.at)

# node exporters beside each gateway, one row per scrape by the leader (kept a day): the
# host's figures, and the board's view of the gateway at that moment (in flight, limit, cap,
# tasks waiting for it), which is what `tune` weighs them against
node_readings = Table(
    "node_readings",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("gateway", String(64), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("known", Boolean, nullable=False),
    Column("gpu_util", Float),
    Column("vram_used_bytes", Float),
    Column("vram_total_bytes", Float),
    Column("gpu_temperature_c", Float),
    Column("gpu_power_w", Float),
    Column("cpu_busy", Float),
    Column("load1", Float),
    Column("ram_available_bytes", Float),
    Column("ram_total_bytes", Float),
    Column("in_flight", Integer, nullable=False),
    Column("current_limit", Integer, nullable=False),
    Column("cap", Integer, nullable=False),
    Column("waiting", Integer, nullable=False),
    Column("detail", JSON),
)
Index("ix_node_readings_gateway_at", node_readings.c.gateway, node_readings.c.at)

# named leases: 'leader' decides which process runs the scheduler, alerts and outbox
leases = Table(
    "leases",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("term", Integer, nullable=False),
    Column("acquired_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

dispatchers = Table(
    "dispatchers",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("host", String(128), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),  # the database's clock (core/liveness.py)
    Column("state", String(16), nullable=False),
    Column("clock_skew_ms", Float),  # this host's clock minus the database's, at the last heartbeat
    CheckConstraint(_in("state", ("running", "draining", "stopped")), name="state"),
)

# the scheduled time each window last fired for (database clock): a window fires once per
# scheduled time whichever leader's APScheduler asks (scheduler/windows.py)
window_fires = Table(
    "window_fires",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("fire_time", UTCDateTime, nullable=False),
    Column("holder", String(128), nullable=False),
    Column("fired_at", UTCDateTime, nullable=False),
)

windows = Table(
    "windows",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("cron", String(128), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("command", Text, nullable=False),
    Column("source", String(8), nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    CheckConstraint(_in("source", ("config", "user")), name="source"),
)

# the web board's sign-in: one-time links and the sessions they open. Only hashes of the
# secrets are stored, so a copy of the database signs nobody in.
web_links = Table(
    "web_links",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("actor_id", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("name", String(128)),
    Column("created_by", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime),
    CheckConstraint(_in("role", ("viewer", "operator", "admin")), name="role"),
)

web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("actor_id", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("name", String(128)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime),
    CheckConstraint(_in("role", ("viewer", "operator", "admin")), name="role"),
)
