"""Trees that grow linearly: a fork inherits its source's segments instead of copying them.

* ``sessions.inherit_id`` and ``sessions.inherit_upto``: a session's view starts with the
  segments of ``inherit_id`` whose ``hi`` is at most ``inherit_upto`` (resolved the same
  way down that session's own link), then its own segments, then its own rows. A fork
  writes at most two segments instead of a copy of all of its source's (a chain of 1,000
  forks stored 500,500 segment rows; it now stores 1,000).
* ``sessions.inherit_count`` and ``sessions.inherit_size``: how many messages, and bytes,
  the session shows through that link (a fork at the end, or in the source's own rows,
  then reads no segment).
* ``messages.ord`` and ``messages.cum_size``: each row's place among its session's rows
  (1, 2, ... in id order) and the running sum of ``size_bytes`` up to it, filled for every
  row, then kept by every insert (triggers number rows another program inserts): the
  count and size of a range of a session's rows, and its k-th row, come from the
  range's two ends (a fork in the middle of a 100k-message session read 50,000 rows).
  Indexed by (session_id, ord).
* ``session_view``: a view of what each session shows, for other programs (``sqlite3``,
  Datasette, psql): one row per message of each (non-hidden) session, with its
  ``position`` (1 = the oldest) and ``message_id``. A branch's messages live in other
  sessions' rows; ``messages WHERE session_id = ...`` shows only its own.

Existing sessions keep their flat segment lists (no link): the upgrade changes no row.
Downgrading writes every link out as copies of the segments it inherits (what 0009
stored), then drops the view, the index and the columns.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: above every message id
_BEYOND = 2**62

#: Every session's view (holders excluded): its inherited and own segments, resolved
#: down the links (UNION ends a damaged link cycle), then its own rows.
SESSION_VIEW = f"""
CREATE VIEW session_view AS
WITH RECURSIVE chain(session_id, sid, cut) AS (
    SELECT id, id, CAST({_BEYOND} AS BIGINT) FROM sessions WHERE NOT holder
    UNION
    SELECT c.session_id, s.inherit_id,
        CASE WHEN s.inherit_upto < c.cut THEN s.inherit_upto ELSE c.cut END
    FROM chain c JOIN sessions s ON s.id = c.sid WHERE s.inherit_id IS NOT NULL
), runs(session_id, owner_id, lo, hi) AS (
    SELECT c.session_id, g.owner_id, g.lo, g.hi
    FROM chain c JOIN session_segments g ON g.session_id = c.sid AND g.hi <= c.cut
    UNION ALL
    SELECT id, id, CAST(-1 AS BIGINT), CAST({_BEYOND} AS BIGINT) FROM sessions WHERE NOT holder
)
SELECT r.session_id AS session_id, s.name AS session_name,
    row_number() OVER (PARTITION BY r.session_id ORDER BY m.id) AS position,
    m.id AS message_id, m.role AS role, m.content AS content, m.timestamp AS timestamp,
    m.metadata AS metadata, m.content_zlib IS NOT NULL AS compressed,
    m.size_bytes AS size_bytes
FROM runs r
JOIN messages m ON m.session_id = r.owner_id AND m.id > r.lo AND m.id <= r.hi
JOIN sessions s ON s.id = r.session_id
"""  # noqa: S608 - constant text


def upgrade() -> None:
    bind = op.get_bind()
    big = sa.BigInteger() if bind.dialect.name == "postgresql" else sa.Integer()
    # plain ALTER TABLE ADD COLUMN, in place (batch mode would lose AUTOINCREMENT, 0004)
    op.add_column("sessions", sa.Column("inherit_id", sa.Text(), nullable=True))
    op.add_column("sessions", sa.Column("inherit_upto", big, nullable=True))
    op.add_column(
        "sessions",
        sa.Column("inherit_count", big, nullable=False, server_default=sa.text("0")),
    )
    op.add_column(
        "sessions",
        sa.Column("inherit_size", big, nullable=False, server_default=sa.text("0")),
    )
    op.create_index("ix_sessions_inherit_id", "sessions", ["inherit_id"])
    op.add_column("messages", sa.Column("ord", sa.BigInteger(), nullable=True))
    op.add_column("messages", sa.Column("cum_size", sa.BigInteger(), nullable=True))
    op.execute(
        "UPDATE messages SET ord = r.o, cum_size = r.c FROM (SELECT id, "
        "row_number() OVER (PARTITION BY session_id ORDER BY id) AS o, "
        "sum(size_bytes) OVER (PARTITION BY session_id ORDER BY id) AS c "
        "FROM messages) r WHERE r.id = messages.id"
    )
    op.create_index("ix_messages_session_id_ord", "messages", ["session_id", "ord"])
    _number_rows(bind)
    op.execute(SESSION_VIEW)


_PG_NUMBER = """
CREATE FUNCTION coda_number_message() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    prev_ord bigint;
    prev_cum bigint;
    found_prev boolean;
