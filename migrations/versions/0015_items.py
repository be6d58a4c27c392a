"""Messages stored exactly: a row's extra keys lead with the layout of its keys.

From this revision on, the library stores a message (or an item without a ``role``) exactly
as given: its ``metadata`` JSON begins with the key ``"␛"`` (no string of a caller's is
stored as that: their ``␛`` is stored as ``␛241b``, revision 0007), whose value lists the
message's keys in order (``r`` the role column, ``c`` the content, ``.`` the next key of
this JSON); an item without a role has its ``type`` in the role column; the timestamp
column holds the time the message is filed under, and no ``timestamp`` key is added to
what it returns. Rows written before have no such key and read as they always did (with
their timestamp key), so upgrading changes no row: this revision exists so that an older
library, which would show the layout as a key of the message, refuses the database
instead of misreading it.

Downgrading rewrites the rows stored exactly into the form the older code reads: the
layout key goes, a ``timestamp`` key of the message goes to (stays in) its column. What
that form cannot say is then lost for such a row: the order of its keys (role, content
and timestamp come first again), whether it had no ``content`` (it reads as ``None``),
no ``role`` (its ``type`` reads as its role) or no ``timestamp`` (it reads with the time
it was filed under), which is what the older code shows of every message.

Revision ID: 0015
Revises: 0012
Create Date: 2026-12-08
"""

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: rows rewritten in Python per page (keeps the migration's memory bounded)
PAGE = 1000
#: how the metadata of a row stored exactly begins (coda_session.models.ITEM_PREFIX)
PREFIX = '{"\u241b":"'

messages = sa.table(
    "messages",
    sa.column("id", sa.Integer),
    sa.column("metadata", sa.Text),
)


def upgrade() -> None:
    """Nothing to change: rows written before read as they did."""


def _earlier_form(text: str) -> str | None:
    """The metadata the older code reads for a row stored exactly (its strings stay in
    their stored form: they are parsed and written again, never decoded)."""
    end = text.find('"', len(PREFIX))
    rest = text[end + 1 :] if end >= 0 else ""
    if not rest or rest == "}":
        return None
    try:
        others = json.loads("{" + rest[1:])
    except ValueError:
        return text  # not the library's: left as it is
    if not isinstance(others, dict):
        return text
    others.pop("timestamp", None)  # the older code reads it from its column
    if not others:
        return None
    return json.dumps(others, ensure_ascii=False, separators=(",", ":"))


def downgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    m = messages.c
    metadata = sa.cast(m["metadata"], sa.Text)
    select = (
        sa.select(m.id, metadata)
        .where(
            # "!" as LIKE's escape character: PostgreSQL's default one is the backslash
            metadata.like(PREFIX + "%", escape="!"),
            m.id > sa.bindparam("after"),
        )
        .order_by(m.id)
        .limit(PAGE)
    )
    after = 0
    while rows := bind.execute(select, {"after": after}).all():
        for row_id, text in rows:
            earlier = _earlier_form(text)
            if earlier == text:
                continue
            value: Any = earlier
            if earlier is None:
                value = sa.null()  # an untyped NULL: a server's json column takes it
            elif not sqlite:
                # a server's json column takes a text parameter through a cast
                value = sa.cast(sa.literal(earlier, sa.Text), sa.JSON)
            bind.execute(sa.update(messages).where(m.id == row_id).values(metadata=value))
        after = int(rows[-1][0])
