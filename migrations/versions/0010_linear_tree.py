"""Trees that grow linearly: a fork inherits its source's segments instead of copying them.

* ``sessions.inherit_id`` and ``sessions.inherit_upto``: a session's view starts with the
  segments of ``inherit_id`` whose ``hi`` is at most ``inherit_upto`` (resolved the same
  way down that session's own link), then its own segments, then its own rows. A fork
  writes at most two segments instead of a copy of all of its source's (a chain of 1,000
  forks stored 500,500 segment rows; it now stores 1,000).
* ``sessions.inherit_count`` and ``sessions.inherit_size``: how many messages, and bytes,
  the session shows through that link (a fork at the end, or in the source's own rows,
  then reads no segment).
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
    op.execute(SESSION_VIEW)


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
    op.drop_index("ix_sessions_inherit_id", table_name="sessions")
    # SQLite drops a column in place (3.35+): no rebuild, so the table keeps its triggers
    for column in ("inherit_size", "inherit_count", "inherit_upto", "inherit_id"):
        op.drop_column("sessions", column)
