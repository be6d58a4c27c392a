"""What a message's searchable text is, and the index terms it gives.

Every backend finds the same messages because the terms are computed here, in Python,
and the databases only store and look them up (SQLite's FTS5 table with the ``ascii``
tokenizer, PostgreSQL's ``tsvector``), while the memory backend and custom storage match
the same terms in Python. The query side (:mod:`coda_session.search.query`) analyses the
words of a query with the same rules, so what a user types is found as it was written.

The searchable text (:func:`message_text`)
-------------------------------------------
The string leaves of a message: a string content; in a structured content (a list of
parts, a dict) every string in it — text parts, tool-call arguments, tool output; and the
string leaves of the message's other keys (``tool_calls[].function.arguments``, ``name``,
...), in the order the message holds them, joined with ``"\\n"``. Not text: ``role`` and
``timestamp`` (filters), ``metadata`` (filtered, never searched), dict keys, numbers and
booleans, the values under the keys ``type``, ``id``, ``call_id`` and ``tool_call_id``
(at any depth), and inline binary data (a ``data:...;base64,`` URL, or the ``data`` of a
``{"type": "base64", ...}`` source, as image parts carry them). So an item without
``role`` or ``content`` is searched by its text too: a ``function_call``'s ``name`` and
``arguments``, a ``function_call_output``'s ``output``, a ``reasoning`` item's summary
texts.

The index terms (:func:`terms`)
-------------------------------
1. **Words.** A word is a maximal run of letters, digits and combining marks (Unicode
   categories L, N, M; Han, kana and Hangul excepted, see 3). Everything else separates
   words: whitespace, punctuation (``_``, ``.``, ``/``, ``-``, ``:``, quotes, ...), ASCII
   symbols (``+ $ < = > ^ ` | ~``), NUL and the other control and format characters, and
   a combining mark that follows no word (as the variation selector of an emoji). So
   ``get_items`` gives ``get``, ``item`` (see 7); ``src/app/main.py`` gives ``src``, ``app``,
   ``main``, ``py``; ``sqlite3.OperationalError`` gives ``sqlite3``, ``operational``,
   ``error``; and written in a query, each is the phrase of those terms: found as written.
2. **Identifier parts.** A word splits where its case turns from lower (or a digit) to
   upper, and before the last capital of a run of capitals followed by a lower-case letter:
   ``SessionManager`` gives ``session``, ``manager``; ``HTTPServer`` gives ``http``,
   ``server``; ``utf8Decoder`` gives ``utf8``, ``decoder``; ``IPv6`` gives ``i``,
   ``pv6``. A word without such a turn is kept whole: ``sqlite3``, ``E501``, ``ERR`` (and
   ``ERR_CONNECTION_REFUSED`` is the phrase ``err connection refused``). A split word
   keeps its place as its whole (``sessionmanager``; ``github`` for ``GitHub``, ``ipv6``
   for ``IPv6``), and its parts are indexed too, after all the message's other terms: so
   ``SessionManager`` is found by ``session`` or ``manager`` alone, by
   ``sessionmanager`` and ``SessionManager`` (a query's words give their wholes only:
   :func:`query_terms`), and inside a quoted phrase as written in any case (``"sqlite
   reports"`` finds "SQLite reports"). One word's parts follow each other, so the quoted
   phrase of its parts (``"session manager"``) finds it too; parts of several such words
   sit together at the end, so a quoted phrase of parts may match parts of words that are
   apart in the text.
3. **Chinese, Japanese, Korean.** A run of Han, Hiragana, Katakana or Hangul characters
   gives its overlapping bigrams (``会话管理`` gives ``会话``, ``话管``, ``管理``); a lone
   such character gives itself. A word of two or more characters typed in a query is the
   phrase of its bigrams, so it is found anywhere inside a sentence, with no dictionary.
4. **Symbols.** Every non-ASCII symbol character (Unicode category S: emoji, ``␛``,
   ``→``, ``€``, ...), every private-use and every unassigned character is a term of its
   own; it never joins the letters around it.
5. **Lone surrogates** (from bytes decoded with ``surrogateescape``) are terms of their
   own, written ``␛`` + four hex digits (``␛dc80``): ASCII-safe, and no text can produce
   them otherwise, since ``␛`` is a symbol and never joins the letters after it.
6. **Normalisation.** A word is NFKC-normalised (full-width letters and digits are the
   ASCII ones, a decomposed ``é`` the composed one; NFC instead when NFKC would turn it into
   something that is not a word, as ``⑴`` would become ``(1)``) and case-folded
   (``Straße`` is ``strasse``); Han, kana and Hangul are kept as they are, symbols are
   case-folded.
7. **English plurals.** An ASCII word of three or more letters loses a plural ``s`` (the
   S-stemmer): ``-ies`` becomes ``-y`` (not after ``a`` or ``e``), ``-es`` becomes ``-e``
   (kept whole after ``a``, ``e``, ``i``, ``o``), ``-s`` is dropped, except after ``s``,
   ``u`` or ``i`` (``class``, ``status``, ``analysis`` are kept). ``messages`` and
   ``message``, ``queries`` and ``query`` are the same term; applied alike to the text
   and the query (a prefix too: ``queries*`` is ``query*``).
8. **Length.** A term longer than :data:`MAX_TERM_LENGTH` characters (100) is cut to its
   first 100.

Terms therefore never hold whitespace, ASCII punctuation, a control character or a
surrogate: the FTS5 ``ascii`` tokenizer (which treats every non-ASCII character as part of a
token) reads :func:`index_body` back as exactly these terms, and a ``tsvector`` can hold
each as a quoted lexeme. The Unicode data is Python's (:mod:`unicodedata`), except the set
of combining marks, frozen here at Unicode 14 so that the terms do not change with the
Python version; a character new to Unicode may be classed differently by a later Python,
which ``rebuild_search_index()`` settles. :data:`INDEX_VERSION` changes whenever these
rules do, so stored indexes built with other rules are rebuilt.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from ..escaping import ESCAPE
from ..models import PLAIN_ITEM, MessageRecord

__all__ = [
    "INDEX_VERSION",
    "MAX_TERM_LENGTH",
    "index_body",
    "message_text",
    "query_parts",
    "query_terms",
    "record_text",
    "term_spans",
    "terms",
]

#: The version of the rules below; stored with every SQL index (a different one rebuilds).
INDEX_VERSION = 2

#: Terms are cut to this many characters.
MAX_TERM_LENGTH = 100

# Keys whose values are identifiers or kinds, never text, at any depth.
_SKIPPED_KEYS = frozenset({"type", "id", "call_id", "tool_call_id"})
# Top-level keys that are filters (or not searched), not text.
_NOT_TEXT = frozenset({"role", "timestamp", "metadata"}) | _SKIPPED_KEYS
_DATA_URL = re.compile(r"data:[^,\s]{0,200};base64,", re.ASCII)


def message_text(message: Mapping[str, Any]) -> str:
    """The searchable text of one message dict (as ``MessageRecord.to_dict()`` gives it).

    See the module's docstring for what is text; the parts are joined with ``"\\n"``.
    """
    parts: list[str] = []
    for key, value in message.items():
        if key in _NOT_TEXT:
            continue
        if type(value) is str:
            _add_string(value, parts)
        elif isinstance(value, list | tuple | Mapping):
            _add_leaves(value, parts)
    return "\n".join(parts)


def _add_string(value: str, parts: list[str]) -> None:
    if value and not (value.startswith("data:") and _DATA_URL.match(value)):
        parts.append(value)


def _add_leaves(value: Any, parts: list[str]) -> None:
    # depth-first, in document order, without recursion (a JSON value may nest deeply)
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _add_string(item, parts)
        elif isinstance(item, Mapping):
            binary = item.get("type") == "base64"
            stack.extend(
                child
                for key, child in list(item.items())[::-1]
                if key not in _SKIPPED_KEYS and not (binary and key == "data")
            )
        elif isinstance(item, list | tuple):
            stack.extend(reversed(item))


def record_text(record: MessageRecord) -> str:
    """The searchable text of a stored record (``message_text(record.to_dict())``).

    A plain string content with no escaped character and no other key is the text itself,
    without decoding anything. A damaged record raises
    :class:`~coda_session.errors.DamagedDataError`, as reading it does.
    """
    content = record.content
    if (
        content is not None
        and (record.extra is None or record.extra == PLAIN_ITEM)
        and record.zcontent is None
        and record.damage is None
        and ESCAPE not in content
    ):
        return content
    return message_text(record.to_dict())


def index_body(terms: Sequence[str]) -> str:
    """The terms as one string, separated by single spaces: what an SQL index stores.

    ``index_body(terms(text)).split(" ") == terms(text)`` whenever there is a term.
    """
    return " ".join(terms)


# ---------------------------------------------------------------------------------------
# The scanner

# Han (with its iteration and numeral marks), Hiragana, Katakana, Hangul; the kana
# punctuation inside those blocks (U+309B, U+309C, U+30A0, U+30FB) is left out, so it
# separates as punctuation does.
_CJK = (
    "\u1100-\u11ff\u3005-\u3007\u3021-\u3029\u3038-\u303b\u3041-\u3096\u3099-\u309a"
    "\u309d-\u309f\u30a1-\u30fa\u30fc-\u30ff\u3131-\u318e\u31f0-\u31ff\u3400-\u4dbf"
    "\u4e00-\u9fff\ua960-\ua97f\uac00-\ud7a3\ud7b0-\ud7ff\uf900-\ufaff\uff66-\uff9f"
    "\uffa0-\uffdc\U00020000-\U0003ffff"
)
_WORD_CHAR = rf"[^\W_{_CJK}]"
# A word, a CJK run, or one non-ASCII character that is neither (a symbol, a mark on its
# own, punctuation, a format character, a surrogate: sorted out by its category).
_TOKEN: re.Pattern[str]
_ASCII_CAMEL = re.compile(r"[a-z0-9][A-Z]|[A-Z][A-Z][a-z]")
# Over a word's case pattern ("A" an upper-case character, "a" a lower-case one, "0"
# anything else): the parts of an identifier. Capitals before a capitalised part form their
# own part (HTTP|Server).
_PARTS = re.compile(r"A+(?=Aa)|A*[a0]+|A+")
_CASE_PATTERN = {
    c: "A" if chr(c).isupper() else "a" if chr(c).islower() else "0" for c in range(128)
}
_SYMBOL_CATEGORIES = frozenset({"Sm", "Sc", "Sk", "So", "Co", "Cn"})


def _stem(word: str) -> str:
    # the S-stemmer (Harman 1991, as Lucene's EnglishMinimalStemmer), plus "is" kept
    n = len(word)
    if n < 3 or word[-1] != "s":
        return word
    before = word[-2]
    if before in "sui":
        return word
    if before == "e":
        third = word[-3]
        if n > 3 and third == "i" and word[-4] not in "ae":
            return word[:-3] + "y"
        if third in "iaoe":
            return word
    return word[:-1]


def _finish(word: str) -> str:
    """The term of a word (or a word part) as it is written."""
    if word.isascii():
        term = word.lower()
        if term[-1] == "s" and term.isalpha():
            term = _stem(term)
    else:
        term = unicodedata.normalize("NFKC", word)
        if term != word and not _WORD.fullmatch(term):
            term = unicodedata.normalize("NFC", word)
        term = term.casefold() or word
        if term.isascii() and term[-1] == "s" and term.isalpha():
            term = _stem(term)
    return term[:MAX_TERM_LENGTH]


def _parts(word: str) -> list[tuple[int, int]]:
    """The spans of an identifier's parts in ``word`` (one span: not an identifier)."""
    if word.isascii():
        pattern = word.translate(_CASE_PATTERN)
    else:
        pattern = "".join(["A" if c.isupper() else "a" if c.islower() else "0" for c in word])
    return [m.span() for m in _PARTS.finditer(pattern)]


