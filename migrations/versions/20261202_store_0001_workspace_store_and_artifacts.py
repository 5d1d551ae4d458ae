"""workspace store: step manifests, step-level artifacts and caches, the artifact table

Revision ID: store_0001
Revises: sandbox_0001
Create Date: 2026-12-02 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import ansflow.db.models

revision: str = "store_0001"
down_revision: str | None = "sandbox_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("atomic_step", sa.Column("artifacts", sa.JSON(), nullable=True))
    op.add_column("atomic_step", sa.Column("cache", sa.JSON(), nullable=True))
    op.add_column("step_execution", sa.Column("manifest", sa.String(length=64), nullable=True))
    op.create_table(
        "artifact",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("pipeline_execution_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", ansflow.db.models.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["pipeline_execution_id"],
            ["pipeline_execution.id"],
            name=op.f("fk_artifact_pipeline_execution_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifact")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    op.create_index(op.f("ix_artifact_created_at"), "artifact", ["created_at"], unique=False)
    op.create_index(op.f("ix_artifact_pipeline_execution_id_step"), "artifact",
                    ["pipeline_execution_id", "step"], unique=False)


def downgrade() -> None:
    op.drop_table("artifact")  # with its indexes (MySQL refuses to drop the FK's index alone)
    op.drop_column("step_execution", "manifest")
    op.drop_column("atomic_step", "cache")
    op.drop_column("atomic_step", "artifacts")
