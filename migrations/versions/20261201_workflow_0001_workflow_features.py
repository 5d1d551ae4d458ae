"""workflow features: matrix instances, concurrency groups, approvals

Revision ID: workflow_0001
Revises: 31fb20265f7c
Create Date: 2026-12-01 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import ansflow.db.models

revision: str = "workflow_0001"
down_revision: str | None = "31fb20265f7c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("atomic_step", schema=None) as batch_op:
        batch_op.add_column(sa.Column("matrix", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("concurrency", sa.JSON(), nullable=True))
    with op.batch_alter_table("pipeline_execution", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parked_at", ansflow.db.models.UtcDateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column("wake_at", ansflow.db.models.UtcDateTime(timezone=True),
                                      nullable=True))
        batch_op.create_index(batch_op.f("ix_pipeline_execution_wake_at"), ["wake_at"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("pipeline_execution", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pipeline_execution_wake_at"))
        batch_op.drop_column("wake_at")
        batch_op.drop_column("parked_at")
    with op.batch_alter_table("atomic_step", schema=None) as batch_op:
        batch_op.drop_column("concurrency")
        batch_op.drop_column("matrix")
