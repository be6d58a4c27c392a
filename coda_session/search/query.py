"""The search query: its grammar, its parsed form, and its translations.

Any string is a valid query: :func:`parse` never raises, and what it cannot use as
written it reads as words (saying so in :attr:`Query.notes`). The translations
(:func:`to_fts5`, :func:`to_tsquery`) write every term as a quoted literal, so nothing
the user typed reaches FTS5 or PostgreSQL as syntax; :func:`matches` is the reference
semantics every backend answers with.

The grammar
-----------
A query is a list of *items* separated by whitespace; a message matches when **every**
item does.

``word``
    The terms of the word (see :mod:`coda_session.search.analysis`): one term, or for an
    identifier, a path, a CJK word or anything holding punctuation, the *phrase* of its
    terms (``get_items``, ``src/app/main.py``, ``会话``), found as written. A camel-cased
    word (``SessionManager``) is its whole, in any case (``sessionmanager`` finds it too),
    or, outside quotes, the phrase of its parts (``getItems`` finds ``get_items``). English plurals match their singular (``messages``,
    ``message``). Case and full width do not matter, nor whether an accent is written
    composed or decomposed (but ``cafe`` is not ``café``).
``"quoted phrase"``
    Its terms at consecutive positions. A quote opens a phrase at the start of an item
    only (inside a word, ``ab"c``, it separates as punctuation does); an unterminated
    quote runs to the end of the query; ``""`` is nothing.
``word*`` or ``"quoted phrase"*``
    Prefix: the last term matches any term it begins (``migrat*``).
``-item``
    Excludes the messages the item matches (``-draft``, ``-"work in progress"``). A query
    of exclusions only matches every message without them.
``item OR item``
    Either (``OR`` in capitals, between two items that are not exclusions or filters;
    ``a OR b OR c`` is any of the three).
``role:NAME``
    Only messages with that role (an item without one: its ``type``, e.g.
    ``role:function_call_output``); several ``role:`` items: any of them.
``tag:NAME``
    Only messages of sessions tagged ``NAME`` (in the session metadata's ``tags`` list);
    several: all of them.
``session:NAME``
    Only messages shown in the session named ``NAME``; several: any of them.
``after:DATE``, ``before:DATE``
    Only messages stamped at or after ``DATE`` (``after:``) or strictly before it
    (``before:``); ISO 8601 dates or date-times (``2024-05-01``,
    ``2024-05-01T12:30:00+02:00``), UTC when no offset is given; a year (``2024``) or a
    month (``2024-05``) is its first day (so ``before:2025`` ends with 2024). Several:
    all hold.

A filter's name is read in any case (``Role:user``); its value may be quoted
(``tag:"client x"``). Everything else is words: ``AND``, ``NOT``, ``NEAR``, a lone or
dangling ``OR``, brackets, ``^``, ``col:x`` (the phrase ``col x``), a filter with an empty
or invalid value (``after:someday`` is the phrase ``after someday``), an excluded filter
(``-role:user`` excludes the phrase ``role user``). An item that gives no term at all
(``*``, ``-``, ``()``, a lone punctuation mark) is dropped. A query with no positive item
has no terms (:attr:`Query.has_terms` is false): it matches by its filters and exclusions
alone. Only the first :data:`MAX_ITEMS` (100) items of a query are used.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .analysis import query_parts, query_terms

__all__ = ["MAX_ITEMS", "Phrase", "Query", "matches", "parse", "to_fts5", "to_tsquery"]


@dataclass(frozen=True, slots=True)
class Phrase:
    """Index terms that must occur at consecutive positions; with ``prefix``, the last one
    matches any term it begins."""

    terms: tuple[str, ...]
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed query: every group must match (a group matches when any of its phrases
    does), no excluded phrase may match, and the filters hold.

    ``roles`` and ``sessions``: any of them; ``tags``: all of them; ``after`` (inclusive)
    and ``before`` (exclusive): timezone-aware. :func:`matches` evaluates the terms only;
    the filters are the caller's to apply.
    """

    groups: tuple[tuple[Phrase, ...], ...] = ()
    excluded: tuple[Phrase, ...] = ()
    roles: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    sessions: tuple[str, ...] = ()
    after: datetime | None = None
    before: datetime | None = None
    #: what the parser did with parts of the text it could not use as written (for a
    #: result to show; never an error)
    notes: tuple[str, ...] = field(default=())

    @property
    def has_terms(self) -> bool:
        """True when some positive term must match (else: the newest messages match)."""
        return bool(self.groups)


# ---------------------------------------------------------------------------------------
# Parsing

_FILTERS = ("role", "tag", "session", "after", "before")
#: A query's items beyond this many are ignored (a note says so): no one types more, and
#: it bounds what a query costs the engines.
MAX_ITEMS = 100