BEGIN
    SELECT x.ord, x.cum_size, true INTO prev_ord, prev_cum, found_prev FROM messages x
    WHERE x.session_id = NEW.session_id ORDER BY x.id DESC LIMIT 1;
    IF found_prev IS NULL THEN
        NEW.ord := 1;
        NEW.cum_size := NEW.size_bytes;
    ELSIF prev_ord IS NOT NULL AND prev_cum IS NOT NULL THEN
        NEW.ord := prev_ord + 1;
        NEW.cum_size := prev_cum + NEW.size_bytes;
    END IF;
    RETURN NEW;
END $$
"""


def _number_rows(bind: sa.Connection) -> None:
    """A message another program inserts without a place gets one (after its session's
    newest row), as the library gives its own rows."""
    if bind.dialect.name == "postgresql":
        op.execute(_PG_NUMBER)
        op.execute(
            "CREATE TRIGGER coda_messages_ord BEFORE INSERT ON messages FOR EACH ROW "
            "WHEN (NEW.ord IS NULL) EXECUTE FUNCTION coda_number_message()"
        )
        return
    op.execute(
        "CREATE TRIGGER coda_messages_ord AFTER INSERT ON messages FOR EACH ROW "
        "WHEN NEW.ord IS NULL BEGIN UPDATE messages SET "
        "ord = (SELECT CASE WHEN count(*) = 0 THEN 1 ELSE max(p.ord) + 1 END FROM "
        "(SELECT x.ord FROM messages x WHERE x.session_id = NEW.session_id AND x.id < NEW.id "
        "ORDER BY x.id DESC LIMIT 1) p), "
        "cum_size = (SELECT CASE WHEN count(*) = 0 THEN NEW.size_bytes "
        "ELSE max(p.cum_size) + NEW.size_bytes END FROM "
        "(SELECT x.cum_size FROM messages x WHERE x.session_id = NEW.session_id "
        "AND x.id < NEW.id ORDER BY x.id DESC LIMIT 1) p) "
        "WHERE id = NEW.id; END"
    )


_INHERITED = sa.text(
    "WITH RECURSIVE chain(sid, cut) AS (SELECT CAST(:sid AS TEXT), CAST(:upto AS BIGINT) "
    "UNION SELECT s.inherit_id, CASE WHEN s.inherit_upto < c.cut THEN s.inherit_upto "
    "ELSE c.cut END FROM chain c JOIN sessions s ON s.id = c.sid "
    "WHERE s.inherit_id IS NOT NULL) "
    "SELECT DISTINCT g.id, g.root_id, g.owner_id, g.lo, g.hi, g.message_count, g.size_bytes "
    "FROM chain c JOIN session_segments g ON g.session_id = c.sid AND g.hi <= c.cut"
)


def _flatten(bind: sa.Connection) -> None:
    """Every link becomes copies of the segments it inherits, all read before any is
    written (a copy in one list would show twice through a link still to be read)."""
    linked = bind.execute(
        sa.text("SELECT id, inherit_id, inherit_upto FROM sessions WHERE inherit_id IS NOT NULL")
    ).all()
    copies: list[dict[str, object]] = []
    for sid, inherit, upto in linked:
        for _, root, owner, lo, hi, count, size in bind.execute(
            _INHERITED, {"sid": inherit, "upto": upto}
        ):
            copies.append(
                {
                    "root_id": root,
                    "session_id": sid,
                    "owner_id": owner,
                    "lo": lo,
                    "hi": hi,
                    "message_count": count,
                    "size_bytes": size,
                }
            )
    if copies:
        bind.execute(
            sa.text(
                "INSERT INTO session_segments "
                "(root_id, session_id, owner_id, lo, hi, message_count, size_bytes) "
                "VALUES (:root_id, :session_id, :owner_id, :lo, :hi, :message_count, "
                ":size_bytes)"
            ),
            copies,
        )
    bind.execute(sa.text("UPDATE sessions SET inherit_id = NULL, inherit_upto = NULL"))


def downgrade() -> None:
    bind = op.get_bind()
    _flatten(bind)
    op.execute("DROP VIEW session_view")
    on = " ON messages" if bind.dialect.name == "postgresql" else ""
    op.execute(f"DROP TRIGGER IF EXISTS coda_messages_ord{on}")
    if bind.dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS coda_number_message()")
    op.drop_index("ix_messages_session_id_ord", table_name="messages")
    op.drop_column("messages", "cum_size")
    op.drop_column("messages", "ord")
    op.drop_index("ix_sessions_inherit_id", table_name="sessions")
    # SQLite drops a column in place (3.35+): no rebuild, so the table keeps its triggers
    for column in ("inherit_size", "inherit_count", "inherit_upto", "inherit_id"):
        op.drop_column("sessions", column)
