"""Sessions are filtered by metadata and tags, and paged, in one indexed query.

* ``session_fields``: one row per value in each session's metadata, reached through
  mappings and lists at most :data:`DEPTH` levels down, with its ``path`` (each mapping
  key written as its length, ``:`` and the key; each list index as ``[i]``: an encoding
  no two paths share), its ``kind`` (``s`` string, ``n`` number, ``t`` true, ``f``
  false, ``z`` null, ``o`` mapping, ``a`` list) and its value: ``txt`` for a string,
  ``num`` for a number, the number of keys or items for a mapping or list. A metadata
  filter becomes lookups of (path, kind, value) in its indexes.
* ``session_tags``: one row per distinct string in each session's ``metadata["tags"]``
  list, indexed by tag.
* Both carry their session's ``created_at`` and ``name`` (copied, kept in step), and are
  indexed by value, then ``(created_at, name)``: a filtered listing in the default order
  reads its page straight from one index range, however rare or common the value.
* Both are kept in step by triggers on ``sessions`` (insert, update of ``metadata``,
  ``name`` or ``created_at``, delete), so the metadata another program writes is filtered as the library's own, and
  the stored metadata stays byte for byte what the caller saved: the tables are derived
  from it, never the other way round. Metadata that is not a JSON object gives no row.
* ``ix_sessions_created_at_name`` and ``ix_sessions_updated_at_name``: the orders of a
  listing (with the name as the tie-break), for keyset paging.

The upgrade fills both tables from what is stored, in one statement each. Downgrading
drops the triggers, the tables and the indexes; no stored value changes either way.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

import itertools
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: how many levels of mappings and lists a metadata filter reaches (the same on every backend)
DEPTH = 8
#: the characters of a path and of a string that the indexes hold (``path_key``,
#: ``txt_key``): a PostgreSQL index entry must stay under 2,704 bytes; a lookup also
#: compares the whole ``path`` and ``txt``
KEY_CHARS = 200
#: on PostgreSQL, a number whose numeric takes more bytes (about 400 significant digits)
#: is stored without ``num`` (no filter finds it): it could need an index entry larger
#: than a page (SQLite's numbers are 64-bit integers and doubles, 8 bytes at most)
NUMBER_BYTES = 200

_TRIGGERS = (
    "coda_session_fields_insert",
    "coda_session_fields_update",
    "coda_session_fields_delete",
)


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table(
        "session_fields",
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("num", sa.Numeric(), nullable=True),
        sa.Column("txt", sa.Text(), nullable=True),
        sa.Column("path_key", sa.Text(), nullable=False),
        sa.Column("txt_key", sa.Text(), nullable=True),
        sa.Column("created_at", sa.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
    )
    op.create_index(
        "ix_session_fields_session_id_path_key", "session_fields", ["session_id", "path_key"]
    )
    op.create_index(
        "ix_session_fields_path_key_kind_txt_key_created_at",
        "session_fields",
        ["path_key", "kind", "txt_key", "created_at", "name"],
    )
    op.create_index(
        "ix_session_fields_path_key_kind_num_created_at",
        "session_fields",
        ["path_key", "kind", "num", "created_at", "name"],
    )
    op.create_table(
        "session_tags",
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("tag", sa.Text(), nullable=False),
        sa.Column("created_at", sa.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("session_id", "tag", name="pk_session_tags"),
    )
    op.create_index(
        "ix_session_tags_tag_created_at_name", "session_tags", ["tag", "created_at", "name"]
    )
    op.create_index("ix_sessions_created_at_name", "sessions", ["created_at", "name"])
    op.create_index("ix_sessions_updated_at_name", "sessions", ["updated_at", "name"])
    if bind.dialect.name == "postgresql":
        _postgresql()
    else:
        _sqlite()


# --- SQLite: json_each chained DEPTH times (a trigger may not hold a recursive CTE) ---

_SQLITE_KIND = (
    "CASE {e}.type WHEN 'text' THEN 's' WHEN 'integer' THEN 'n' WHEN 'real' THEN 'n' "
    "WHEN 'true' THEN 't' WHEN 'false' THEN 'f' WHEN 'null' THEN 'z' "
    "WHEN 'object' THEN 'o' ELSE 'a' END"
)
_SQLITE_NUM = (
    "CASE WHEN {e}.type IN ('integer', 'real') THEN {e}.atom "
    "WHEN {e}.type = 'array' THEN json_array_length({e}.value) "
    "WHEN {e}.type = 'object' THEN (SELECT count(*) FROM json_each({e}.value)) END"
)
_SQLITE_SEGMENT = (
    "(CASE WHEN typeof({e}.key) = 'integer' THEN '[' || {e}.key || ']' "
    "ELSE length({e}.key) || ':' || {e}.key END)"
)


def _sqlite_doc(row: str) -> str:
    """The metadata of ``row`` when it is a JSON object, else an empty one (json_each
    would raise on text that is no JSON)."""
    return (
        f"CASE WHEN json_valid({row}.metadata) AND json_type({row}.metadata) = 'object' "
        f"THEN {row}.metadata ELSE '{{}}' END"
    )


def _sqlite_level(depth: int, row: str, source: tuple[str, ...]) -> str:
    """The SELECT of every value ``depth`` levels down in the metadata of ``row``."""
    names = [f"e{i}" for i in range(1, depth + 1)]
    sources = [*source, f"json_each({_sqlite_doc(row)}) e1"]
    sources += [f"json_each({p}.value) {e}" for p, e in itertools.pairwise(names)]
    where = [f"{p}.type IN ('object', 'array')" for p in names[:-1]]
    last = names[-1]
    path = " || ".join(_SQLITE_SEGMENT.format(e=e) for e in names)
    select = (
        f"SELECT {row}.id AS session_id, {path} AS path, "  # noqa: S608 - constant
        f"{_SQLITE_KIND.format(e=last)} AS kind, {_SQLITE_NUM.format(e=last)} AS num, "
        f"CASE WHEN {last}.type = 'text' THEN {last}.atom END AS txt "
        f"FROM {', '.join(sources)}"
    )
    return select + (f" WHERE {' AND '.join(where)}" if where else "")


def _sqlite_fill(row: str, source: tuple[str, ...] = ()) -> list[str]:
    """The INSERTs of the rows of ``row`` (NEW in a trigger; every session of
    ``source`` in the upgrade)."""
    levels = " UNION ALL ".join(_sqlite_level(d, row, source) for d in range(1, DEPTH + 1))
    doc = _sqlite_doc(row)
    tags = (
        f"CASE WHEN json_type({doc}, '$.tags') = 'array' THEN json_extract({doc}, '$.tags') "
        "ELSE '[]' END"
    )
    return [
        "INSERT INTO session_fields (session_id, path, kind, num, txt, path_key, txt_key, "  # noqa: S608
        f"created_at, name) SELECT v.*, substr(v.path, 1, {KEY_CHARS}), "
        f"substr(v.txt, 1, {KEY_CHARS}), {row}.created_at, {row}.name "
        f"FROM ({levels}) v{', sessions ' + row + ' WHERE ' + row + '.id = v.session_id' if source else ''}",
        f"INSERT INTO session_tags (session_id, tag, created_at, name) "  # noqa: S608
        f"SELECT DISTINCT {row}.id, t.atom, {row}.created_at, {row}.name "
        f"FROM {', '.join([*source, f'json_each({tags}) t'])} WHERE t.type = 'text'",
    ]


def _sqlite() -> None:
    fill = " ".join(s + ";" for s in _sqlite_fill("NEW"))
    clear = (
        "DELETE FROM session_fields WHERE session_id = OLD.id; "
        "DELETE FROM session_tags WHERE session_id = OLD.id;"
    )
    op.execute(
        f"CREATE TRIGGER coda_session_fields_insert AFTER INSERT ON sessions BEGIN {fill} END"
    )
    op.execute(
        "CREATE TRIGGER coda_session_fields_update AFTER UPDATE OF id, name, created_at, "
        "metadata ON sessions WHEN NEW.metadata IS NOT OLD.metadata OR NEW.id IS NOT OLD.id "
        "OR NEW.name IS NOT OLD.name OR NEW.created_at IS NOT OLD.created_at "
        f"BEGIN {clear} {fill} END"
    )
    op.execute(
        f"CREATE TRIGGER coda_session_fields_delete AFTER DELETE ON sessions BEGIN {clear} END"
    )
    # the rows already stored, in bulk: the same SELECTs over every session
    for statement in _sqlite_fill("x", ("sessions x",)):
        op.execute(statement)


# --- PostgreSQL: a recursive query over jsonb, in a plpgsql trigger function ---

_PG_CHILDREN = """
CREATE FUNCTION coda_json_children(v jsonb) RETURNS TABLE(seg text, child jsonb)
LANGUAGE sql IMMUTABLE ROWS 8 AS $$
    SELECT length(k.key) || ':' || k.key, k.value
    FROM jsonb_each(CASE WHEN jsonb_typeof(v) = 'object' THEN v ELSE '{}'::jsonb END) k
    UNION ALL
    SELECT '[' || (a.i - 1) || ']', a.value
    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(v) = 'array' THEN v ELSE '[]'::jsonb END)
        WITH ORDINALITY a(value, i)
