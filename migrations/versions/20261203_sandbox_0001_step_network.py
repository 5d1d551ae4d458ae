"""step network flag (network: false unshares the network of the step's sandbox)

Revision ID: sandbox_0001
Revises: live_events_0001
Create Date: 2026-11-30 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "sandbox_0001"
down_revision: str | None = "live_events_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("atomic_step") as batch:
        batch.add_column(sa.Column("network", sa.Boolean(), server_default=sa.true(),
                                   nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("atomic_step") as batch:
        batch.drop_column("network")
