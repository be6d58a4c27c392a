"""Adopting a database made without coda_session: what it holds made readable, every row kept.

:func:`repair_adopted` runs once, in the migration's transaction, right after
:func:`~coda_session.repository.sql.schema.adopt_unversioned` stamped such a database and
the upgrade brought it to head (``migrations/env.py`` calls both).
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ...codec import (
    check_name,
    encode_message,
    encode_metadata,
    is_timestamp,
    measure_message,
    read_metadata,
    shown_text,
)
from ...errors import InvalidMessageError, SessionError
from ...escaping import escape, escape_json
from ...models import message_record
from ...timeutil import read_timestamp, utcnow
from .registry import dialect_for

__all__ = [
    "ADOPTED_KEY_PREFIX",
    "ORPHANS_PREFIX",
    "PLACEHOLDER_ROLE",
    "repair_adopted",
]

logger = logging.getLogger("coda_session")

#: The role given to a message stored without one (its original kept in its extra keys).
PLACEHOLDER_ROLE = "unknown"
#: Extra keys (messages) and metadata keys (sessions) that keep an interpreted original:
#: ``_adopted_role``, ``_adopted_timestamp``, ``_adopted_metadata``.
ADOPTED_KEY_PREFIX = "_adopted_"
#: Messages whose session_id points nowhere go to a new session of this name + the id.
ORPHANS_PREFIX = "orphaned-"

_NOTES = sa.table(
    "adoption_notes",
    sa.column("noted_at"),
    sa.column("session_id"),
    sa.column("message_id"),
    sa.column("field"),
    sa.column("original"),
    sa.column("interpreted_as"),
)
_CORE = ("role", "timestamp")


@dataclass
class _Repair:
    conn: Connection
    now: datetime
    notes: list[dict[str, Any]] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)

    def note(
        self,
        field_: str,
        original: Any,
        interpreted_as: Any,
        *,
        session_id: str | None,
        message_id: int | None = None,
    ) -> None:
        self.notes.append(
            {
                "noted_at": self.stamp(self.now),
                "session_id": session_id,
                "message_id": message_id,
                "field": field_,
                "original": None if original is None else shown_text(original),
                "interpreted_as": None if interpreted_as is None else str(interpreted_as),
            }
        )

    def stamp(self, value: datetime) -> Any:
        """A session timestamp as the library stores it on this database."""
        return dialect_for(self.conn.dialect.name).stored_timestamp(value)


def _epoch(value: Any) -> datetime | None:
    """Seconds since 1970 (a number, or a number in text) as a UTC datetime."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, int | float) or not math.isfinite(value):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _message_time(value: Any) -> datetime | None:
    """A message timestamp's moment, when it has one (for a session's fallback times)."""
    if is_timestamp(value):
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    return _epoch(value)


def _good_role(value: Any) -> bool:
    """Whether ``add_message`` accepts ``value`` as a role as given."""
    if type(value) is not str:
        return False
    try:
        encode_message({"role": value, "content": None, "timestamp": "2000-01-01T00:00:00"})
    except InvalidMessageError:
        return False
    return True


def _extra_keys(text: Any, content_is_null: bool) -> dict[str, Any] | None:
    """The extra keys the library would read from a message's metadata, or None when it
    could not (not JSON, values it refuses, or keys that would replace role/timestamp or
    a stored content)."""
    if text is None:
        return {}
    if type(text) is not str:
        return None
    try:
        value = json.loads(text, parse_constant=_refuse)
    except (ValueError, RecursionError):
        return None
    if value is None:
        return {}
    if not isinstance(value, dict):
        value = {"metadata": value}
    if any(k in value for k in _CORE) or ("content" in value and not content_is_null):
        return None
    try:
        encode_metadata(value)
    except InvalidMessageError:
        return None
    return value


def _refuse(name: str) -> Any:
    raise ValueError(name)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _jsonable(value: Any) -> Any:
    if (
        value is None
        or isinstance(value, str | int)
        or (isinstance(value, float) and math.isfinite(value))
    ):
        return value
    return shown_text(value)


