"""the holder's last heartbeat; the original run of a step a retry reused

Revision ID: record_0001
Revises: utf8mb4_0001
Create Date: 2026-12-02 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import ansflow.db.models

revision: str = "record_0001"
down_revision: str | None = "utf8mb4_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("pipeline_execution") as batch:
        batch.add_column(sa.Column("heartbeat_at", ansflow.db.models.UtcDateTime(timezone=True),
                                   nullable=True))
    with op.batch_alter_table("step_execution") as batch:
        batch.add_column(sa.Column("original", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("step_execution") as batch:
        batch.drop_column("original")
    with op.batch_alter_table("pipeline_execution") as batch:
        batch.drop_column("heartbeat_at")