$$
"""

_PG_NUMERIC = f"""
CREATE FUNCTION coda_json_numeric(t text) RETURNS numeric LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    n numeric;
BEGIN
    n := CAST(t AS numeric);
    IF pg_column_size(n) > {NUMBER_BYTES} THEN
        RETURN NULL;
    END IF;
    RETURN n;
EXCEPTION WHEN others THEN
    RETURN NULL;  -- past numeric's range (1e200000): filtered as no number
END $$
"""

_PG_INDEX = f"""
CREATE FUNCTION coda_index_session_metadata(
    sid text, meta text, created timestamptz, sname text
) RETURNS void
-- no JIT: the recursive query's estimate (a thousand-fold the few rows metadata has)
-- made every call JIT-compile it, over a second per metadata write
LANGUAGE plpgsql SET jit = off AS $$
DECLARE
    doc jsonb;
BEGIN
    BEGIN
        doc := CAST(meta AS jsonb);
    EXCEPTION WHEN others THEN
        -- text jsonb refuses (a \\u0000 another program wrote): filtered as no metadata
        doc := NULL;
    END;
    IF jsonb_typeof(doc) IS DISTINCT FROM 'object' THEN
        RETURN;
    END IF;
    INSERT INTO session_fields
        (session_id, path, kind, num, txt, path_key, txt_key, created_at, name)
    WITH RECURSIVE w(path, v, depth) AS (
        SELECT c.seg, c.child, 1 FROM coda_json_children(doc) c
        UNION ALL
        SELECT w.path || c.seg, c.child, w.depth + 1
        FROM w, coda_json_children(w.v) c WHERE w.depth < {DEPTH}
    )
    SELECT sid, w.path,
        CASE jsonb_typeof(w.v) WHEN 'string' THEN 's' WHEN 'number' THEN 'n'
            WHEN 'boolean' THEN CASE WHEN w.v = 'true'::jsonb THEN 't' ELSE 'f' END
            WHEN 'null' THEN 'z' WHEN 'object' THEN 'o' ELSE 'a' END,
        CASE jsonb_typeof(w.v)
            WHEN 'number' THEN coda_json_numeric(w.v #>> '{{}}')
            WHEN 'array' THEN jsonb_array_length(w.v)
            WHEN 'object' THEN (SELECT count(*) FROM jsonb_object_keys(w.v)) END,
        CASE WHEN jsonb_typeof(w.v) = 'string' THEN w.v #>> '{{}}' END,
        substr(w.path, 1, {KEY_CHARS}),
        CASE WHEN jsonb_typeof(w.v) = 'string' THEN substr(w.v #>> '{{}}', 1, {KEY_CHARS}) END,
        created, sname
    FROM w;
    INSERT INTO session_tags (session_id, tag, created_at, name)
    SELECT DISTINCT sid, t.value #>> '{{}}', created, sname
    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(doc -> 'tags') = 'array'
        THEN doc -> 'tags' ELSE '[]'::jsonb END) t
    WHERE jsonb_typeof(t.value) = 'string';
END $$
"""  # noqa: S608 - constant text

_PG_TRIGGER = """
CREATE FUNCTION coda_session_fields() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        DELETE FROM session_fields WHERE session_id = OLD.id;
        DELETE FROM session_tags WHERE session_id = OLD.id;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    PERFORM coda_index_session_metadata(
        NEW.id, CAST(NEW.metadata AS text), NEW.created_at, NEW.name);
    RETURN NEW;
END $$
"""


def _postgresql() -> None:
    op.execute(_PG_CHILDREN)
    op.execute(_PG_NUMERIC)
    op.execute(_PG_INDEX)
    op.execute(_PG_TRIGGER)
    op.execute(
        "CREATE TRIGGER coda_session_fields_insert AFTER INSERT ON sessions FOR EACH ROW "
        "EXECUTE FUNCTION coda_session_fields()"
    )
    op.execute(
        "CREATE TRIGGER coda_session_fields_update AFTER UPDATE OF id, name, created_at, "
        "metadata ON sessions FOR EACH ROW WHEN (CAST(NEW.metadata AS text) IS DISTINCT FROM "
        "CAST(OLD.metadata AS text) OR NEW.id IS DISTINCT FROM OLD.id OR NEW.name IS "
        "DISTINCT FROM OLD.name OR NEW.created_at IS DISTINCT FROM OLD.created_at) "
        "EXECUTE FUNCTION coda_session_fields()"
    )
    op.execute(
        "CREATE TRIGGER coda_session_fields_delete AFTER DELETE ON sessions FOR EACH ROW "
        "EXECUTE FUNCTION coda_session_fields()"
    )
    # the rows already stored, session by session inside one statement
    op.execute(
        "SELECT coda_index_session_metadata(id, CAST(metadata AS text), created_at, name) "
        "FROM sessions"
    )


def downgrade() -> None:
    bind = op.get_bind()
    postgresql = bind.dialect.name == "postgresql"
    for name in _TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}{' ON sessions' if postgresql else ''}")
    if postgresql:
        op.execute("DROP FUNCTION IF EXISTS coda_session_fields()")
        op.execute(
            "DROP FUNCTION IF EXISTS coda_index_session_metadata(text, text, timestamptz, text)"
        )
        op.execute("DROP FUNCTION IF EXISTS coda_json_children(jsonb)")
        op.execute("DROP FUNCTION IF EXISTS coda_json_numeric(text)")
    op.drop_index("ix_sessions_updated_at_name", table_name="sessions")
    op.drop_index("ix_sessions_created_at_name", table_name="sessions")
    op.drop_index("ix_session_tags_tag_created_at_name", table_name="session_tags")
    op.drop_table("session_tags")
    op.drop_index("ix_session_fields_path_key_kind_num_created_at", table_name="session_fields")
    op.drop_index("ix_session_fields_path_key_kind_txt_key_created_at", table_name="session_fields")
    op.drop_index("ix_session_fields_session_id_path_key", table_name="session_fields")
    op.drop_table("session_fields")
