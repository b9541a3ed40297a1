"""node readings: exporters beside each gateway, with the board's view at the time

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_readings",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("gateway", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("known", sa.Boolean(), nullable=False),
        sa.Column("gpu_util", sa.Float(), nullable=True),
        sa.Column("vram_used_bytes", sa.Float(), nullable=True),
        sa.Column("vram_total_bytes", sa.Float(), nullable=True),
        sa.Column("gpu_temperature_c", sa.Float(), nullable=True),
        sa.Column("gpu_power_w", sa.Float(), nullable=True),
        sa.Column("cpu_busy", sa.Float(), nullable=True),
        sa.Column("load1", sa.Float(), nullable=True),
        sa.Column("ram_available_bytes", sa.Float(), nullable=True),
        sa.Column("ram_total_bytes", sa.Float(), nullable=True),
        sa.Column("in_flight", sa.Integer(), nullable=False),
        sa.Column("current_limit", sa.Integer(), nullable=False),
        sa.Column("cap", sa.Integer(), nullable=False),
        sa.Column("waiting", sa.Integer(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_node_readings")),
    )
    with op.batch_alter_table("node_readings", schema=None) as batch_op:
        batch_op.create_index("ix_node_readings_gateway_at", ["gateway", "at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("node_readings", schema=None) as batch_op:
        batch_op.drop_index("ix_node_readings_gateway_at")
    op.drop_table("node_readings")
