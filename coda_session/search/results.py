"""What a search returns: :class:`SearchResult`, its :class:`SearchHit` s, and the cursor.

The types are plain frozen values (no storage behind them), safe to keep after the
manager closes. The cursor is opaque to the caller: URL-safe base64 of a small JSON
object that pins the store's newest message id at the first page, the last hit's sort
key, and a digest of the query and filters it was made for.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidCursorError
from ..models import Message
from .query import Query
from .snippet import Snippet

__all__ = ["CURSOR_VERSION", "Cursor", "SearchHit", "SearchResult", "SessionRef", "digest"]

CURSOR_VERSION = 1
# what URL-safe base64 without padding is made of (the decoder would skip anything else)
_ALPHABET = re.compile(r"[A-Za-z0-9_-]{1,4096}")


@dataclass(frozen=True, slots=True)
class SessionRef:
    """A session that shows a hit: its name, its id, and the message's 0-based position
    in it (the index in that session's ``get_messages()``)."""

    name: str
    id: str
    position: int


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One message found.

    ``message`` is the message as ``get_messages()`` returns it (exactly as added);
    ``message_id`` its stable
    id (as ``get_messages_with_ids()`` gives it). ``session``/``session_id``/``position``
    name the session the hit is reported for: the session searched, the session of a
    ``per_session`` hit, else the oldest listed session that shows the message (where it
    was written, unless that session was deleted). ``shown_in`` lists every session
    searched that shows it, oldest created first. ``score`` is the BM25 relevance within
    the ranked window (0 when ordered by ``newest`` or for a query without a term);
    ``snippet`` is the part of the text around the matches, the matches marked.
    """

    message: Message
    message_id: int
    session: str
    session_id: str
    position: int
    shown_in: tuple[SessionRef, ...]
    score: float
    snippet: Snippet


@dataclass(frozen=True, slots=True)
class SearchResult:
    """One page of hits.

    ``total`` counts the matching messages (each once however many sessions show it),
    exactly when ``total_exact``, else "at least ``total``" (counting stops at a cap).
    ``window`` is set when there were more matches than the ranked window: only the
    newest ``window`` matching messages were ranked and paged. ``next_cursor`` gives the
    next page (None on the last); ``query`` is the query as parsed (its ``notes`` say what
    the parser did with text it could not use as written). Iterating a result iterates
    its hits.
    """

    hits: tuple[SearchHit, ...]
    total: int
    total_exact: bool
    window: int | None
    next_cursor: str | None
    query: Query

    def __iter__(self) -> Iterator[SearchHit]:
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)


def digest(parts: Any) -> str:
    """A short digest of what a cursor was made for (any JSON-serializable value)."""
    text = json.dumps(parts, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    raw = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=9).digest()
    return base64.urlsafe_b64encode(raw).decode()


@dataclass(frozen=True, slots=True)
class Cursor:
    """A page cursor's content: what it was made for, the pin, and the last sort key."""

    made_for: str
    #: the largest message id the store had at the first page: later pages see no newer
    upto_id: int
    #: the first page's time, ISO-8601 UTC (pins stores whose ids are per session)
    pinned_at: str
    #: the last hit's sort key: (score, message id, session id)
    last: tuple[float, int, str]

    def encode(self) -> str:
        body = {
            "v": CURSOR_VERSION,
            "f": self.made_for,
            "u": self.upto_id,
            "t": self.pinned_at,
            "k": list(self.last),
        }
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=True)
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: object, made_for: str) -> Cursor:
        """The cursor ``text`` (InvalidCursorError when it is malformed, of another
        version, or made for another query or other filters than ``made_for``)."""
        if type(text) is not str:
            raise InvalidCursorError(f"a cursor is a string, not {type(text).__name__}")
        if not _ALPHABET.fullmatch(text):
            raise InvalidCursorError("malformed search cursor")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            body = json.loads(raw)
            version, pinned, stamp = body["v"], body["u"], body["t"]
            score, last_id, last_session = body["k"]
            whom = body["f"]
        except (ValueError, TypeError, KeyError, binascii.Error, RecursionError):
            raise InvalidCursorError("malformed search cursor") from None
        if version != CURSOR_VERSION:
            raise InvalidCursorError(f"search cursor of another version ({version!r:.20})")
        if (
            type(pinned) is not int
            or type(stamp) is not str
            or type(score) not in (int, float)
            or type(last_id) is not int
            or type(last_session) is not str
            or type(whom) is not str
        ):
            raise InvalidCursorError("malformed search cursor")
        if whom != made_for:
            raise InvalidCursorError(
                "this cursor was made for another query, other filters or another order: "
                "pass it with the same arguments as the search that returned it"
            )
        return cls(whom, pinned, stamp, (float(score), last_id, last_session))
