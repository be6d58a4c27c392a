"""PostgreSQL's own statements: what the shared ones (:mod:`.statements`) do in several
round trips, done in one. Every value is a bound parameter ($1, $2, ...)."""

# ruff: noqa: S608 - SQL built from constant fragments only; every value is a $n parameter
from __future__ import annotations

__all__ = [
    "APPEND",
    "INSERT_FORK",
    "INSERT_MESSAGES",
    "LOAD_BY_ID",
    "LOAD_BY_NAME",
    "READ_ALL",
    "READ_PAGE",
    "READ_TAIL",
    "TEXT_LENGTH",
]

_MESSAGE_COLUMNS = (
    "session_id, role, content, timestamp, metadata, content_zlib, size_bytes, char_count, "
    "root_id, ord, cum_size"
)


def _last(session: str) -> str:
    """(ord, cum_size) of the session's newest row, and whether it has one, as a one-row
    relation ``lo``: its next rows continue from there (NULL after a row another program
    inserted unnumbered). Read once, ordered by (session_id, id), the index's order (a
    scan of the id index for a new session's newest row would read the whole table)."""
    newest = (
        f"SELECT x.ord, x.cum_size FROM messages x WHERE x.session_id = {session} "
        "ORDER BY x.session_id DESC, x.id DESC LIMIT 1"
    )
    return (
        f"(SELECT u.ord, u.cum, u.any FROM (SELECT n.ord, n.cum_size AS cum, true AS any "
        f"FROM ({newest}) n UNION ALL SELECT NULL::bigint, NULL::bigint, false) u "
        "ORDER BY u.any DESC LIMIT 1) lo"
    )


def _places(size: str) -> str:
    """A new row's ord and cum_size (after ``lo``, in the order ``r.ord``)."""
    return (
        "CASE WHEN lo.any AND lo.ord IS NULL THEN NULL ELSE coalesce(lo.ord, 0) + r.ord END, "
        "CASE WHEN lo.any AND lo.cum IS NULL THEN NULL ELSE coalesce(lo.cum, 0) + "
        f"sum({size}) OVER (ORDER BY r.ord) END"
    )


_UNNEST = (
    "unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::bigint[], "
    "$8::bigint[]) WITH ORDINALITY AS r(role, content, ts, extra, packed, size, chars, ord)"
)

#: Messages of one session in one statement ($1 the session id, $2..$8 one array per
#: column, $9 the tree's key), in the order given; ``ids`` ascending (the sequence runs
#: in that order).
INSERT_MESSAGES = (
    f"WITH ins AS (INSERT INTO messages ({_MESSAGE_COLUMNS}) "
    "SELECT $1::text, r.role, r.content, r.ts, r.extra::json, r.packed, r.size, r.chars, "
    f"$9::text, {_places('r.size')} "
    f"FROM {_last('$1::text')}, {_UNNEST} ORDER BY r.ord RETURNING id) "
    "SELECT array_agg(id ORDER BY id) FROM ins"
)

#: A plain append (new messages, no truncation, no metadata change) as ONE statement,
#: its own transaction. The session row is locked first (``cur``): after waiting for
#: the lock, READ COMMITTED gives the row's newest committed version, so its counters and
#: newest message id are current. Only that row: the rest of the statement (the newest
#: message row, where the new rows' places continue) reads the snapshot taken before the
#: wait, so when the locked version is not the one that snapshot sees (``stale``: another
#: writer of the session committed meanwhile) nothing is written and the caller runs the
#: statement again (appends queued on one session numbered their rows from the same
#: place). Nothing is written either when the session is gone (no row comes back) or
#: would pass $9 bytes (``fits`` is empty: the row comes back with the ``upd`` columns
#: NULL). $10 is the metadata version the caller saw, $13 the tree's key (the shard key:
#: see the README; NULL when the caller does not know it).
APPEND = (
    "WITH cur AS (SELECT id, message_count, size_bytes, last_message_id, root_id, "
    "xmin::text AS version FROM sessions "
    "WHERE id = $1::text AND root_id = coalesce($13::text, root_id) FOR NO KEY UPDATE), "
    "seen AS (SELECT cur.version IS DISTINCT FROM (SELECT v.xmin::text FROM sessions v "
    "WHERE v.id = $1::text) AS stale FROM cur), "
    "fits AS (SELECT cur.* FROM cur, seen WHERE NOT seen.stale AND ($9::bigint IS NULL "
    "OR $12::bigint <= 0 OR cur.size_bytes + $12::bigint <= $9::bigint)), "
    f"ins AS (INSERT INTO messages ({_MESSAGE_COLUMNS}) "
    "SELECT fits.id, r.role, r.content, r.ts, r.extra::json, r.packed, r.size, r.chars, "
    f"coalesce(fits.root_id, fits.id), {_places('r.size')} "
    f"FROM fits, {_last('$1::text')}, {_UNNEST} ORDER BY r.ord RETURNING id), "
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
    "upd.metadata_version, upd.metadata, upd.last_message_id, seen.stale "
    "FROM cur JOIN seen ON true LEFT JOIN upd ON true"
)

