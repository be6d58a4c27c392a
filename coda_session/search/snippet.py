"""Snippets: a short window of a message's text around its matches, safe to print.

A :class:`Snippet` is a sequence of fragments, each plain text or a match, so a caller
can mark the matches any way it likes: :meth:`Snippet.render` with its own markers,
:meth:`Snippet.html` for a page (escaped, matches in ``<mark>``), ``str()`` with the
markers chosen at search time.

What is marked: the characters the query's positive phrases were found in (the analysis's
:func:`~coda_session.search.analysis.term_spans`), so a stemmed word, a part of an
identifier or a CJK word is marked where it is written (``Managers`` for ``manager``).

Safe to print: a snippet's text never holds a character that drives a terminal or reorders
text. Runs of whitespace (newlines too) are one space; the C0 control characters are their
visible Control Pictures (``ESC`` is ``␛``, NUL ``␀``), DEL is ``␡``; the C1 controls, the
bidirectional embeddings, overrides, isolates and marks (U+202A-U+202E, U+2066-U+2069,
U+200E, U+200F, U+061C) and lone surrogates are ``�`` (U+FFFD).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from .analysis import term_spans
from .query import Query

__all__ = ["ELLIPSIS", "Snippet", "make_snippet", "printable"]

#: Stands for the text cut off before or after a snippet's window.
ELLIPSIS = "…"

_SPACES = re.compile(r"\s+")
_STAND_INS = {c: 0x2400 + c for c in range(0x20)}
_STAND_INS[0x7F] = 0x2421
_STAND_INS.update({c: 0xFFFD for c in range(0x80, 0xA0)})
_STAND_INS.update(
    {c: 0xFFFD for c in (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))}
)
_SURROGATES = re.compile("[\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` with whitespace runs as one space and every control, bidirectional
    formatting character and lone surrogate replaced by a visible stand-in."""
    text = _SPACES.sub(" ", text).translate(_STAND_INS)
    return _SURROGATES.sub("\ufffd", text) if not text.isascii() else text


@dataclass(frozen=True, slots=True)
class Snippet:
    """Fragments of text, ``(text, is_match)``, in order; the text is already
    :func:`printable`. ``markers`` are the ``(open, close)`` strings ``str()`` puts around
    each match."""

    fragments: tuple[tuple[str, bool], ...]
    markers: tuple[str, str] = ("[", "]")

    def render(self, open: str = "[", close: str = "]") -> str:
        """The text with every match between ``open`` and ``close``."""
        return "".join(f"{open}{text}{close}" if hit else text for text, hit in self.fragments)

    def html(self) -> str:
        """The text HTML-escaped, every match in ``<mark>...</mark>``."""
        return "".join(
            f"<mark>{html.escape(text)}</mark>" if hit else html.escape(text)
            for text, hit in self.fragments
        )

    @property
    def text(self) -> str:
        """The snippet's text without markers."""
        return "".join(text for text, _ in self.fragments)

    def __str__(self) -> str:
        return self.render(*self.markers)


def _matched_in(text: str, q: Query, lo: int, hi: int) -> list[tuple[int, int]]:
    """The character spans of ``text[lo:hi]`` (offsets into ``text``) where the query's
    positive phrases occur."""
    spans = term_spans(text[lo:hi])
    doc = [term for term, _, _ in spans]
    found: list[tuple[int, int]] = []
    for group in q.groups:
        for phrase in group:
            words = phrase.terms
            last = len(words) - 1
            for start in _starts(doc, words[0], phrase.prefix and not last):
                if start + last >= len(doc):
                    break
                for offset in range(1, last):
                    if doc[start + offset] != words[offset]:
                        break
                else:
                    end = doc[start + last]
                    if end == words[last] or (phrase.prefix and end.startswith(words[last])):
                        first, final = spans[start], spans[start + last]
                        found.append((lo + min(first[1], final[1]), lo + max(first[2], final[2])))
    return found


def _starts(doc: list[str], head: str, prefix: bool) -> list[int]:
    """The positions of ``doc`` holding ``head`` (a term starting with it: ``prefix``),
    in order; ``list.index`` finds the exact ones at C speed."""
    if prefix:
        return [i for i, term in enumerate(doc) if term.startswith(head)]
    out: list[int] = []
    at = -1
    try:
        while True:
            at = doc.index(head, at + 1)
            out.append(at)
    except ValueError:
        return out


