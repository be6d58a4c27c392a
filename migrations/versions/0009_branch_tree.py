"""Copy-on-write branches: a fork shares its source's rows instead of copying them.

* ``sessions.root_id``: the key of the session's tree (the id of the tree's first
  session), carried by every row of the tree and named by every hot query, so that a
  distributed PostgreSQL can keep a tree on one shard; filled with each session's own id.
* ``sessions.parent_id`` and ``sessions.fork_point``: the session a branch was forked
  from and how many of its messages it started with (NULL for a session that is no
  branch: every existing one, since earlier branches were copies).
* ``sessions.holder``: true for a row that holds messages only branches show (its session
  was deleted or stopped showing them); never listed, never found by name or id.
* ``messages.root_id``: the tree's key on every message, filled from its session.
  Triggers fill both keys for rows another program inserts without them (a new session
  is its own tree; a message takes its session's key), as the spec's schema knows none.
* ``session_segments``: what a branch shows of other sessions' rows (the rows of
  ``owner_id`` with ``lo < id <= hi``), oldest first, with their count and size.

Downgrading turns every branch back into a copy (its inherited messages are written as
its own, in order, with new ids), drops the rows only branches showed, then the columns
and the table.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = "role, content, timestamp, metadata, content_zlib, size_bytes, char_count"


def upgrade() -> None:
    bind = op.get_bind()
    big = sa.BigInteger() if bind.dialect.name == "postgresql" else sa.Integer()
    # plain ALTER TABLE ADD COLUMN, in place (batch mode would lose AUTOINCREMENT, 0004)
    op.add_column("sessions", sa.Column("root_id", sa.Text(), nullable=True))
    op.add_column("sessions", sa.Column("parent_id", sa.Text(), nullable=True))
    op.add_column("sessions", sa.Column("fork_point", big, nullable=True))
    op.add_column(
        "sessions",
        sa.Column("holder", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("messages", sa.Column("root_id", sa.Text(), nullable=True))
    op.execute("UPDATE sessions SET root_id = id")
    op.execute("UPDATE messages SET root_id = session_id")
    op.create_index("ix_sessions_root_id", "sessions", ["root_id"])
    op.create_table(
        "session_segments",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("root_id", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("owner_id", sa.Text(), nullable=False),
        sa.Column("lo", big, nullable=False),
        sa.Column("hi", big, nullable=False),
        sa.Column("message_count", big, nullable=False),
        sa.Column("size_bytes", big, nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name="fk_session_segments_session_id_sessions"
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["sessions.id"], name="fk_session_segments_owner_id_sessions"
        ),
    )
    op.create_index("ix_session_segments_session_id_hi", "session_segments", ["session_id", "hi"])
    op.create_index("ix_session_segments_owner_id", "session_segments", ["owner_id"])
    _fill_keys(bind)


_PG_FILL = """
CREATE FUNCTION coda_fill_root_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'sessions' THEN
        NEW.root_id := NEW.id;
    ELSE
        NEW.root_id := (SELECT s.root_id FROM sessions s WHERE s.id = NEW.session_id);
    END IF;
    RETURN NEW;
END $$
"""


def _fill_keys(bind: sa.Connection) -> None:
    """Triggers giving a row inserted without a tree key its key."""
    if bind.dialect.name == "postgresql":
        op.execute(_PG_FILL)
        for table in ("sessions", "messages"):
            op.execute(
                f"CREATE TRIGGER coda_{table}_root_id BEFORE INSERT ON {table} FOR EACH ROW "
                "WHEN (NEW.root_id IS NULL) EXECUTE FUNCTION coda_fill_root_id()"
            )
        return
    op.execute(
        "CREATE TRIGGER coda_sessions_root_id AFTER INSERT ON sessions FOR EACH ROW "
        "WHEN NEW.root_id IS NULL BEGIN "
        "UPDATE sessions SET root_id = NEW.id WHERE id = NEW.id; END"
    )
    op.execute(
        "CREATE TRIGGER coda_messages_root_id AFTER INSERT ON messages FOR EACH ROW "
        "WHEN NEW.root_id IS NULL BEGIN UPDATE messages SET root_id = "
        "(SELECT s.root_id FROM sessions s WHERE s.id = NEW.session_id) "
        "WHERE id = NEW.id; END"
    )


def _drop_fill_keys(bind: sa.Connection) -> None:
    for table in ("sessions", "messages"):
        on = f" ON {table}" if bind.dialect.name == "postgresql" else ""
        op.execute(f"DROP TRIGGER IF EXISTS coda_{table}_root_id{on}")
    if bind.dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS coda_fill_root_id()")


def _materialize(bind: sa.Connection) -> None:
    """Every branch's inherited messages become its own (copies, in order): each branch
    gets a copy of its whole view, read from the rows as they were (every copy's id is
    above them, so no view sees another branch's copies), then the old rows go."""
    newest = bind.execute(sa.text("SELECT coalesce(max(id), 0) FROM messages")).scalar_one()
    branches = [
        row[0]
        for row in bind.execute(
            sa.text(
                "SELECT DISTINCT g.session_id FROM session_segments g "
                "JOIN sessions s ON s.id = g.session_id WHERE NOT s.holder"
            )
        )
    ]
    for branch in branches:
        bind.execute(
            sa.text(
                f"INSERT INTO messages (session_id, {_COLUMNS}) "  # noqa: S608
                f"SELECT :branch, {_COLUMNS} FROM ("
                f"SELECT m.id AS id, {', '.join('m.' + c for c in _COLUMNS.split(', '))} "
                "FROM session_segments g JOIN messages m ON m.session_id = g.owner_id "
                "AND m.id > g.lo AND m.id <= g.hi WHERE g.session_id = :branch "
                f"UNION ALL SELECT id, {_COLUMNS} FROM messages WHERE session_id = :branch "
                "AND id <= :newest) v ORDER BY v.id"
            ),
            {"branch": branch, "newest": newest},
        )
    for branch in branches:
        bind.execute(
            sa.text("DELETE FROM messages WHERE session_id = :branch AND id <= :newest"),
            {"branch": branch, "newest": newest},
        )
        bind.execute(
            sa.text(
                "UPDATE sessions SET last_message_id = (SELECT coalesce(max(id), 0) "
                "FROM messages WHERE session_id = :branch) WHERE id = :branch"
            ),
            {"branch": branch},
        )
    bind.execute(sa.text("DELETE FROM session_segments"))
    bind.execute(
        sa.text("DELETE FROM messages WHERE session_id IN (SELECT id FROM sessions WHERE holder)")
    )
    bind.execute(sa.text("DELETE FROM sessions WHERE holder"))


def downgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    _drop_fill_keys(bind)
    _materialize(bind)
    op.drop_table("session_segments")
    op.drop_index("ix_sessions_root_id", table_name="sessions")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("holder")
        batch.drop_column("fork_point")
        batch.drop_column("parent_id")
        batch.drop_column("root_id")
    # on SQLite dropping a column rebuilds the table: keep its AUTOINCREMENT (0004)
    with op.batch_alter_table(
        "messages", table_kwargs={"sqlite_autoincrement": True} if sqlite else {}
    ) as batch:
        batch.drop_column("root_id")
