"""utf8mb4 tables on MySQL and MariaDB

Every table of the database (and the database's default, for tables created later) to
utf8mb4 with binary collation, whatever the server's default was: a latin1 default turns
こんにちは into an error and loses emoji from logs. Converting keeps the data; downgrading
keeps the conversion. Nothing to do on SQLite.

Revision ID: utf8mb4_0001
Revises: keys_audit_0001
Create Date: 2026-11-30 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "utf8mb4_0001"
down_revision: str | None = "keys_audit_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHARSET = "utf8mb4"
COLLATION = "utf8mb4_bin"

_TABLES = sa.text("""
    SELECT TABLE_NAME FROM information_schema.TABLES
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE'
      AND TABLE_NAME <> 'alembic_version' AND TABLE_COLLATION <> :collation
""")
_COLUMNS = sa.text("""
    SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME <> 'alembic_version'
      AND COLLATION_NAME IS NOT NULL AND COLLATION_NAME <> :collation
    ORDER BY TABLE_NAME, ORDINAL_POSITION
""")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name not in ("mysql", "mariadb"):
        return
    op.execute(f"ALTER DATABASE CHARACTER SET {CHARSET} COLLATE {COLLATION}")
    params = {"collation": COLLATION}
    changes: dict[str, list[str]] = {
        table: [] for table in bind.execute(_TABLES, params).scalars()}
    # each text column keeps its type (CONVERT TO would turn TEXT into MEDIUMTEXT) and
    # nullability; AnsFlow's text columns have no server defaults
    for table, column, column_type, nullable in bind.execute(_COLUMNS, params):
        changes.setdefault(table, []).append(
            f"MODIFY `{column}` {column_type} CHARACTER SET {CHARSET} COLLATE {COLLATION} "
            + ("NULL" if nullable == "YES" else "NOT NULL"))
    for table, columns in sorted(changes.items()):
        op.execute(f"ALTER TABLE `{table}` "
                   + ", ".join([f"DEFAULT CHARACTER SET {CHARSET} COLLATE {COLLATION}",
                                *columns]))


def downgrade() -> None:
    # the previous schema is the same apart from the character set; utf8mb4 stays
    pass
