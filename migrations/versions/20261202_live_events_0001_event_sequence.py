"""event sequence: per-execution commit numbers for resumable live events

Revision ID: live_events_0001
Revises: record_0001
Create Date: 2026-11-30 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "live_events_0001"
down_revision: str | None = "record_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("pipeline_execution") as batch:
        batch.add_column(sa.Column("event_seq", sa.BigInteger(), server_default="0",
                                   nullable=False))
        batch.add_column(sa.Column("status_seq", sa.BigInteger(), server_default="0",
                                   nullable=False))
    with op.batch_alter_table("step_execution") as batch:
        batch.add_column(sa.Column("status_seq", sa.BigInteger(), server_default="0",
                                   nullable=False))
    with op.batch_alter_table("step_log") as batch:
        batch.add_column(sa.Column("seq", sa.BigInteger(), server_default="0",
                                   nullable=False))
        batch.create_index(batch.f("ix_step_log_step_execution_id_seq"),
                           ["step_execution_id", "seq"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("step_log") as batch:
        batch.drop_index(batch.f("ix_step_log_step_execution_id_seq"))
        batch.drop_column("seq")
    with op.batch_alter_table("step_execution") as batch:
        batch.drop_column("status_seq")
    with op.batch_alter_table("pipeline_execution") as batch:
        batch.drop_column("status_seq")
        batch.drop_column("event_seq")