def _word_terms(word: str) -> tuple[tuple[str, ...], str | None]:
    """A word's positional terms, and its whole term when it is a split identifier."""
    known = _WORDS.get(word)
    if known is not None:
        return known
    if (
        _ASCII_CAMEL.search(word) is None
        if word.isascii()
        else word[1:].islower() or not any(c.isupper() for c in word[1:])
    ):
        spans = [(0, len(word))]
    else:
        spans = _parts(word)
    if len(spans) == 1:
        found: tuple[tuple[str, ...], str | None] = ((_finish(word),), None)
    else:
        found = (tuple(_finish(word[lo:hi]) for lo, hi in spans), _finish(word))
    if len(word) <= _CACHED_WORD:
        if len(_WORDS) >= _CACHE_SIZE:
            _WORDS.clear()
        _WORDS[word] = found
        if found[1] is None:
            if len(_SIMPLE) >= _CACHE_SIZE:
                _SIMPLE.clear()
            _SIMPLE[word] = found[0][0]
    return found


def _other_term(char: str) -> str:
    """The term of a character that is neither a word's nor CJK ("" for a separator)."""
    known = _OTHERS.get(char)
    if known is None:
        kind = unicodedata.category(char)
        if kind in _SYMBOL_CATEGORIES:
            known = char.casefold()
        elif kind == "Cs":
            known = f"{ESCAPE}{ord(char):04x}"
        else:
            known = ""
        if len(_OTHERS) >= _CACHE_SIZE:
            _OTHERS.clear()
        _OTHERS[char] = known
    return known


