"""direct messages to a task's creator: who opted in, and the outbox's dm kind

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

KINDS = ("card", "update", "alert", "digest", "message", "chart")


def _kinds(kinds: tuple[str, ...]) -> str:
    return f"kind IN ({', '.join(repr(k) for k in kinds)})"


def upgrade() -> None:
    op.create_table(
        "dm_optins",
        sa.Column("user_ref", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_ref", name=op.f("pk_dm_optins")),
    )
    with op.batch_alter_table("outbox") as batch:
        batch.drop_constraint(op.f("ck_outbox_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_outbox_kind"), _kinds((*KINDS, "dm")))


def downgrade() -> None:
    op.execute("DELETE FROM outbox WHERE kind = 'dm'")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_constraint(op.f("ck_outbox_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_outbox_kind"), _kinds(KINDS))
    op.drop_table("dm_optins")