def _orphans(r: _Repair) -> dict[Any, str]:
    """Messages whose session_id points nowhere: a new session per missing id."""
    conn = r.conn
    missing = conn.exec_driver_sql(
        "SELECT m.session_id, count(*) FROM messages m LEFT JOIN sessions s "
        "ON s.id = m.session_id WHERE s.id IS NULL GROUP BY m.session_id"
    ).all()
    names = {row[0] for row in conn.exec_driver_sql("SELECT name FROM sessions")}
    tree_keys = any(c["name"] == "root_id" for c in sa.inspect(conn).get_columns("messages"))
    created: dict[Any, str] = {}
    for sid, count in missing:
        keeps_id = type(sid) is str and sid != ""
        new_id = sid if keeps_id else str(uuid.uuid4())
        base = f"{ORPHANS_PREFIX}{sid if keeps_id else 'null' if sid is None else new_id}"
        try:
            check_name(base[:255])
            base = base[:240]
        except InvalidMessageError:
            base = f"{ORPHANS_PREFIX}{new_id}"
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.add(name)
        conn.execute(
            sa.text(
                "INSERT INTO sessions (id, name, created_at, updated_at, metadata) "
                "VALUES (:id, :name, :at, :at, NULL)"
            ),
            {"id": new_id, "name": name, "at": r.stamp(r.now)},
        )
        if not keeps_id:
            where = "session_id IS NULL" if sid is None else "session_id = :old"
            conn.execute(
                sa.text(f"UPDATE messages SET session_id = :new WHERE {where}"),  # noqa: S608
                {"new": new_id, "old": sid},
            )
            if tree_keys:  # a message that had no session had no tree key either (0009)
                conn.execute(
                    sa.text("UPDATE messages SET root_id = :new WHERE session_id = :new"),
                    {"new": new_id},
                )
        r.touched.add(new_id)
        created[sid] = new_id
        r.note(
            "messages.session_id",
            sid,
            f"{count} message(s) moved into the new session {name!r} (id {new_id})",
            session_id=new_id,
        )
    return created


Fix = tuple[int, str, dict[str, Any]]


def _messages(
    r: _Repair,
) -> tuple[dict[str, tuple[datetime, datetime]], list[Fix], list[tuple[Fix, Any]]]:
    """What to change in messages: the fixes, those still needing a time (with their
    original timestamp), and each session's earliest and latest message time."""
    conn = r.conn
    spans: dict[str, tuple[datetime, datetime]] = {}
    fixes: list[Fix] = []  # (id, session, changed columns)
    untimed: list[tuple[Fix, Any]] = []
    rows = conn.exec_driver_sql(
        "SELECT id, session_id, role, content IS NULL, typeof(content), content, "
        "timestamp, metadata FROM messages"
        if dialect_for(conn.dialect.name).any_type_columns
        else "SELECT id, session_id, role, content IS NULL, NULL, NULL, timestamp, metadata "
        "FROM messages"
    )
    for mid, sid, role, content_null, kind, content, ts, meta in rows:
        moment = _message_time(ts)
        if moment is not None and sid is not None:
            first, last = spans.get(sid, (moment, moment))
            spans[sid] = (min(first, moment), max(last, moment))
        role_ok, ts_ok = _good_role(role), is_timestamp(ts)
        extra = _extra_keys(meta, bool(content_null))
        odd_content = kind in ("integer", "real") or (kind == "blob" and _utf8(content) is not None)
        if role_ok and ts_ok and extra is not None and not odd_content:
            continue
        changed: dict[str, Any] = {}
        added: dict[str, Any] = {}
        if extra is None:
            added[f"{ADOPTED_KEY_PREFIX}metadata"] = shown_text(meta)
            r.note("messages.metadata", meta, "kept as text under _adopted_metadata",
                   session_id=sid, message_id=mid)  # fmt: skip
            extra = {}
        if not role_ok:
            changed["role"] = PLACEHOLDER_ROLE
            added[f"{ADOPTED_KEY_PREFIX}role"] = _jsonable(role)
            r.note("messages.role", role, PLACEHOLDER_ROLE, session_id=sid, message_id=mid)
        if odd_content:
            text = _utf8(content) if kind == "blob" else str(content)
            changed["content"] = escape(text or "")
            r.note("messages.content", f"({kind}) {shown_text(content)}", "the same, as text",
                   session_id=sid, message_id=mid)  # fmt: skip
        if not ts_ok:
            added[f"{ADOPTED_KEY_PREFIX}timestamp"] = _jsonable(ts)
        # the upgrade (0007) left the stored values in the stored form: the originals too
        extra.update(escape_json(added))
        changed["metadata"] = _dumps(extra) if extra else None
        if ts_ok:
            fixes.append((mid, sid, changed))
        else:
            when = _epoch(ts)
            if when is not None:
                changed["timestamp"] = when.isoformat()
                r.note("messages.timestamp", ts, changed["timestamp"],
                       session_id=sid, message_id=mid)  # fmt: skip
                fixes.append((mid, sid, changed))
            else:
                untimed.append(((mid, sid, changed), ts))
    return spans, fixes, untimed


