"""Ready for a database server: 64-bit ids, each session's newest id on its row.

``sessions.last_message_id`` is the largest message id the session was ever given (a
truncation never lowers it), filled here from the messages stored. Writers lock the
session row first, so they read it, with the counters, after the lock on every database:
under PostgreSQL's READ COMMITTED a ``max(messages.id)`` taken in the same statement
could be stale.

On PostgreSQL only:

* ``messages.id``, ``adoption_notes.message_id`` and the session counters become BIGINT
  (``integer out of range`` past 2**31 otherwise), the ids' sequence too;
* a database adopted from the spec's raw DDL is brought to the library's shape: its
  ``TIMESTAMP`` message column becomes TEXT (the caller's string, verbatim, from now
  on; what the server had normalised is written back as ISO-8601 text), session times
  become ``timestamptz`` (read as UTC), ``messages.id`` gets its sequence, and the
  unique constraint on ``sessions.name`` its conventional name (``uq_sessions_name``),
  by which a taken name is recognised.

SQLite's integers are 64-bit already; there only the column is added (in place).
Downgrading drops ``last_message_id`` and, on PostgreSQL, turns the types back (a value
past 2**31 then refuses the downgrade, with PostgreSQL's error, and nothing changes).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG = (
    ("messages", "id"),
    ("sessions", "message_count"),
    ("sessions", "size_bytes"),
    ("sessions", "metadata_version"),
    ("adoption_notes", "message_id"),
)


def _column_types(bind: sa.Connection, table: str) -> dict[str, str]:
    return {c["name"]: str(c["type"]).upper() for c in sa.inspect(bind).get_columns(table)}


def _adopt_postgres(bind: sa.Connection) -> None:
    """What a spec-DDL database on PostgreSQL lacks; nothing for one this library made."""
    messages = _column_types(bind, "messages")
    if messages.get("timestamp", "").startswith("TIMESTAMP"):
        op.execute(
            "ALTER TABLE messages ALTER COLUMN timestamp TYPE TEXT USING "
            "to_char(timestamp, 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
        )
    # by the reflected type's flag: str() of a TIMESTAMP says "TIMESTAMP" with or without
    # a time zone
    sessions = {c["name"]: c["type"] for c in sa.inspect(bind).get_columns("sessions")}
    for column in ("created_at", "updated_at"):
        kind = sessions.get(column)
        if isinstance(kind, sa.DateTime) and not kind.timezone:
            op.execute(
                f"ALTER TABLE sessions ALTER COLUMN {column} TYPE TIMESTAMP WITH TIME ZONE "
                f"USING {column} AT TIME ZONE 'UTC'"
            )
    has_sequence = bind.exec_driver_sql("SELECT pg_get_serial_sequence('messages', 'id')").scalar()
    if has_sequence is None:
        op.execute("CREATE SEQUENCE messages_id_seq AS BIGINT OWNED BY messages.id")
        op.execute("ALTER TABLE messages ALTER COLUMN id SET DEFAULT nextval('messages_id_seq')")
        op.execute(
            "SELECT setval('messages_id_seq', coalesce((SELECT max(id) FROM messages), 0) + 1, "
            "false)"
        )
    unique = {
        u["name"]: u["column_names"] for u in sa.inspect(bind).get_unique_constraints("sessions")
    }
    if "uq_sessions_name" not in unique:
        for name, columns in unique.items():
            if columns == ["name"] and name:
                op.execute(f'ALTER TABLE sessions RENAME CONSTRAINT "{name}" TO uq_sessions_name')
                break


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    if postgres:
        _adopt_postgres(bind)
        for table, column in _BIG:
            op.alter_column(table, column, type_=sa.BigInteger(), existing_type=sa.Integer())
        op.execute("ALTER SEQUENCE IF EXISTS messages_id_seq AS BIGINT")
    # plain ALTER TABLE ADD COLUMN on SQLite too (batch mode would lose AUTOINCREMENT, 0004)
    op.add_column(
        "sessions",
        sa.Column(
            "last_message_id",
            sa.BigInteger() if postgres else sa.Integer(),
            nullable=False,
            server_default=sa.text("0"),
        ),
    )
    op.execute(
        "UPDATE sessions SET last_message_id = (SELECT coalesce(max(m.id), 0) FROM messages m "
        "WHERE m.session_id = sessions.id)"
    )


def downgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("last_message_id")
    if postgres:
        for table, column in _BIG:
            op.alter_column(table, column, type_=sa.Integer(), existing_type=sa.BigInteger())
        op.execute("ALTER SEQUENCE IF EXISTS messages_id_seq AS INTEGER")
