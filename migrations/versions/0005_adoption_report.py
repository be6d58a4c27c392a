"""The adoption report: adoption_notes, what adopting a database had to interpret.

A database made from the spec's raw DDL (no Alembic version table) is adopted: stamped at
the baseline, migrated, then repaired where the library cannot read it (see
``coda_session.repository.sql.adoption.repair_adopted``). Each value it interpreted gets a
row here, readable with any SQLite client. Downgrading drops the report (the repaired
values stay).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "adoption_notes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("noted_at", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("session_id", sa.Text()),
        sa.Column("message_id", sa.Integer()),
        sa.Column("field", sa.Text(), nullable=False),
        sa.Column("original", sa.Text()),
        sa.Column("interpreted_as", sa.Text()),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adoption_notes")),
    )


def downgrade() -> None:
    op.drop_table("adoption_notes")