_COLS = (
    "m.id, m.role, m.content, m.timestamp, m.metadata::text AS metadata, m.content_zlib, "
    "m.size_bytes, m.char_count"
)
_T_COLS = (
    "t.id, t.role, t.content, t.timestamp, t.metadata, t.content_zlib, t.size_bytes, t.char_count"
)


_BEYOND = "4611686018427387904::bigint"
_MAX_DEPTH = "1000000"


def _own_lo(session: str, root: str) -> str:
    """Below every own row of the session: the newest id it inherits (0 for no branch),
    the larger of its own segments' newest ``hi`` and its link's bound. Bounding the own
    rows' id range there keeps a scan of the id index short for a branch with few rows
    of its own (the planner may prefer that index to the session's)."""
    return (
        "greatest((SELECT coalesce(max(o.hi), 0) FROM session_segments o "
        f"WHERE o.root_id = {root} AND o.session_id = {session}), "
        "(SELECT coalesce(CASE WHEN r.inherit_id IS NULL THEN 0 ELSE r.inherit_upto END, 0) "
        f"FROM sessions r WHERE r.id = {session}))"
    )


def _chain(session: str, floor: str = "-1") -> str:
    """The session's list and the lists it inherits (see statements.RESOLVED), as
    ``chain(sid, cut)``: UNION ends a damaged link cycle. Lists whose bound is ``floor``
    or less (all older than what the caller reads) are not walked."""
    return (
        f"chain(sid, cut) AS (SELECT {session}, {_BEYOND} UNION SELECT s.inherit_id, "
        "least(s.inherit_upto, c.cut) FROM chain c JOIN sessions s ON s.id = c.sid "
        f"WHERE s.inherit_id IS NOT NULL AND s.inherit_upto > {floor})"
    )


def _parts(session: str, upto: str, root: str) -> str:
    """A session's view as (owner_id, lo, hi) runs: its segments, resolved down its
    links, then its own rows (after ``WITH RECURSIVE`` + :func:`_chain`)."""
    return (
        "(SELECT g.owner_id, g.lo, g.hi FROM chain c JOIN session_segments g "
        f"ON g.root_id = {root} AND g.session_id = c.sid AND g.hi <= c.cut "
        f"UNION ALL SELECT {session}, {_own_lo(session, root)}, {upto}) p"
    )


def _rows(root: str) -> str:
    """The rows of one run ``p`` (every statement names the tree's key, the shard key)."""
    return (
        f"SELECT {_COLS} FROM messages m WHERE m.root_id = {root} "
        "AND m.session_id = p.owner_id AND m.id > p.lo AND m.id <= p.hi"
    )


def _tail(session: str, upto: str, n: str, root: str) -> str:
    """The newest ``n`` rows of a session's view (NULL: all), newest first. Its own rows are
    its newest: the segments are read only when they are fewer than ``n``, down its links
    only until the lists passed show ``n`` (``acc``), each run newest first, at most
    ``n``. Ordered by (session_id, id), the order of the index they read."""
    own = (
        f"SELECT {_COLS} FROM messages m WHERE m.root_id = {root} AND m.session_id = {session} "
        f"AND m.id > {_own_lo(session, root)} AND m.id <= {upto} "
        f"ORDER BY m.session_id DESC, m.id DESC LIMIT {n}"
    )
    want = f"coalesce({n}, {_BEYOND})"
    chain = (
        f"chain(sid, cut, acc, depth) AS (SELECT {session}, {_BEYOND}, "
        "(SELECT count(*) FROM own), 0 UNION ALL SELECT s.inherit_id, "
        "least(s.inherit_upto, c.cut), c.acc + (SELECT coalesce(sum(x.message_count), 0) "
        f"FROM session_segments x WHERE x.root_id = {root} AND x.session_id = c.sid "
        "AND x.hi <= c.cut)::bigint, c.depth + 1 FROM chain c JOIN sessions s ON s.id = c.sid "
        f"WHERE s.inherit_id IS NOT NULL AND c.acc < {want} AND c.depth < {_MAX_DEPTH})"
    )
    return (
        f"WITH RECURSIVE own AS ({own}), {chain} SELECT * FROM own UNION ALL "
        f"SELECT {_T_COLS} FROM chain c JOIN session_segments p ON p.root_id = {root} "
        f"AND p.session_id = c.sid AND p.hi <= c.cut CROSS JOIN LATERAL ({_rows(root)} "
        f"ORDER BY m.session_id DESC, m.id DESC LIMIT {n}) t "
        f"WHERE (SELECT count(*) FROM own) < {want} ORDER BY id DESC LIMIT {n}"
    )


