"""run processes: host, process group and start stamp of each command agent

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN (no batch copy on SQLite): the open-runs partial index stays as it is
    op.add_column("runs", sa.Column("host", sa.String(length=128), nullable=True))
    op.add_column("runs", sa.Column("process_group", sa.Integer(), nullable=True))
    op.add_column("runs", sa.Column("process_start", sa.String(length=96), nullable=True))


def downgrade() -> None:
    for column in ("process_start", "process_group", "host"):
        op.drop_column("runs", column)
