"""initial board schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-27 20:54:48.078770
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "cap_overrides",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.Column("set_by", sa.String(length=128), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("scope IN ('board', 'profile', 'gateway')", name=op.f("ck_cap_overrides_scope")),
        sa.CheckConstraint("value >= 0", name=op.f("ck_cap_overrides_value")),
        sa.PrimaryKeyConstraint("scope", "name", name=op.f("pk_cap_overrides")),
    )
    op.create_table(
        "dispatchers",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("host", sa.String(length=128), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.CheckConstraint("state IN ('running', 'draining', 'stopped')", name=op.f("ck_dispatchers_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispatchers")),
    )
    op.create_table(
        "gateway_limit_history",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("gateway", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("current_limit", sa.Integer(), nullable=False),
        sa.Column("in_flight", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateway_limit_history")),
    )
    with op.batch_alter_table("gateway_limit_history", schema=None) as batch_op:
        batch_op.create_index("ix_gateway_limit_history", ["gateway", "at"], unique=False)

    op.create_table(
        "gateway_state",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("healthy", sa.Boolean(), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("current_limit", sa.Integer(), nullable=True),
        sa.Column("limiter", sa.JSON(), nullable=True),
        sa.Column("backoff_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("signals", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_gateway_state")),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("term", sa.Integer(), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )
    op.create_table(
        "pauses",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("paused_by", sa.String(length=128), nullable=False),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("scope IN ('board', 'profile', 'gateway')", name=op.f("ck_pauses_scope")),
        sa.PrimaryKeyConstraint("scope", "name", name=op.f("pk_pauses")),
    )
    op.create_table(
        "subscriptions",
        sa.Column("adapter", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=128), nullable=False),
        sa.Column("topic", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("topic IN ('tasks', 'alerts', 'digest')", name=op.f("ck_subscriptions_topic")),
        sa.PrimaryKeyConstraint("adapter", "channel", "topic", name=op.f("pk_subscriptions")),
    )
    op.create_table(
        "tasks",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), server_default="", nullable=False),
        sa.Column("profile", sa.String(length=64), nullable=False),
        sa.Column("priority", sa.Integer(), server_default="0", nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("released", sa.Boolean(), server_default=sa.text("(false)"), nullable=False),
        sa.Column("blocked_from", sa.String(length=16), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("max_attempts", sa.Integer(), server_default="3", nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("origin", sa.String(length=128), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("current_run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "blocked_from IN ('backlog', 'ready', 'active', 'done', 'failed', 'blocked', 'cancelled')",
            name=op.f("ck_tasks_blocked_from"),
        ),
        sa.CheckConstraint(
            "status <> 'active' OR current_run_id IS NOT NULL", name=op.f("ck_tasks_active_has_run")
        ),
        sa.CheckConstraint(
            "status IN ('backlog', 'ready', 'active', 'done', 'failed', 'blocked', 'cancelled')",
            name=op.f("ck_tasks_status"),
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_tasks_attempts")),
        sa.CheckConstraint("length(title) > 0", name=op.f("ck_tasks_title_not_empty")),
        sa.CheckConstraint("max_attempts >= 1", name=op.f("ck_tasks_max_attempts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tasks_claim", ["status", "profile", sa.literal_column("priority DESC"), "id"], unique=False
        )
        batch_op.create_index("ix_tasks_status_id", ["status", "id"], unique=False)

    op.create_table(
        "windows",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("cron", sa.String(length=128), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("command", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("source IN ('config', 'user')", name=op.f("ck_windows_source")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_windows")),
    )
    op.create_table(
        "cards",
        sa.Column("task_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("adapter", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=128), nullable=False),
        sa.Column("message_ref", sa.String(length=128), nullable=False),
        sa.Column("thread_ref", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_cards_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("task_id", "adapter", "channel", name=op.f("pk_cards")),
    )
    op.create_table(
        "events",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("task_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("message", sa.Text(), server_default="", nullable=False),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_events_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_kind_at", ["kind", "at"], unique=False)
        batch_op.create_index("ix_events_task", ["task_id", "id"], unique=False)

    op.create_table(
        "outbox",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("adapter", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("task_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("coalesce_key", sa.String(length=128), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=12), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(length=128), nullable=True),
        sa.Column("claim_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("remote_ref", sa.String(length=128), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "kind IN ('card', 'update', 'alert', 'digest', 'message', 'chart')", name=op.f("ck_outbox_kind")
        ),
        sa.CheckConstraint(
            "state IN ('pending', 'sending', 'delivered', 'superseded', 'dead')", name=op.f("ck_outbox_state")
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_outbox_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_due", ["state", "next_attempt_at"], unique=False)

    op.create_table(
        "runs",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("task_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("dispatcher", sa.String(length=128), nullable=False),
        sa.Column("profile", sa.String(length=64), nullable=False),
        sa.Column("gateway", sa.String(length=64), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ready_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stop_requested", sa.String(length=16), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("ttft_ms", sa.Float(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "outcome IN ('succeeded', 'failed', 'timed_out', 'cancelled', 'lost', 'released', 'gateway_down', 'backpressure')",
            name=op.f("ck_runs_outcome"),
        ),
        sa.CheckConstraint(
            "(finished_at IS NULL) = (outcome IS NULL)", name=op.f("ck_runs_finished_has_outcome")
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_runs_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index("ix_runs_gateway_finished", ["gateway", "finished_at"], unique=False)
        batch_op.create_index(
            "ix_runs_open",
            ["gateway", "profile"],
            unique=False,
            sqlite_where=sa.text("finished_at IS NULL"),
            postgresql_where=sa.text("finished_at IS NULL"),
        )
        batch_op.create_index("ix_runs_task", ["task_id"], unique=False)

    op.create_table(
        "task_links",
        sa.Column("parent_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("child_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("parent_id <> child_id", name=op.f("ck_task_links_not_self")),
        sa.ForeignKeyConstraint(
            ["child_id"], ["tasks.id"], name=op.f("fk_task_links_child_id_tasks"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["tasks.id"], name=op.f("fk_task_links_parent_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("parent_id", "child_id", name=op.f("pk_task_links")),
    )
    with op.batch_alter_table("task_links", schema=None) as batch_op:
        batch_op.create_index("ix_task_links_child", ["child_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("task_links", schema=None) as batch_op:
        batch_op.drop_index("ix_task_links_child")

    op.drop_table("task_links")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_task")
        batch_op.drop_index(
            "ix_runs_open",
            sqlite_where=sa.text("finished_at IS NULL"),
            postgresql_where=sa.text("finished_at IS NULL"),
        )
        batch_op.drop_index("ix_runs_gateway_finished")

    op.drop_table("runs")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_due")

    op.drop_table("outbox")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_task")
        batch_op.drop_index("ix_events_kind_at")

    op.drop_table("events")
    op.drop_table("cards")
    op.drop_table("windows")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_status_id")
        batch_op.drop_index("ix_tasks_claim")

    op.drop_table("tasks")
    op.drop_table("subscriptions")
    op.drop_table("pauses")
    op.drop_table("leases")
    op.drop_table("gateway_state")
    with op.batch_alter_table("gateway_limit_history", schema=None) as batch_op:
        batch_op.drop_index("ix_gateway_limit_history")

    op.drop_table("gateway_limit_history")
    op.drop_table("dispatchers")
    op.drop_table("cap_overrides")