# The terms of words and characters seen lately: analysing a message is mostly looking
# its words up here (bounded; emptied when full).
_WORDS: dict[str, tuple[tuple[str, ...], str | None]] = {}
_SIMPLE: dict[str, str] = {}  # words that give one term and are no identifier
_OTHERS: dict[str, str] = {}
_CACHE_SIZE = 1 << 15
_CACHED_WORD = 40
# ASCII letters and digits kept, every other ASCII character a space (for bytes.translate)
_ASCII_SEPARATE = bytes(c if chr(c).isalnum() else 32 for c in range(128)) + bytes(range(128, 256))


def term_spans(text: str) -> list[tuple[str, int, int]]:
    """``(term, start, end)`` of every index term of ``text``: the characters
    ``text[start:end]`` it comes from (for snippets); the terms are :func:`terms`'s.

    The parts of a split identifier come after the positional terms, each with the span of
    its part of the word.
    """
    out: list[tuple[str, int, int]] = []
    wholes: list[tuple[str, int, int]] = []
    for match in _TOKEN.finditer(text):
        start, end = match.span()
        if match.lastindex == 1:
            word = match.group()
            found, whole = _word_terms(word)
            if whole is None:
                out.append((found[0], start, end))
            else:
                out.append((whole, start, end))
                spans = _parts(word)
                wholes.extend(
                    (term, start + lo, start + hi)
                    for term, (lo, hi) in zip(found, spans, strict=True)
                )
        elif match.lastindex == 2:
            run = match.group()
            if len(run) == 1:
                out.append((run, start, end))
            else:
                out.extend((run[i : i + 2], start + i, start + i + 2) for i in range(len(run) - 1))
        else:
            term = _other_term(match.group())
            if term:
                out.append((term, start, end))
    out.extend(wholes)
    return out


