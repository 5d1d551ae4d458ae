"""labels and step dispatch: runs_on, who runs a step and its hand-over, worker presence

Revision ID: dispatch_0001
Revises: workflow_0001
Create Date: 2026-12-04 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import ansflow.db.models

revision: str = "dispatch_0001"
down_revision: str | None = "workflow_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("atomic_step", sa.Column("runs_on", sa.JSON(), nullable=True))
    with op.batch_alter_table("step_execution") as batch:
        batch.add_column(sa.Column("worker_id", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("lease_expires_at",
                                   ansflow.db.models.UtcDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("dispatch", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("stop_requested", sa.String(length=16), nullable=True))
    op.create_index(op.f("ix_step_execution_worker_id_status"), "step_execution",
                    ["worker_id", "status"], unique=False)
    op.create_index(op.f("ix_step_execution_dispatch"), "step_execution", ["dispatch"],
                    unique=False)
    op.create_table(
        "worker",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("running", sa.Integer(), nullable=False),
        sa.Column("started_at", ansflow.db.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", ansflow.db.models.UtcDateTime(timezone=True),
                  nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_worker")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    op.create_index(op.f("ix_worker_heartbeat_at"), "worker", ["heartbeat_at"], unique=False)


def downgrade() -> None:
    op.drop_table("worker")
    op.drop_index(op.f("ix_step_execution_dispatch"), table_name="step_execution")
    op.drop_index(op.f("ix_step_execution_worker_id_status"), table_name="step_execution")
    with op.batch_alter_table("step_execution") as batch:
        batch.drop_column("stop_requested")
        batch.drop_column("dispatch")
        batch.drop_column("lease_expires_at")
        batch.drop_column("worker_id")
    op.drop_column("atomic_step", "runs_on")