def _utf8(value: Any) -> str | None:
    if not isinstance(value, bytes):
        return None
    try:
        return value.decode()
    except UnicodeDecodeError:
        return None


def _sessions(r: _Repair, spans: dict[str, tuple[datetime, datetime]]) -> dict[str, datetime]:
    """Repair session rows; returns each session's creation time as it now stands."""
    conn = r.conn
    created_at: dict[str, datetime] = {}
    for sid, created, updated, meta in conn.exec_driver_sql(
        "SELECT id, created_at, updated_at, metadata FROM sessions"
    ).all():
        changed: dict[str, Any] = {}
        when = read_timestamp(created)
        if when is None:
            when = _epoch(created)
            how = "seconds since 1970"
            if when is None:
                span = spans.get(sid)
                when, how = (
                    (span[0], "its earliest message's timestamp")
                    if span
                    else (read_timestamp(updated) or _epoch(updated), "its updated_at")
                )
                if when is None:
                    when, how = r.now, "the adoption time"
            changed["created_at"] = r.stamp(when)
            r.note("sessions.created_at", created, f"{when.isoformat()} ({how})", session_id=sid)
        created_at[sid] = when
        if updated is not None and read_timestamp(updated) is None:
            later = _epoch(updated)
            how = "seconds since 1970"
            if later is None:
                span = spans.get(sid)
                later, how = (span[1], "its latest message's timestamp") if span else (
                    when, "its created_at")  # fmt: skip
            changed["updated_at"] = r.stamp(later)
            r.note("sessions.updated_at", updated, f"{later.isoformat()} ({how})", session_id=sid)
        if read_metadata(meta) is None or (
            meta is not None and meta != "" and not _is_object(meta)
        ):
            value = {f"{ADOPTED_KEY_PREFIX}metadata": shown_text(meta)}
            changed["metadata"] = _dumps(escape_json(value))
            r.note("sessions.metadata", meta, "kept as text under _adopted_metadata",
                   session_id=sid)  # fmt: skip
        if changed:
            sets = ", ".join(f"{k} = :{k}" for k in changed)
            conn.execute(
                sa.text(f"UPDATE sessions SET {sets} WHERE id = :sid"),  # noqa: S608
                {**changed, "sid": sid},
            )
    return created_at


def _is_object(text: Any) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, TypeError, RecursionError):
        return False