def terms(text: str) -> list[str]:
    """The index terms of ``text``, in order (a term's index is its position)."""
    return _terms(text, True)


def query_terms(text: str) -> list[str]:
    """The terms of one word or phrase typed in a query: :func:`terms` without the parts
    of split identifiers (``SessionManager`` is the term ``sessionmanager``)."""
    return _terms(text, False)


def query_parts(text: str) -> list[str]:
    """:func:`query_terms` with each split identifier as its parts instead of its whole
    (``getItems`` is the phrase ``get item``, which ``get_items`` matches too)."""
    return _terms(text, False, True)


def _terms(text: str, parts_too: bool, parts_only: bool = False) -> list[str]:
    # ASCII separators become spaces (bytes.translate, a table lookup per byte), so that
    # str.split() gives chunks that are mostly one word each, looked up in _SIMPLE at C
    # speed; only a chunk holding non-ASCII characters goes through the tokenizer.
    if text.isascii():
        chunks = text.encode().translate(_ASCII_SEPARATE).decode().split()
    else:
        data = text.encode("utf-8", "surrogatepass").translate(_ASCII_SEPARATE)
        chunks = data.decode("utf-8", "surrogatepass").split()
    simple: list[str | None] = list(map(_SIMPLE.get, chunks))
    if None not in simple:
        return simple  # type: ignore[return-value]
    found: list[str] = []
    wholes: list[str] = []
    append = found.append
    for chunk, term in zip(chunks, simple, strict=True):
        if term is not None:
            append(term)
        elif chunk.isascii():
            parts, whole = _word_terms(chunk)
            if whole is None or parts_only:
                found.extend(parts)
            else:
                append(whole)
                if parts_too:
                    wholes.extend(parts)
        else:
            for word, run, other in _TOKEN.findall(chunk):
                if word:
                    parts, whole = _word_terms(word)
                    if whole is None or parts_only:
                        found.extend(parts)
                    else:
                        append(whole)
                        if parts_too:
                            wholes.extend(parts)
                elif run:
                    if len(run) == 1:
                        append(run)
                    else:
                        found.extend(map(str.__add__, run[:-1], run[1:]))
                else:
                    other_term = _other_term(other)
                    if other_term:
                        append(other_term)
    found.extend(wholes)
    return found


