"""workflow features: matrix instances, concurrency groups, approvals

Revision ID: workflow_0001
Revises: 31fb20265f7c
Create Date: 2026-12-01 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "workflow_0001"
down_revision: str | None = "31fb20265f7c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("atomic_step", schema=None) as batch_op:
        batch_op.add_column(sa.Column("matrix", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("concurrency", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("atomic_step", schema=None) as batch_op:
        batch_op.drop_column("concurrency")
        batch_op.drop_column("matrix")