def _key(n: int) -> str:
    """Parameter $n, the tree's key, or the session's (parameter $1) when it is NULL."""
    return f"coalesce(${n}::text, (SELECT r.root_id FROM sessions r WHERE r.id = $1::text))"


#: The newest $3 messages (NULL: all) of session $1 with id <= $2 (own rows; what it
#: inherits is older), newest first, in one statement (one snapshot); $4 the tree's key.
READ_TAIL = _tail("$1::text", "$2::bigint", "$3::bigint", _key(4))
#: Every message of session $1 up to $2, oldest first; $3 the tree's key.
READ_ALL = (
    f"WITH RECURSIVE {_chain('$1::text')} "
    f"SELECT {_T_COLS} FROM {_parts('$1::text', '$2::bigint', _key(3))} CROSS JOIN LATERAL "
    f"({_rows(_key(3))}) t ORDER BY t.id"
)
#: At most $4 messages of session $1 with $2 < id <= $3, oldest first; $5 the tree's key.
READ_PAGE = (
    f"WITH RECURSIVE {_chain('$1::text', '$2::bigint')} "
    f"SELECT {_T_COLS} FROM {_parts('$1::text', '$3::bigint', _key(5))} CROSS JOIN LATERAL "
    f"({_rows(_key(5))} AND m.id > $2::bigint ORDER BY m.id LIMIT $4::bigint) t "
    "ORDER BY t.id LIMIT $4::bigint"
)
#: (characters, count) of the newest $3 messages of session $1 up to $2; $4 the tree's key.
TEXT_LENGTH = (
    "SELECT coalesce(sum(x.char_count), 0), count(*) FROM ("
    + _tail("$1::text", "$2::bigint", "$3::bigint", _key(4))
    + ") x"
)

_LOAD = (
    "SELECT s.id, s.name, s.created_at, s.updated_at, s.metadata::text, s.message_count, "
    "s.size_bytes, s.metadata_version, s.last_message_id, s.root_id, s.parent_id, "
    f"s.fork_point, {_T_COLS} FROM sessions s LEFT JOIN LATERAL ("
    + _tail("s.id", "s.last_message_id", "$2::bigint", "s.root_id")
    + ") t ON true WHERE NOT s.holder AND "
)
#: A session row with its newest $2 messages (newest first), one snapshot, one trip.
LOAD_BY_NAME = _LOAD + "s.name = $1::text ORDER BY t.id DESC"
LOAD_BY_ID = _LOAD + "s.id = $1::text ORDER BY t.id DESC"

_SESSION_COLUMNS = (
    "id, name, created_at, updated_at, metadata, message_count, size_bytes, root_id, "
    "parent_id, fork_point, last_message_id, holder, inherit_id, inherit_upto, "
    "inherit_count, inherit_size"
)
#: A branch's session row ($1..$16, in ``_SESSION_COLUMNS``' order: $9 its source, $11
#: its newest id) and its own segments ($17..$21: one array each of owners, ``lo``,
#: ``hi``, counts and sizes) in one statement (the foreign keys are checked at its end,
#: when the session row is there), returning its newest $22 messages, newest first: its
#: source's up to $11, which it shows (the statement's own writes are not visible to it).
INSERT_FORK = (
    f"WITH made AS (INSERT INTO sessions ({_SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, "
    "$6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)), "
    "listed AS (INSERT INTO session_segments (root_id, session_id, owner_id, lo, hi, "
    "message_count, size_bytes) SELECT $8::text, $1::text, u.owner, u.lo, u.hi, u.n, u.size "
    "FROM unnest($17::text[], $18::bigint[], $19::bigint[], $20::bigint[], $21::bigint[]) "
    "AS u(owner, lo, hi, n, size)) "
    f"SELECT t.* FROM ({_tail('$9::text', '$11::bigint', '$22::bigint', '$8::text')}) t "
    "ORDER BY t.id DESC"
)
