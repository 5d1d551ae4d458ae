"""workflow features: matrix instances, concurrency groups, approvals

Revision ID: workflow_0001
Revises: store_0001
Create Date: 2026-12-04 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import ansflow.db.models

revision: str = "workflow_0001"
down_revision: str | None = "store_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "concurrency_group",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("holder_execution_id", sa.Integer(), nullable=True),
        sa.Column("holder_step_id", sa.Integer(), nullable=True),
        sa.Column("waiter_execution_id", sa.Integer(), nullable=True),
        sa.Column("waiter_step_id", sa.Integer(), nullable=True),
        sa.Column("preempted", sa.Text(), nullable=True),
        sa.Column("updated_at", ansflow.db.models.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["holder_execution_id"], ["pipeline_execution.id"],
                                name=op.f("fk_concurrency_group_holder_execution_id"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["holder_step_id"], ["step_execution.id"],
                                name=op.f("fk_concurrency_group_holder_step_id"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["waiter_execution_id"], ["pipeline_execution.id"],
                                name=op.f("fk_concurrency_group_waiter_execution_id"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["waiter_step_id"], ["step_execution.id"],
                                name=op.f("fk_concurrency_group_waiter_step_id"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_concurrency_group")),
        sa.UniqueConstraint("name", name=op.f("uq_concurrency_group_name")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    with op.batch_alter_table("atomic_step", schema=None) as batch_op:
        batch_op.add_column(sa.Column("matrix", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("concurrency", sa.JSON(), nullable=True))
    with op.batch_alter_table("step_execution", schema=None) as batch_op:
        batch_op.add_column(sa.Column("decision", sa.JSON(), nullable=True))
    with op.batch_alter_table("pipeline_execution", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parked_at", ansflow.db.models.UtcDateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column("wake_at", ansflow.db.models.UtcDateTime(timezone=True),
                                      nullable=True))
        batch_op.create_index(batch_op.f("ix_pipeline_execution_wake_at"), ["wake_at"],
                              unique=False)


def downgrade() -> None:
    op.drop_table("concurrency_group")
    with op.batch_alter_table("step_execution", schema=None) as batch_op:
        batch_op.drop_column("decision")
    with op.batch_alter_table("pipeline_execution", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pipeline_execution_wake_at"))
        batch_op.drop_column("wake_at")
        batch_op.drop_column("parked_at")
    with op.batch_alter_table("atomic_step", schema=None) as batch_op:
        batch_op.drop_column("concurrency")
        batch_op.drop_column("matrix")