_OPERATORS = {
    "AND": "'AND' is read as a word (all words must match anyway)",
    "NOT": "'NOT' is read as a word (-word excludes a word)",
    "NEAR": "'NEAR' is read as a word",
}
_MAX_NOTES = 10
_FILTER = re.compile(r"(role|tag|session|after|before):", re.IGNORECASE)


@dataclass(slots=True)
class _Item:
    raw: str  # as typed, for notes
    text: str  # the words (a quoted phrase without its quotes)
    quoted: bool = False
    negated: bool = False
    prefix: bool = False
    filter: str | None = None  # the filter's name, lower case; ``text`` is its value


_SPACE = re.compile(r"\s*")
_NOT_SPACE = re.compile(r"\S*")


def _scan(text: str) -> list[_Item]:
    """The query's items, at most MAX_ITEMS + 1 of them."""
    items: list[_Item] = []
    n = len(text)
    i = _skip(_SPACE, text, 0)
    while i < n and len(items) <= MAX_ITEMS:
        start = i
        negated = text[i] == "-" and i + 1 < n and not text[i + 1].isspace()
        if negated:
            i += 1
        name: str | None = None
        found = _FILTER.match(text, i)
        if found is not None:
            name = found.group(1).lower()
            i = found.end()
        if i < n and text[i] == '"':
            close = text.find('"', i + 1)
            end = n if close < 0 else close
            value = text[i + 1 : end]
            i = min(n, end + 1)
            prefix = i < n and text[i] == "*"
            while i < n and text[i] == "*":
                i += 1
            items.append(_Item(text[start:i], value, True, negated, prefix, name))
        else:
            end = _skip(_NOT_SPACE, text, i)
            word = text[i:end]
            # a filter's value is taken whole; a word's trailing stars make it a prefix
            stripped = word if name is not None else word.rstrip("*")
            prefix = len(stripped) < len(word)
            items.append(_Item(text[start:end], stripped, False, negated, prefix, name))
            i = end
        i = _skip(_SPACE, text, i)
    return items


def _skip(pattern: re.Pattern[str], text: str, at: int) -> int:
    found = pattern.match(text, at)
    return at if found is None else found.end()


def _shown(raw: str) -> str:
    return repr(raw if len(raw) <= 40 else raw[:39] + "…")


_YEAR_OR_MONTH = re.compile(r"(\d{4})(?:-(\d{2}))?", re.ASCII)


def _date(value: str) -> datetime | None:
    value = value.strip()
    partial = _YEAR_OR_MONTH.fullmatch(value)
    if partial is not None:  # a year or a month: its first day
        value = f"{partial.group(1)}-{partial.group(2) or '01'}-01"
    try:
        moment = datetime.fromisoformat(value)
    except (ValueError, OverflowError):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(slots=True)
class _Parsed:
    roles: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)
    after: datetime | None = None
    before: datetime | None = None
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.notes) < _MAX_NOTES and text not in self.notes:
            self.notes.append(text)

    def add_filter(self, name: str, value: str) -> bool:
        """Apply one filter; False when its value is unusable."""
        value = value.strip()
        if not value:
            return False
        if name in ("after", "before"):
            moment = _date(value)
            if moment is None:
                return False
            if name == "after":
                self.after = moment if self.after is None else max(self.after, moment)
            else:
                self.before = moment if self.before is None else min(self.before, moment)
            return True
        values = {"role": self.roles, "tag": self.tags, "session": self.sessions}[name]
        if value not in values:
            values.append(value)
        return True


