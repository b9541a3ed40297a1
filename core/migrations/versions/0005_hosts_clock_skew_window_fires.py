"""hosts: each dispatcher's clock skew; the last fire time of each window

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dispatchers") as batch:
        batch.add_column(sa.Column("clock_skew_ms", sa.Float(), nullable=True))
    op.create_table(
        "window_fires",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("fire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_window_fires")),
    )


def downgrade() -> None:
    op.drop_table("window_fires")
    with op.batch_alter_table("dispatchers") as batch:
        batch.drop_column("clock_skew_ms")