def _boundary(text: str, at: int) -> int:
    """A position near ``at`` between two words (``at`` itself when none is near)."""
    if at >= len(text):
        return len(text)
    space = text.find(" ", at, at + 200)
    return at if space < 0 else space


def _matched(text: str, q: Query) -> list[tuple[int, int]]:
    """Where the query's positive phrases occur in ``text``, merged, in order.

    A long text is read in chunks, stopping after the first chunk that holds a match: a
    snippet of a megabyte of tool output costs no more than its first matching part.
    """
    if not q.groups:
        return []
    found: list[tuple[int, int]] = []
    start = 0
    while start < len(text) and not found:
        end = _boundary(text, start + _CHUNK)
        # each chunk but the first starts a little earlier, for a phrase across the cut
        lo = _boundary(text, start - _OVERLAP) if start else 0
        found = _matched_in(text, q, min(lo, start), end)
        start = max(end, start + 1)
    found.sort()
    merged: list[tuple[int, int]] = []
    for lo, hi in found:
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


_CHUNK = 50_000
_OVERLAP = 2_000


def _window(size: int, hits: list[tuple[int, int]], width: int) -> tuple[int, int]:
    if not hits:
        return 0, min(size, width)
    # the run of consecutive matches that fits in ``width`` and holds the most of them
    best_first, best_last, best_count = 0, 0, 0
    last = 0
    for first in range(len(hits)):
        last = max(last, first)
        while last + 1 < len(hits) and hits[last + 1][1] - hits[first][0] <= width:
            last += 1
        if last - first + 1 > best_count:
            best_first, best_last, best_count = first, last, last - first + 1
    lo, hi = hits[best_first][0], hits[best_last][1]
    slack = max(0, width - (hi - lo))
    start = max(0, lo - slack // 2)
    end = min(size, max(hi, start + width))
    start = max(0, min(start, end - width))
    return start, end


def _snap(text: str, start: int, end: int, lo: int, hi: int) -> tuple[int, int]:
    """Move the window's edges to word boundaries nearby, never past a match."""
    if start > 0:
        cut = text.find(" ", start, min(lo, start + 20))
        if cut >= 0:
            start = cut + 1
    if end < len(text):
        cut = text.rfind(" ", max(hi, end - 20), end)
        if cut >= 0:
            end = cut
    return start, end


def make_snippet(
    text: str, q: Query, *, markers: tuple[str, str] = ("[", "]"), width: int = 160
) -> Snippet:
    """A snippet of about ``width`` characters of ``text`` around the place where the most
    of the query's matches are close together (the start of ``text`` when none is).

    A text longer than 50,000 characters is read in parts up to the first that holds a
    match, and the snippet is taken from what was read.
    """
    width = max(1, width)
    hits = _matched(text, q)
    start, end = _window(len(text), hits, width)
    inside = [(max(lo, start), min(hi, end)) for lo, hi in hits if lo < end and hi > start]
    lo = inside[0][0] if inside else end
    hi = inside[-1][1] if inside else start
    start, end = _snap(text, start, end, lo, hi)
    pieces: list[tuple[str, bool]] = []
    if start > 0:
        pieces.append((ELLIPSIS, False))
    at = start
    for lo, hi in inside:
        if lo > at:
            pieces.append((text[at:lo], False))
        pieces.append((text[lo:hi], True))
        at = hi
    if at < end:
        pieces.append((text[at:end], False))
    if end < len(text):
        pieces.append((ELLIPSIS, False))
    fragments: list[tuple[str, bool]] = []
    for piece, hit in pieces:
        shown = printable(piece)
        if not shown:
            continue
        if fragments and not hit and not fragments[-1][1]:
            fragments[-1] = (fragments[-1][0] + shown, False)
        else:
            fragments.append((shown, hit))
    if fragments and not fragments[0][1]:
        fragments[0] = (fragments[0][0].lstrip(" ") or ELLIPSIS, False)
    return Snippet(tuple(fragments), markers)