def repair_adopted(conn: Connection) -> int:
    """Make what a just-adopted database holds readable by the library, keeping every row.

    Runs in the migration's transaction, after the upgrade (the report table must exist;
    without it, nothing is done). Each interpretation is written to ``adoption_notes``
    and summed up in one WARNING on the ``coda_session`` logger (counts and ids, never
    content). Returns the number of notes.
    """
    if not sa.inspect(conn).has_table("adoption_notes"):
        return 0
    r = _Repair(conn, utcnow())
    orphaned = set(_orphans(r).values())
    spans, fixes, untimed = _messages(r)
    created_at = _sessions(r, spans)
    for (mid, sid, changed), original in untimed:
        when = created_at.get(sid, r.now)
        how = "the adoption time" if sid in orphaned else "its session's created_at"
        changed["timestamp"] = when.isoformat()
        r.note("messages.timestamp", original, f"{changed['timestamp']} ({how})",
               session_id=sid, message_id=mid)  # fmt: skip
        fixes.append((mid, sid, changed))
    for mid, sid, changed in fixes:
        sets = ", ".join(f"{k} = :{k}" for k in changed)
        conn.execute(
            sa.text(f"UPDATE messages SET {sets} WHERE id = :mid"),  # noqa: S608
            {**changed, "mid": mid},
        )
        r.touched.add(sid)
    if r.touched:
        _recount(conn, sorted(t for t in r.touched if t is not None))
    if r.notes:
        conn.execute(sa.insert(_NOTES), r.notes)
        sessions = sorted({n["session_id"] for n in r.notes if n["session_id"] is not None})
        messages = sorted({n["message_id"] for n in r.notes if n["message_id"] is not None})
        logger.warning(
            "adopted a database made without coda_session: interpreted %d value(s) in "
            "%d session(s) and %d message(s) (sessions %s; messages %s); every original "
            "is in the adoption_notes table",
            len(r.notes),
            len(sessions),
            len(messages),
            _ids(sessions),
            _ids(messages),
        )
    return len(r.notes)


def _ids(ids: list[Any]) -> str:
    shown = ", ".join(str(i) for i in ids[:20])
    return shown + (f", ... ({len(ids) - 20} more)" if len(ids) > 20 else "") if ids else "none"


def _recount(conn: Connection, session_ids: list[str]) -> None:
    """Each repaired session's messages measured again as the codec measures them (the
    repair changed roles, timestamps and extra keys after the upgrade had measured them),
    then its totals summed from them."""
    columns = {c["name"] for c in sa.inspect(conn).get_columns("messages")}
    if {"size_bytes", "char_count"} <= columns:
        read = sa.text(
            "SELECT id, role, content, timestamp, metadata, content_zlib FROM messages "
            "WHERE session_id = :sid"
        )
        write = sa.text(
            "UPDATE messages SET size_bytes = :size, char_count = :chars WHERE id = :mid"
        )
        for sid in session_ids:
            measured = []
            for mid, role, content, ts, extra, packed in conn.execute(read, {"sid": sid}):
                record = message_record(
                    role=str(role or ""),
                    content=content,
                    timestamp=str(ts or ""),
                    extra=extra,
                    size=0,
                    chars=0,
                    id=int(mid),
                    zcontent=None if packed is None else bytes(packed),
                )
                try:
                    size, chars = measure_message(record.to_dict())
                except SessionError:  # still unreadable: its reads raise, it weighs nothing
                    size, chars = 0, 0
                measured.append({"mid": mid, "size": size, "chars": chars})
            if measured:
                conn.execute(write, measured)
        total = "coalesce(sum(m.size_bytes), 0)"
    else:  # an upgrade stopped short of the size columns: count as that revision did
        dialect = dialect_for(conn.dialect.name)
        parts = " + ".join(
            f"coalesce({dialect.byte_length(f'm.{c}', text=True)}, 0)"
            for c in ("role", "content", "timestamp", "metadata")
        )
        packed = f"coalesce({dialect.byte_length('m.content_zlib', text=False)}, 0)"
        total = f"coalesce(sum({parts} + {packed}), 0)"
    newest = ""
    if "last_message_id" in {c["name"] for c in sa.inspect(conn).get_columns("sessions")}:
        newest = (
            ", last_message_id = (SELECT coalesce(max(m.id), 0) FROM messages m "
            "WHERE m.session_id = sessions.id)"
        )
    stmt = sa.text(
        "UPDATE sessions SET "  # noqa: S608 - constant column names only
        "message_count = (SELECT count(*) FROM messages m WHERE m.session_id = sessions.id), "
        f"size_bytes = (SELECT {total} FROM messages m "
        f"WHERE m.session_id = sessions.id){newest} WHERE id = :sid"
    )
    conn.execute(stmt, [{"sid": sid} for sid in session_ids])
