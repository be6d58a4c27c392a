"""PostgreSQL's own statements: what the shared ones (:mod:`.statements`) do in several
round trips, done in one. Every value is a bound parameter ($1, $2, ...)."""

# ruff: noqa: S608 - SQL built from constant fragments only; every value is a $n parameter
from __future__ import annotations

__all__ = ["APPEND", "INSERT_MESSAGES", "LOAD_BY_ID", "LOAD_BY_NAME"]

_MESSAGE_COLUMNS = (
    "session_id, role, content, timestamp, metadata, content_zlib, size_bytes, char_count"
)
_UNNEST = (
    "unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::bigint[], "
    "$8::bigint[]) WITH ORDINALITY AS r(role, content, ts, extra, packed, size, chars, ord)"
)

#: Messages of one session in one statement ($1 the session id, $2..$8 one array per
#: column), in the order given; ``ids`` ascending (the sequence runs in that order).
INSERT_MESSAGES = (
    f"WITH ins AS (INSERT INTO messages ({_MESSAGE_COLUMNS}) "
    "SELECT $1::text, r.role, r.content, r.ts, r.extra::json, r.packed, r.size, r.chars "
    f"FROM {_UNNEST} ORDER BY r.ord RETURNING id) "
    "SELECT array_agg(id ORDER BY id) FROM ins"
)

#: A plain append (new messages, no truncation, no metadata change) as ONE statement,
#: its own transaction. The session row is locked first (``cur``): after waiting for
#: the lock, READ COMMITTED gives the row's newest committed version, so its counters and
#: newest message id are current. Nothing is written when the session is gone (no row
#: comes back) or would pass $9 bytes (``fits`` is empty: the row comes back with the
#: ``upd`` columns NULL). $10 is the metadata version the caller saw.
APPEND = (
    "WITH cur AS (SELECT id, message_count, size_bytes, last_message_id FROM sessions "
    "WHERE id = $1::text FOR NO KEY UPDATE), "
    "fits AS (SELECT * FROM cur WHERE $9::bigint IS NULL OR $12::bigint <= 0 "
    "OR cur.size_bytes + $12::bigint <= $9::bigint), "
    f"ins AS (INSERT INTO messages ({_MESSAGE_COLUMNS}) "
    "SELECT fits.id, r.role, r.content, r.ts, r.extra::json, r.packed, r.size, r.chars "
    f"FROM fits, {_UNNEST} ORDER BY r.ord RETURNING id), "
    "upd AS (UPDATE sessions s SET updated_at = $11::timestamptz, "
    "message_count = fits.message_count + cardinality($2::text[]), "
    "size_bytes = fits.size_bytes + $12::bigint, "
    "last_message_id = greatest(fits.last_message_id, coalesce((SELECT max(id) FROM ins), 0)) "
    "FROM fits WHERE s.id = fits.id "
    "RETURNING s.message_count, s.size_bytes, s.metadata_version, "
    "CASE WHEN s.metadata_version = $10::bigint THEN NULL ELSE s.metadata::text END AS metadata, "
    "s.last_message_id) "
    "SELECT cur.last_message_id AS previous, cur.size_bytes AS size_before, "
    "(SELECT array_agg(id ORDER BY id) FROM ins) AS ids, upd.message_count, upd.size_bytes, "
    "upd.metadata_version, upd.metadata, upd.last_message_id FROM cur LEFT JOIN upd ON true"
)

_LOAD = (
    "SELECT s.id, s.name, s.created_at, s.updated_at, s.metadata::text, s.message_count, "
    "s.size_bytes, s.metadata_version, s.last_message_id, "
    "t.id, t.role, t.content, t.timestamp, t.metadata::text, t.content_zlib, t.size_bytes, "
    "t.char_count FROM sessions s LEFT JOIN LATERAL (SELECT * FROM messages m "
    "WHERE m.session_id = s.id AND m.id <= s.last_message_id ORDER BY m.id DESC "
    "LIMIT $2::bigint) t ON true WHERE "
)
#: A session row with its newest $2 messages (newest first), one snapshot, one trip.
LOAD_BY_NAME = _LOAD + "s.name = $1::text ORDER BY t.id DESC"
LOAD_BY_ID = _LOAD + "s.id = $1::text ORDER BY t.id DESC"
