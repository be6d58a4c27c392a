"""Declarative models mirroring the spec's sessions/messages schema (same names)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from ...timeutil import from_db_timestamp, to_sqlite_timestamp

__all__ = [
    "SESSION_FIELDS",
    "UTC_TIMESTAMP",
    "AdoptionNote",
    "Base",
    "JsonText",
    "MessageRow",
    "RawBytes",
    "SearchIndexRow",
    "SegmentRow",
    "SessionRow",
    "SessionTagRow",
    "TextTimestamp",
    "TextUtcTimestamp",
    "UtcTimestamp",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcTimestamp(TypeDecorator[datetime]):
    """TIMESTAMP holding aware UTC datetimes on every database (the column type is
    :data:`UTC_TIMESTAMP`, which gives SQLite :class:`TextUtcTimestamp`)."""

    impl = sa.TIMESTAMP(timezone=True)
    cache_ok = True

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        return _read_timestamp


class TextUtcTimestamp(UtcTimestamp):
    """:class:`UtcTimestamp` on a database without a timestamp type (SQLite): the value is
    ISO-8601 text that sorts in time order."""

    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Any:
        return _text_timestamp


def _text_timestamp(value: datetime | None) -> str | None:
    return None if value is None else to_sqlite_timestamp(value)


#: The session timestamps' column type: declared per database, as :data:`BigId` is
UTC_TIMESTAMP = UtcTimestamp().with_variant(TextUtcTimestamp(), "sqlite")


def _read_timestamp(value: Any) -> Any:
    # a value that is no timestamp (another tool's, or a damaged row) is returned as stored:
    # the repository shows it with a fallback and logs it, instead of failing the whole read
    if value is None:
        return None
    try:
        return from_db_timestamp(value)
    except (ValueError, TypeError, OverflowError):
        return value


class RawBytes(TypeDecorator[bytes]):
    """A binary column returned as the driver gives it (a damaged row may hold text there,
    which the repository then reports instead of failing inside the driver's processing)."""

    impl = sa.LargeBinary
    cache_ok = True

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        return None


class TextTimestamp(TypeDecorator[str]):
    """The message timestamp: the caller's ISO-8601 string, stored and returned verbatim.

    TIMESTAMP as the spec has it on SQLite (which keeps the text as given); the column is
    TEXT on PostgreSQL (a variant, below), whose TIMESTAMP would normalise the string.
    """

    impl = sa.TIMESTAMP
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Any:
        return None

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        return None


class JsonText(TypeDecorator[str]):
    """A JSON column whose values are JSON text encoded by coda_session itself, so that
    validation and encoding are the same for every backend."""

    impl = sa.JSON
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Any:
        return None

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        return None


#: 64-bit on PostgreSQL (a fleet of agents passes 2**31 messages and bytes); INTEGER on
#: SQLite, whose integers are 64-bit already and whose AUTOINCREMENT key must be INTEGER.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class SessionRow(Base):
    """``sessions``: one row per conversation. ``message_count`` and ``size_bytes`` are kept
    in step with ``messages`` by every write, so listing never scans messages."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    name: Mapped[str] = mapped_column(sa.Text, unique=True, nullable=False)
    created_at: Mapped[datetime | None] = mapped_column(UTC_TIMESTAMP)
    updated_at: Mapped[datetime | None] = mapped_column(UTC_TIMESTAMP)
    metadata_: Mapped[str | None] = mapped_column("metadata", JsonText)
    message_count: Mapped[int] = mapped_column(BigId, nullable=False, server_default=sa.text("0"))
    size_bytes: Mapped[int] = mapped_column(BigId, nullable=False, server_default=sa.text("0"))
    # bumped by every write that changes ``metadata``: a save whose caller saw the current
    # version neither reads nor decodes the metadata (see migration 0006)
    metadata_version: Mapped[int] = mapped_column(
        BigId, nullable=False, server_default=sa.text("0")
    )
    # the largest message id the session was ever given (never lowered by a truncation);
    # kept on the row that writers lock, so it is read after the lock on every database
    # (see migration 0008)
    last_message_id: Mapped[int] = mapped_column(BigId, nullable=False, server_default=sa.text("0"))
    # the branching tree (see migration 0009): the tree's key (its first session's id, the
    # shard key every row of the tree carries), the session this one was forked from and
    # how many of its messages it started with
    root_id: Mapped[str | None] = mapped_column(sa.Text, index=True)
    parent_id: Mapped[str | None] = mapped_column(sa.Text)
    fork_point: Mapped[int | None] = mapped_column(BigId)
    # a row that holds messages only branches show (its session was deleted, or stopped
    # showing them): never listed, never found by name or id
    holder: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, server_default=sa.false())
    # the session whose segments this one's view starts with: those with ``hi <=
    # inherit_upto`` (resolved the same way, down its own chain), before its own segments
    # and its own rows (see migration 0010 and branching.py); NULL: only its own
    inherit_id: Mapped[str | None] = mapped_column(sa.Text, index=True)
    inherit_upto: Mapped[int | None] = mapped_column(BigId)
    # how many messages it shows through that link, and their bytes (0 without one)
    inherit_count: Mapped[int] = mapped_column(BigId, nullable=False, server_default=sa.text("0"))
    inherit_size: Mapped[int] = mapped_column(BigId, nullable=False, server_default=sa.text("0"))


class SegmentRow(Base):
    """``session_segments``: what a branch shows of other sessions' rows, oldest first.

    A segment is the rows of ``owner_id`` with ``lo < id <= hi``; a branch shows the
    segments it inherits (``sessions.inherit_id``), then its own in order of ``hi``, then
    its own rows. A fork writes at most two segments and shares the rest of its source's
    through the inheritance link, so a chain of forks stores one per fork (see
    branching.py). ``message_count`` and ``size_bytes`` are the segment's.
    """

    __tablename__ = "session_segments"
    __table_args__ = (
        sa.Index("ix_session_segments_session_id_hi", "session_id", "hi"),
        sa.Index("ix_session_segments_owner_id", "owner_id"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    root_id: Mapped[str] = mapped_column(sa.Text, nullable=False)
    session_id: Mapped[str] = mapped_column(sa.Text, sa.ForeignKey("sessions.id"), nullable=False)
    owner_id: Mapped[str] = mapped_column(sa.Text, sa.ForeignKey("sessions.id"), nullable=False)
    lo: Mapped[int] = mapped_column(BigId, nullable=False)
    hi: Mapped[int] = mapped_column(BigId, nullable=False)
    message_count: Mapped[int] = mapped_column(BigId, nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigId, nullable=False)


class MessageRow(Base):
    """``messages``: ``id`` is the monotonic ordering key of a session's messages;
    ``size_bytes`` and ``char_count`` the message's size and characters, uncompressed."""

    __tablename__ = "messages"
    __table_args__ = (
        sa.Index("ix_messages_session_id_id", "session_id", "id"),
        sa.Index("ix_messages_session_id_ord", "session_id", "ord"),
        sa.Index(
            "ix_messages_pending",
            "id",
            sqlite_where=sa.text("indexed IS NULL"),
            postgresql_where=sa.text("indexed IS NULL"),
        ),
        # ids are never handed out twice (see migration 0004)
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    session_id: Mapped[str | None] = mapped_column(sa.Text, sa.ForeignKey("sessions.id"))
    role: Mapped[str | None] = mapped_column(sa.Text)
    content: Mapped[str | None] = mapped_column(sa.Text)
    timestamp: Mapped[str | None] = mapped_column(
        TextTimestamp().with_variant(sa.Text(), "postgresql")
    )
    metadata_: Mapped[str | None] = mapped_column("metadata", JsonText)
    # compress_messages: the content, zlib-compressed (then ``content`` is NULL)
    content_zlib: Mapped[bytes | None] = mapped_column(RawBytes)
    # computed once by the codec (MessageRecord.size / .chars), summed by the session's
    # totals, truncations and the token count (see migration 0006)
    size_bytes: Mapped[int] = mapped_column(
        sa.BigInteger, nullable=False, server_default=sa.text("0")
    )
    char_count: Mapped[int] = mapped_column(
        sa.BigInteger, nullable=False, server_default=sa.text("0")
    )
    # the tree's key, as on its session (see migration 0009)
    root_id: Mapped[str | None] = mapped_column(sa.Text)
    # the row's place among its session's rows (1, 2, ... in id order) and the sum of
    # size_bytes up to and including it: a range's count and size, and its k-th row, from
    # its two ends, without reading what lies between (see migration 0010)
    ord: Mapped[int | None] = mapped_column(sa.BigInteger)
    cum_size: Mapped[int | None] = mapped_column(sa.BigInteger)
    # 1: in the search index; NULL: pending (another program's row, or one it changed):
    # searched in Python until a write of the library's indexes it (see migration 0012)
    indexed: Mapped[int | None] = mapped_column(sa.SmallInteger)


class SearchIndexRow(Base):
    """``search_index``: one row, the version of the analysis rules
    (``search.analysis.INDEX_VERSION``) the search index was built with; 0: never built."""

    __tablename__ = "search_index"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    version: Mapped[int] = mapped_column(sa.Integer, nullable=False)


def _declared(name: str, *columns: tuple[str, Any, bool], rowid: bool = True) -> sa.Table:
    """A table SQLite's FTS5 made, declared as SQLite reports it (so the models describe
    the whole migrated schema); nothing creates or queries it through this declaration:
    migration 0012 creates ``message_fts``, FTS5 its shadow tables."""
    return sa.Table(
        name,
        Base.metadata,
        # SQLite reports a rowid table's INTEGER PRIMARY KEY as nullable, and the key of a
        # WITHOUT ROWID table as not
        *(sa.Column(c, t, primary_key=pk, nullable=rowid or not pk) for c, t, pk in columns),
        info={"fts5": True},
    )


_NONE = sa.types.NullType()
#: the FTS5 table of the search index (see .sqlite.search) and its shadow tables
message_fts = _declared("message_fts", ("body", _NONE, False), ("scope", _NONE, False))
_declared("message_fts_data", ("id", sa.Integer(), True), ("block", sa.LargeBinary(), False))
_declared(
    "message_fts_idx",
    ("segid", _NONE, True),
    ("term", _NONE, True),
    ("pgno", _NONE, False),
    rowid=False,
)
_declared(
    "message_fts_content", ("id", sa.Integer(), True), ("c0", _NONE, False), ("c1", _NONE, False)
)
_declared("message_fts_config", ("k", _NONE, True), ("v", _NONE, False), rowid=False)
#: SQLite only (migration 0012): id ranges ``lo < id <= hi`` the library's deletes emptied,
#: whose index entries (orphans) its later writes remove in batches (see .sqlite.search);
#: part of the FTS5 index's bookkeeping, so marked as its tables are (compared on SQLite only)
search_gone = sa.Table(
    "search_gone",
    Base.metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("lo", sa.BigInteger(), nullable=False),
    sa.Column("hi", sa.BigInteger(), nullable=False),
    info={"fts5": True},
)


class AdoptionNote(Base):
    """``adoption_notes``: one row per value that adopting a database made without
    coda_session had to interpret (the field, its original and what it became)."""

    __tablename__ = "adoption_notes"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    noted_at: Mapped[datetime] = mapped_column(UTC_TIMESTAMP, nullable=False)
    session_id: Mapped[str | None] = mapped_column(sa.Text)
    message_id: Mapped[int | None] = mapped_column(BigId)
    field: Mapped[str] = mapped_column(sa.Text, nullable=False)
    original: Mapped[str | None] = mapped_column(sa.Text)
    interpreted_as: Mapped[str | None] = mapped_column(sa.Text)


#: ``session_fields``: each value in a session's metadata, by path (see migration 0011):
#: derived from ``sessions.metadata`` by triggers, for filtered listings; no key of its own
SESSION_FIELDS = sa.Table(
    "session_fields",
    Base.metadata,
    sa.Column("session_id", sa.Text, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("num", sa.Numeric, nullable=True),
    sa.Column("txt", sa.Text, nullable=True),
    # the first 200 characters of path and txt: what the indexes hold (an index entry on
    # PostgreSQL must stay under 2,704 bytes); a lookup compares path and txt too
    sa.Column("path_key", sa.Text, nullable=False),
    sa.Column("txt_key", sa.Text, nullable=True),
    # the session's, copied: a filtered listing's page is one range of an index
    sa.Column("created_at", sa.TIMESTAMP(timezone=True), nullable=True),
    sa.Column("name", sa.Text, nullable=True),
    sa.Index("ix_session_fields_session_id_path_key", "session_id", "path_key"),
    sa.Index(
        "ix_session_fields_path_key_kind_txt_key_created_at",
        "path_key",
        "kind",
        "txt_key",
        "created_at",
        "name",
    ),
    sa.Index(
        "ix_session_fields_path_key_kind_num_created_at",
        "path_key",
        "kind",
        "num",
        "created_at",
        "name",
    ),
)


class SessionTagRow(Base):
    """``session_tags``: each distinct string of a session's ``metadata["tags"]`` (see
    migration 0011), kept by the same triggers."""

    __tablename__ = "session_tags"
    __table_args__ = (sa.Index("ix_session_tags_tag_created_at_name", "tag", "created_at", "name"),)

    session_id: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    tag: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    # the session's, copied: a filtered listing's page is one range of the index
    created_at: Mapped[datetime | None] = mapped_column(sa.TIMESTAMP(timezone=True))
    name: Mapped[str | None] = mapped_column(sa.Text)


# the orders of a listing, name the tie-break (see migration 0011)
sa.Index("ix_sessions_created_at_name", SessionRow.created_at, SessionRow.name)
sa.Index("ix_sessions_updated_at_name", SessionRow.updated_at, SessionRow.name)

sessions = cast(sa.Table, SessionRow.__table__)
messages = cast(sa.Table, MessageRow.__table__)
segments = cast(sa.Table, SegmentRow.__table__)
search_index = cast(sa.Table, SearchIndexRow.__table__)
session_fields = SESSION_FIELDS
session_tags = cast(sa.Table, SessionTagRow.__table__)
