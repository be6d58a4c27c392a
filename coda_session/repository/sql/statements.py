"""The SQL the repository runs, as SQLAlchemy Core, compiled once per dialect.

Every value is a bound parameter. Statements are plain module-level constructs so that
both executors (the one-trip SQLite path and the generic SQLAlchemy path) share them.
"""

from __future__ import annotations

import sqlalchemy as sa

from .tables import messages as m
from .tables import sessions as s

__all__ = [
    "COPY_MESSAGES",
    "DELETE_LOCK",
    "DELETE_MESSAGES",
    "DELETE_MESSAGES_UPTO",
    "DELETE_SESSION",
    "INSERT_MESSAGE",
    "INSERT_MESSAGE_RETURNING",
    "INSERT_SESSION",
    "LAST_MESSAGE_ID",
    "LIST_SESSIONS",
    "MESSAGES_ALL",
    "MESSAGES_LATEST",
    "MESSAGES_PAGE",
    "MESSAGES_TAIL",
    "SESSION_BY_ID",
    "SESSION_BY_NAME",
    "SESSION_LOCK",
    "SESSION_METADATA",
    "SESSION_TO_COPY",
    "SET_LAST_MESSAGE_ID",
    "SET_SESSION_TOTALS",
    "TEXT_LENGTH",
    "TRUNCATE_BOUNDARY",
    "TRUNCATE_STATS",
    "UPDATE_SESSION",
    "UPDATE_SESSION_METADATA",
    "is_constant",
]


_SESSION_COLS = (
    s.c.id,
    s.c.name,
    s.c.created_at,
    s.c.updated_at,
    s.c["metadata"],
    s.c.message_count,
    s.c.size_bytes,
)
_MESSAGE_COLS = (
    m.c.id,
    m.c.role,
    m.c.content,
    m.c.timestamp,
    m.c["metadata"],
    m.c.content_zlib,
    m.c.size_bytes,
    m.c.char_count,
)

