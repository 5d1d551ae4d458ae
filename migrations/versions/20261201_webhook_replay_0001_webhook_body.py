"""webhook bodies seen in the last 24 h (replay protection)

Revision ID: webhook_replay_0001
Revises: 31fb20265f7c
Create Date: 2026-12-01 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import ansflow.db.models

revision: str = "webhook_replay_0001"
down_revision: str | None = "31fb20265f7c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_body",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pipeline_id", sa.Integer(), nullable=False),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.Column("delivery_id", sa.String(length=128), nullable=False),
        sa.Column("execution_id", sa.Integer(), nullable=True),
        sa.Column("created_at", ansflow.db.models.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["pipeline_execution.id"],
            name=op.f("fk_webhook_body_execution_id"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["pipeline_id"],
            ["pipeline.id"],
            name=op.f("fk_webhook_body_pipeline_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_body")),
        sa.UniqueConstraint(
            "pipeline_id", "body_sha256", name=op.f("uq_webhook_body_pipeline_id_body_sha256")
        ),
        mysql_charset="utf8mb4",
    )
    op.create_index(
        op.f("ix_webhook_body_created_at"), "webhook_body", ["created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_webhook_body_created_at"), table_name="webhook_body")
    op.drop_table("webhook_body")