def parse(text: str) -> Query:
    """The query ``text`` parsed by the grammar above; never raises for a ``str``."""
    if not isinstance(text, str):
        raise TypeError(f"a search query is a str, not {type(text).__name__}")
    state = _Parsed()
    # each entry: phrases that are alternatives (positive or excluded), or the marker "OR"
    entries: list[tuple[tuple[Phrase, ...], bool] | str] = []
    items = _scan(text)
    if len(items) > MAX_ITEMS:
        del items[MAX_ITEMS:]
        state.note(f"only the first {MAX_ITEMS} items of the query are used")
    for item in items:
        words = item.text
        if item.text in _OPERATORS and not item.quoted:
            state.note(_OPERATORS[item.text])
        if item.filter is not None:
            if item.negated:
                state.note(f"{_shown(item.raw)}: a filter cannot be excluded; read as words")
                words = f"{item.filter} {item.text}"
            elif state.add_filter(item.filter, item.text):
                continue
            else:
                state.note(f"{_shown(item.raw)}: not a usable filter; read as words")
                words = f"{item.filter} {item.text}"
        elif item.text == "OR" and not item.quoted and not item.negated and not item.prefix:
            entries.append("OR")
            continue
        found = query_terms(words)
        if not found:
            state.note(f"{_shown(item.raw)} gives no search term; ignored")
            continue
        phrases = [Phrase(tuple(found), item.prefix)]
        if not item.quoted:
            # a camelCase word is itself or the phrase of its parts (getItems, get_items)
            parts = query_parts(words)
            if parts != found:
                phrases.append(Phrase(tuple(parts), item.prefix))
        entries.append((tuple(phrases), item.negated))
    groups: list[list[Phrase]] = []
    excluded: list[Phrase] = []
    joining = False  # the previous entry was a valid OR
    for index, entry in enumerate(entries):
        if entry == "OR":
            before = entries[index - 1] if index else None
            after = entries[index + 1] if index + 1 < len(entries) else None
            if (
                not joining
                and isinstance(before, tuple)
                and not before[1]
                and isinstance(after, tuple)
                and not after[1]
            ):
                joining = True
                continue
            state.note("'OR' is not between two items; read as a word")
            entry = ((Phrase(("or",)),), False)
        assert isinstance(entry, tuple)
        alternatives, negated = entry
        if negated:
            excluded.extend(alternatives)
        elif joining:
            groups[-1].extend(alternatives)
        else:
            groups.append(list(alternatives))
        joining = False
    return Query(
        groups=tuple(tuple(group) for group in groups),
        excluded=tuple(excluded),
        roles=tuple(state.roles),
        tags=tuple(state.tags),
        sessions=tuple(state.sessions),
        after=state.after,
        before=state.before,
        notes=tuple(state.notes),
    )


# ---------------------------------------------------------------------------------------
# The reference semantics


def _phrase_at(phrase: Phrase, doc: Sequence[str]) -> bool:
    words = phrase.terms
    last = len(words) - 1
    first = words[0]
    if last == 0:
        if phrase.prefix:
            return any(term.startswith(first) for term in doc)
        return first in doc
    size = len(doc)
    for start in range(size - last):
        if doc[start] != first:
            continue
        for offset in range(1, last):
            if doc[start + offset] != words[offset]:
                break
        else:
            end = doc[start + last]
            if end == words[last] or (phrase.prefix and end.startswith(words[last])):
                return True
    return False


def matches(q: Query, doc_terms: Sequence[str]) -> bool:
    """Whether a message with these index terms matches the query's terms (a phrase: its
    terms at consecutive positions, the last one a prefix when ``prefix``). The filters
    (roles, tags, sessions, dates) are not looked at."""
    return all(any(_phrase_at(p, doc_terms) for p in group) for group in q.groups) and not any(
        _phrase_at(p, doc_terms) for p in q.excluded
    )


# ---------------------------------------------------------------------------------------
# Translations


def _fts5_phrase(phrase: Phrase) -> str:
    body = " + ".join('"' + term.replace('"', '""') + '"' for term in phrase.terms)
    return "body : " + (body + " *" if phrase.prefix else body)


def to_fts5(q: Query) -> str | None:
    """An FTS5 ``MATCH`` expression for the query's terms, on the column ``body``, every
    term a double-quoted string; None when the query has no positive term."""
    if not q.groups:
        return None
    positive = " AND ".join(
        "(" + " OR ".join(_fts5_phrase(p) for p in group) + ")" for group in q.groups
    )
    if not q.excluded:
        return positive
    return f"({positive}) NOT (" + " OR ".join(_fts5_phrase(p) for p in q.excluded) + ")"


def _lexeme(term: str) -> str:
    return "'" + term.replace("\\", "\\\\").replace("'", "''") + "'"


def _ts_phrase(phrase: Phrase, positions: bool = True) -> str:
    body = (" <-> " if positions else " & ").join(_lexeme(term) for term in phrase.terms)
    return "(" + (body + ":*" if phrase.prefix else body) + ")"


def to_tsquery(q: Query, *, positions: bool = True) -> str | None:
    """A PostgreSQL ``tsquery`` literal for the query's terms (for ``CAST(:q AS tsquery)``),
    every lexeme single-quoted and escaped; None when the query has no positive term.

    A ``tsvector`` keeps at most 256 positions of a lexeme and none beyond 16383, so on a
    message with more terms than that a phrase (``<->``) can miss. With ``positions=False``
    the literal is a superset for those rows: a phrase is the AND of its terms, and an
    excluded phrase of several terms is left out (one term's presence is exact at any
    length); the caller keeps the rows :func:`matches` accepts. Both literals agree with
    :func:`matches` on a message of at most 256 terms.
    """
    if not q.groups:
        return None
    parts = ["(" + " | ".join(_ts_phrase(p, positions) for p in group) + ")" for group in q.groups]
    parts.extend(
        "!" + _ts_phrase(p, positions) for p in q.excluded if positions or len(p.terms) == 1
    )
    return " & ".join(parts)
