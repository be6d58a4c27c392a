"""Full-text search: an index of every message's terms, kept in step by every write.

* ``messages.indexed``: 1 on a row the library has indexed, NULL on a row it has not
  (the rows stored before this revision, and rows another program inserts or changes):
  *pending*. A search evaluates the pending rows of its scope in Python, so it finds them
  too; the library's next write indexes a bounded batch of them, and opening a store whose
  index was built with other rules (or never) indexes every pending row in bulk.
  ``ix_messages_pending`` (partial: the NULL rows only) finds them without a scan.
* The index, per database: SQLite's FTS5 table ``message_fts(body, scope)`` (rowid = the
  message id; ``body`` the message's terms, ``scope`` a token of its tree and one of its
  role; ``tokenize='ascii'``, which splits only at ASCII whitespace and punctuation, so it
  sees exactly the terms the library wrote; ``columnsize=0``: ranking is the library's); PostgreSQL's ``message_search`` side table
  (a tsvector of the terms with a GIN index, the tree and role beside it).
* A trigger keeps the index honest whoever writes: an UPDATE of a message's text, role or
  tree marks it pending and removes its entry.
* A deleted message's entry: PostgreSQL removes it (ON DELETE CASCADE). SQLite leaves it
  (an *orphan*): FTS5 re-reads and re-tokenizes a row to delete it (~70 us a row on
  SQLite 3.40, no ``contentless_delete``), which made deleting a 100k-message session 13x
  slower. An orphan is never shown (every lookup joins ``messages``, and ids are never
  reused: 0004); ``search_gone`` holds the id ranges (``lo < id <= hi``) the library's own
  deletes emptied, one row per range, and its later writes remove those ranges' orphans
  in bounded batches; a rebuild removes every orphan, the integrity check counts them
  (another program's deletes included).
* ``search_index``: one row, the version of the analysis rules the entries were built
  with (0: none yet).

The terms are computed by the library (``coda_session.search.analysis``), which a revision
may not import (it would run other rules than it was written with): this revision builds
the structures and leaves every stored row pending; the first open by a library that
writes version N indexes them all in bulk (one statement per batch, no per-row trigger).
Downgrading drops it all; no stored message changes either way.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: the columns whose change makes a message's index entry wrong
_WATCHED = "content, content_zlib, role, metadata, root_id"

_SQLITE = (
    # columnsize=0: no per-row column sizes (bm25's input): ranking is done in Python
    "CREATE VIRTUAL TABLE message_fts USING fts5(body, scope, tokenize='ascii', columnsize=0)",
    f"CREATE TRIGGER coda_messages_search_update AFTER UPDATE OF {_WATCHED} ON messages "  # noqa: S608
    "FOR EACH ROW WHEN OLD.indexed IS NOT NULL BEGIN "
    "DELETE FROM message_fts WHERE rowid = OLD.id; "
    "UPDATE messages SET indexed = NULL WHERE id = NEW.id; END",
)

_POSTGRESQL = (
    "CREATE TABLE message_search ("
    "id BIGINT PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE, "
    "root_id TEXT NOT NULL, role TEXT NOT NULL, body TEXT NOT NULL, tsv TSVECTOR NOT NULL)",
    "CREATE INDEX ix_message_search_tsv ON message_search USING gin (tsv)",
    "CREATE INDEX ix_message_search_root_id_id ON message_search (root_id, id)",
    "CREATE FUNCTION coda_message_changed() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN DELETE FROM message_search WHERE id = OLD.id; NEW.indexed := NULL; RETURN NEW; "
    "END $$",
    f"CREATE TRIGGER coda_messages_search_update BEFORE UPDATE OF {_WATCHED} ON messages "
    "FOR EACH ROW WHEN (OLD.indexed IS NOT NULL) EXECUTE FUNCTION coda_message_changed()",
)


def upgrade() -> None:
    bind = op.get_bind()
    postgresql = bind.dialect.name == "postgresql"
    # plain ALTER TABLE ADD COLUMN, in place (batch mode would lose AUTOINCREMENT, 0004);
    # NULL on every stored row: all pending
    op.add_column("messages", sa.Column("indexed", sa.SmallInteger(), nullable=True))
    op.create_index(
        "ix_messages_pending",
        "messages",
        ["id"],
        sqlite_where=sa.text("indexed IS NULL"),
        postgresql_where=sa.text("indexed IS NULL"),
    )
    op.create_table(
        "search_index",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.execute("INSERT INTO search_index (id, version) VALUES (1, 0)")
    for statement in _POSTGRESQL if postgresql else _SQLITE:
        op.execute(statement)
    if not postgresql:
        op.create_table(
            "search_gone",
            sa.Column("id", sa.Integer(), primary_key=True),
            sa.Column("lo", sa.BigInteger(), nullable=False),
            sa.Column("hi", sa.BigInteger(), nullable=False),
        )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS coda_messages_search_update ON messages")
        op.execute("DROP FUNCTION IF EXISTS coda_message_changed()")
        op.execute("DROP TABLE IF EXISTS message_search")
    else:
        op.execute("DROP TRIGGER IF EXISTS coda_messages_search_update")
        op.execute("DROP TABLE IF EXISTS search_gone")
        op.execute("DROP TABLE IF EXISTS message_fts")
    op.drop_table("search_index")
    op.drop_index("ix_messages_pending", table_name="messages")
    op.drop_column("messages", "indexed")