# Combining marks (Unicode category M) as of Unicode 14 (Python 3.11's unicodedata),
# frozen so that a word's extent does not change with the Python version; generated with
# [c for c in range(0x110000) if unicodedata.category(chr(c)).startswith("M")]. The marks
# beyond the BMP are a class of their own, tried only for such a character: a class
# reaching beyond U+FFFF is a list of ranges scanned one by one, not a bitmap.
_MARKS_BMP = (
    "\u0300-\u036f\u0483-\u0489\u0591-\u05bd\u05bf\u05c1-\u05c2\u05c4-\u05c5\u05c7"
    "\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06dc\u06df-\u06e4\u06e7-\u06e8\u06ea-\u06ed"
    "\u0711\u0730-\u074a\u07a6-\u07b0\u07eb-\u07f3\u07fd\u0816-\u0819\u081b-\u0823"
    "\u0825-\u0827\u0829-\u082d\u0859-\u085b\u0898-\u089f\u08ca-\u08e1\u08e3-\u0903"
    "\u093a-\u093c\u093e-\u094f\u0951-\u0957\u0962-\u0963\u0981-\u0983\u09bc\u09be-\u09c4"
    "\u09c7-\u09c8\u09cb-\u09cd\u09d7\u09e2-\u09e3\u09fe\u0a01-\u0a03\u0a3c\u0a3e-\u0a42"
    "\u0a47-\u0a48\u0a4b-\u0a4d\u0a51\u0a70-\u0a71\u0a75\u0a81-\u0a83\u0abc\u0abe-\u0ac5"
    "\u0ac7-\u0ac9\u0acb-\u0acd\u0ae2-\u0ae3\u0afa-\u0aff\u0b01-\u0b03\u0b3c\u0b3e-\u0b44"
    "\u0b47-\u0b48\u0b4b-\u0b4d\u0b55-\u0b57\u0b62-\u0b63\u0b82\u0bbe-\u0bc2\u0bc6-\u0bc8"
    "\u0bca-\u0bcd\u0bd7\u0c00-\u0c04\u0c3c\u0c3e-\u0c44\u0c46-\u0c48\u0c4a-\u0c4d"
    "\u0c55-\u0c56\u0c62-\u0c63\u0c81-\u0c83\u0cbc\u0cbe-\u0cc4\u0cc6-\u0cc8\u0cca-\u0ccd"
    "\u0cd5-\u0cd6\u0ce2-\u0ce3\u0d00-\u0d03\u0d3b-\u0d3c\u0d3e-\u0d44\u0d46-\u0d48"
    "\u0d4a-\u0d4d\u0d57\u0d62-\u0d63\u0d81-\u0d83\u0dca\u0dcf-\u0dd4\u0dd6\u0dd8-\u0ddf"
    "\u0df2-\u0df3\u0e31\u0e34-\u0e3a\u0e47-\u0e4e\u0eb1\u0eb4-\u0ebc\u0ec8-\u0ecd"
    "\u0f18-\u0f19\u0f35\u0f37\u0f39\u0f3e-\u0f3f\u0f71-\u0f84\u0f86-\u0f87\u0f8d-\u0f97"
    "\u0f99-\u0fbc\u0fc6\u102b-\u103e\u1056-\u1059\u105e-\u1060\u1062-\u1064\u1067-\u106d"
    "\u1071-\u1074\u1082-\u108d\u108f\u109a-\u109d\u135d-\u135f\u1712-\u1715\u1732-\u1734"
    "\u1752-\u1753\u1772-\u1773\u17b4-\u17d3\u17dd\u180b-\u180d\u180f\u1885-\u1886\u18a9"
    "\u1920-\u192b\u1930-\u193b\u1a17-\u1a1b\u1a55-\u1a5e\u1a60-\u1a7c\u1a7f\u1ab0-\u1ace"
    "\u1b00-\u1b04\u1b34-\u1b44\u1b6b-\u1b73\u1b80-\u1b82\u1ba1-\u1bad\u1be6-\u1bf3"
    "\u1c24-\u1c37\u1cd0-\u1cd2\u1cd4-\u1ce8\u1ced\u1cf4\u1cf7-\u1cf9\u1dc0-\u1dff"
    "\u20d0-\u20f0\u2cef-\u2cf1\u2d7f\u2de0-\u2dff\u302a-\u302f\u3099-\u309a\ua66f-\ua672"
    "\ua674-\ua67d\ua69e-\ua69f\ua6f0-\ua6f1\ua802\ua806\ua80b\ua823-\ua827\ua82c"
    "\ua880-\ua881\ua8b4-\ua8c5\ua8e0-\ua8f1\ua8ff\ua926-\ua92d\ua947-\ua953\ua980-\ua983"
    "\ua9b3-\ua9c0\ua9e5\uaa29-\uaa36\uaa43\uaa4c-\uaa4d\uaa7b-\uaa7d\uaab0\uaab2-\uaab4"
    "\uaab7-\uaab8\uaabe-\uaabf\uaac1\uaaeb-\uaaef\uaaf5-\uaaf6\uabe3-\uabea\uabec-\uabed"
    "\ufb1e\ufe00-\ufe0f\ufe20-\ufe2f"
)
_MARKS_ASTRAL = (
    "\U000101fd\U000102e0\U00010376-\U0001037a\U00010a01-\U00010a03\U00010a05-\U00010a06"
    "\U00010a0c-\U00010a0f\U00010a38-\U00010a3a\U00010a3f\U00010ae5-\U00010ae6"
    "\U00010d24-\U00010d27\U00010eab-\U00010eac\U00010f46-\U00010f50\U00010f82-\U00010f85"
    "\U00011000-\U00011002\U00011038-\U00011046\U00011070\U00011073-\U00011074"
    "\U0001107f-\U00011082\U000110b0-\U000110ba\U000110c2\U00011100-\U00011102"
    "\U00011127-\U00011134\U00011145-\U00011146\U00011173\U00011180-\U00011182"
    "\U000111b3-\U000111c0\U000111c9-\U000111cc\U000111ce-\U000111cf\U0001122c-\U00011237"
    "\U0001123e\U000112df-\U000112ea\U00011300-\U00011303\U0001133b-\U0001133c"
    "\U0001133e-\U00011344\U00011347-\U00011348\U0001134b-\U0001134d\U00011357"
    "\U00011362-\U00011363\U00011366-\U0001136c\U00011370-\U00011374\U00011435-\U00011446"
    "\U0001145e\U000114b0-\U000114c3\U000115af-\U000115b5\U000115b8-\U000115c0"
    "\U000115dc-\U000115dd\U00011630-\U00011640\U000116ab-\U000116b7\U0001171d-\U0001172b"
    "\U0001182c-\U0001183a\U00011930-\U00011935\U00011937-\U00011938\U0001193b-\U0001193e"
    "\U00011940\U00011942-\U00011943\U000119d1-\U000119d7\U000119da-\U000119e0\U000119e4"
    "\U00011a01-\U00011a0a\U00011a33-\U00011a39\U00011a3b-\U00011a3e\U00011a47"
    "\U00011a51-\U00011a5b\U00011a8a-\U00011a99\U00011c2f-\U00011c36\U00011c38-\U00011c3f"
    "\U00011c92-\U00011ca7\U00011ca9-\U00011cb6\U00011d31-\U00011d36\U00011d3a"
    "\U00011d3c-\U00011d3d\U00011d3f-\U00011d45\U00011d47\U00011d8a-\U00011d8e"
    "\U00011d90-\U00011d91\U00011d93-\U00011d97\U00011ef3-\U00011ef6\U00016af0-\U00016af4"
    "\U00016b30-\U00016b36\U00016f4f\U00016f51-\U00016f87\U00016f8f-\U00016f92\U00016fe4"
    "\U00016ff0-\U00016ff1\U0001bc9d-\U0001bc9e\U0001cf00-\U0001cf2d\U0001cf30-\U0001cf46"
    "\U0001d165-\U0001d169\U0001d16d-\U0001d172\U0001d17b-\U0001d182\U0001d185-\U0001d18b"
    "\U0001d1aa-\U0001d1ad\U0001d242-\U0001d244\U0001da00-\U0001da36\U0001da3b-\U0001da6c"
    "\U0001da75\U0001da84\U0001da9b-\U0001da9f\U0001daa1-\U0001daaf\U0001e000-\U0001e006"
    "\U0001e008-\U0001e018\U0001e01b-\U0001e021\U0001e023-\U0001e024\U0001e026-\U0001e02a"
    "\U0001e130-\U0001e136\U0001e2ae\U0001e2ec-\U0001e2ef\U0001e8d0-\U0001e8d6"
    "\U0001e944-\U0001e94a\U000e0100-\U000e01ef"
)
_MARK = rf"[{_MARKS_BMP}]|(?=[\U00010000-\U0010ffff])[{_MARKS_ASTRAL}]"
_TOKEN = re.compile(rf"({_WORD_CHAR}+(?:(?:{_MARK})+{_WORD_CHAR}*)*)|([{_CJK}]+)|([^\x00-\x7f\s])")
_WORD = re.compile(rf"(?:[^\W_]|{_MARK})+")