SESSION_BY_NAME = sa.select(*_SESSION_COLS, s.c.metadata_version, s.c.last_message_id).where(
    s.c.name == sa.bindparam("name")
)
SESSION_BY_ID = sa.select(*_SESSION_COLS, s.c.metadata_version, s.c.last_message_id).where(
    s.c.id == sa.bindparam("session_id")
)
# a branch's source: held (shared) while its messages are copied, so no writer moves its
# counters in between (server databases; SQLite's write lock already does)
SESSION_TO_COPY = SESSION_BY_ID.with_for_update(read=True)
LIST_SESSIONS = sa.select(*_SESSION_COLS).order_by(s.c.created_at, s.c.name)
LAST_MESSAGE_ID = sa.select(sa.func.coalesce(sa.func.max(m.c.id), 0)).where(
    m.c.session_id == sa.bindparam("session_id")
)
# the newest messages of a session up to the newest id its row knows (a message committed
# after the row was read is not shown with the row's older counters)
MESSAGES_LATEST = (
    sa.select(*_MESSAGE_COLS)
    .where(m.c.session_id == sa.bindparam("session_id"), m.c.id <= sa.bindparam("upto_id"))
    .order_by(m.c.id.desc())
    .limit(sa.bindparam("n"))
)
MESSAGES_TAIL = (
    sa.select(*_MESSAGE_COLS)
    .where(m.c.session_id == sa.bindparam("session_id"), m.c.id <= sa.bindparam("upto_id"))
    .order_by(m.c.id.desc())
    .limit(sa.bindparam("n"))
)
MESSAGES_PAGE = (
    sa.select(*_MESSAGE_COLS)
    .where(
        m.c.session_id == sa.bindparam("session_id"),
        m.c.id > sa.bindparam("after_id"),
        m.c.id <= sa.bindparam("upto_id"),
    )
    .order_by(m.c.id)
    .limit(sa.bindparam("n"))
)
SET_SESSION_TOTALS = (
    sa.update(s)
    .where(s.c.id == sa.bindparam("session_id"))
    .values(
        updated_at=sa.bindparam("updated_at", type_=s.c.updated_at.type),
        metadata=sa.bindparam("metadata", type_=s.c["metadata"].type),
        message_count=sa.bindparam("message_count"),
        size_bytes=sa.bindparam("size_bytes"),
        last_message_id=sa.bindparam("last_id"),
    )
)
MESSAGES_ALL = (
    sa.select(*_MESSAGE_COLS)
    .where(m.c.session_id == sa.bindparam("session_id"), m.c.id <= sa.bindparam("upto_id"))
    .order_by(m.c.id)
)
_tail = (
    sa.select(m.c.char_count)
    .where(m.c.session_id == sa.bindparam("session_id"), m.c.id <= sa.bindparam("upto_id"))
    .order_by(m.c.id.desc())
    .limit(sa.bindparam("n"))
    .subquery()
)
# the characters of the newest n messages (each row carries its own count)
TEXT_LENGTH = sa.select(sa.func.coalesce(sa.func.sum(_tail.c.char_count), 0), sa.func.count())
INSERT_SESSION = sa.insert(s).values(
    id=sa.bindparam("id"),
    name=sa.bindparam("name"),
    created_at=sa.bindparam("created_at", type_=s.c.created_at.type),
    updated_at=sa.bindparam("updated_at", type_=s.c.updated_at.type),
    metadata=sa.bindparam("metadata", type_=s.c["metadata"].type),
    message_count=sa.bindparam("message_count"),
    size_bytes=sa.bindparam("size_bytes"),
)
_bump = {
    "updated_at": sa.bindparam("updated_at", type_=s.c.updated_at.type),
    "message_count": s.c.message_count + sa.bindparam("count_delta", type_=sa.BigInteger),
    "size_bytes": s.c.size_bytes + sa.bindparam("size_delta", type_=sa.BigInteger),
}
# One statement checks that the session exists, moves its counters and (as an UPDATE)
# holds the row: under READ COMMITTED it applies to, and returns, the newest committed
# version of the row, so its unchanged last_message_id is the newest id before this save.
# The metadata comes back only when its version is not the one the caller saw.
UPDATE_SESSION = (
    sa.update(s)
    .where(s.c.id == sa.bindparam("session_id"))
    .values(**_bump)
    .returning(
        s.c.message_count,
        s.c.size_bytes,
        s.c.metadata_version,
        sa.case(
            (s.c.metadata_version == sa.bindparam("seen", type_=sa.BigInteger), sa.null()),
            else_=s.c["metadata"],
        ),
        s.c.last_message_id,
    )
)
UPDATE_SESSION_METADATA = (
    sa.update(s)
    .where(s.c.id == sa.bindparam("session_id"))
    .values(
        **_bump,
        metadata=sa.bindparam("metadata", type_=s.c["metadata"].type),
        metadata_version=s.c.metadata_version + 1,
    )
    .returning(
        s.c.message_count, s.c.size_bytes, s.c.metadata_version, sa.null(), s.c.last_message_id
    )
)
SET_LAST_MESSAGE_ID = (
    sa.update(s)
    .where(s.c.id == sa.bindparam("session_id"))
    .values(last_message_id=sa.bindparam("last_id", type_=sa.BigInteger))
)
# lock the session row first on server databases (SQLite's write lock already does)
SESSION_METADATA = (
    sa.select(s.c["metadata"], s.c.metadata_version)
    .where(s.c.id == sa.bindparam("session_id"))
    .with_for_update()
)
SESSION_LOCK = (
    sa.select(s.c.metadata_version).where(s.c.id == sa.bindparam("session_id")).with_for_update()
)
INSERT_MESSAGE = sa.insert(m).values(
    session_id=sa.bindparam("session_id"),
    role=sa.bindparam("role"),
    content=sa.bindparam("content"),
    timestamp=sa.bindparam("timestamp", type_=m.c.timestamp.type),
    metadata=sa.bindparam("metadata", type_=m.c["metadata"].type),
    content_zlib=sa.bindparam("content_zlib", type_=m.c.content_zlib.type),
    size_bytes=sa.bindparam("size_bytes", type_=sa.BigInteger),
    char_count=sa.bindparam("char_count", type_=sa.BigInteger),
)
INSERT_MESSAGE_RETURNING = INSERT_MESSAGE.returning(m.c.id, sort_by_parameter_order=True)
COPY_MESSAGES = sa.insert(m).from_select(
    [
        "session_id",
        "role",
        "content",
        "timestamp",
        "metadata",
        "content_zlib",
        "size_bytes",
        "char_count",
    ],
    sa.select(
        sa.bindparam("new_id", type_=sa.Text),
        m.c.role,
        m.c.content,
        m.c.timestamp,
        m.c["metadata"],
        m.c.content_zlib,
        m.c.size_bytes,
        m.c.char_count,
    )
    .where(m.c.session_id == sa.bindparam("source_id"))
    .order_by(m.c.id),
)
# the newest message a truncation removes: the (keep+1)-th newest with id <= upto_id
TRUNCATE_BOUNDARY = (
    sa.select(m.c.id)
    .where(m.c.session_id == sa.bindparam("session_id"), m.c.id <= sa.bindparam("upto_id"))
    .order_by(m.c.id.desc())
    .limit(1)
    .offset(sa.bindparam("keep"))
)
TRUNCATE_STATS = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(m.c.size_bytes), 0)).where(
    m.c.session_id == sa.bindparam("session_id"), m.c.id <= sa.bindparam("boundary")
)
DELETE_MESSAGES_UPTO = sa.delete(m).where(
    m.c.session_id == sa.bindparam("session_id"), m.c.id <= sa.bindparam("boundary")
)
DELETE_MESSAGES = sa.delete(m).where(m.c.session_id == sa.bindparam("session_id"))
DELETE_SESSION = sa.delete(s).where(s.c.id == sa.bindparam("session_id"))
# a delete holds the session row before it removes the messages: a save that committed
# messages meanwhile is then seen (READ COMMITTED), not left to fail the foreign key
DELETE_LOCK = sa.select(s.c.id).where(s.c.id == sa.bindparam("session_id")).with_for_update()

# The compile cache of the SQLite fast path holds these and nothing else: they live as
# long as the process, so their ids are never reused. A statement built per call is not
# here, and is compiled per call.
_CONSTANTS: dict[int, object] = {
    id(value): value for name, value in list(globals().items()) if name in __all__
}


def is_constant(stmt: object) -> bool:
    """True for the module's registered constant statements (the compile cache's keys)."""
    return _CONSTANTS.get(id(stmt)) is stmt
