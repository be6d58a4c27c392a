"""Ranking a window of candidate messages: BM25, computed in Python.

Every backend hands the same candidates (the newest ``window`` matching messages) with
their index bodies, and this module orders them, so the order is the same everywhere and
no database ranks more than the window.

The score is Okapi BM25 (``k1`` = 1.2, ``b`` = 0.75) over the window alone: each distinct
positive phrase of the query counts as one "term" (its occurrences: the phrase at
consecutive positions, its last term a prefix when the phrase is one; occurrences that
overlap, as ``a a`` twice in ``a a a``, count once); its inverse document
frequency is ``ln(1 + (N - df + 0.5) / (df + 0.5))`` with ``N`` the window's size and
``df`` the candidates holding it; a document's length is its number of index terms, against
the window's average. Excluded phrases and filters do not score. So a score depends on the
window: the same message can score differently in another search, and a term rare in the
window weighs more than one that most candidates hold. Ties (and every candidate of a query
without terms, which all score 0) are ordered newest (largest id) first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from .query import Phrase, Query

__all__ = ["K1", "B", "rank", "score", "score_bodies"]

#: BM25's term-frequency saturation.
K1 = 1.2
#: BM25's length normalisation.
B = 0.75


def _phrases(q: Query) -> list[Phrase]:
    seen: dict[Phrase, None] = {}
    for group in q.groups:
        for phrase in group:
            seen.setdefault(phrase, None)
    return list(seen)


def _pattern(phrase: Phrase) -> str:
    # the phrase as it appears in a double-spaced, space-padded body (see _count)
    text = " " + "  ".join(phrase.terms)
    return text if phrase.prefix else text + " "


def _counter(phrase: Phrase) -> Callable[[str], int]:
    """How many times ``phrase`` occurs in a body (see :func:`_scores`).

    With every separator doubled and the body padded, an occurrence of a phrase is a
    substring (" a  b ", or " a  b" for a prefix) and occurrences of a term never share a
    space, so str.count, at C speed, counts them. Doubling copies the body, so the body is
    first searched as it is, padded only: there two occurrences miss each other only when
    one ends at the space the next begins with (" a b a b "), which a prefix never does,
    and only a body holding that is doubled.
    """
    doubled = _pattern(phrase)
    core = " ".join(phrase.terms)
    if phrase.prefix:
        single = " " + core
        return lambda body: (" " + body).count(single)
    single, twice = f" {core} ", f" {core} {core} "

    def count(body: str) -> int:
        padded = " " + body + " "
        found = padded.count(single)
        if found and twice in padded:
            return (" " + body.replace(" ", "  ") + " ").count(doubled)
        return found

    return count


def _scores(q: Query, bodies: Sequence[str]) -> list[float]:
    phrases = _phrases(q)
    size = len(bodies)
    if not phrases or not size:
        return [0.0] * size
    lengths = [body.count(" ") + 1 if body else 0 for body in bodies]
    average = sum(lengths) / size or 1.0
    norms = [K1 * (1 - B + B * length / average) for length in lengths]
    scores = [0.0] * size
    for phrase in phrases:
        counts = list(map(_counter(phrase), bodies))
        held = size - counts.count(0)
        if not held:
            continue
        idf = math.log(1 + (size - held + 0.5) / (held + 0.5))
        for i, count in enumerate(counts):
            if count:
                scores[i] += idf * count * (K1 + 1) / (count + norms[i])
    return scores


def score_bodies(q: Query, bodies: Sequence[str]) -> list[float]:
    """The BM25 score of each index body (terms joined by single spaces) within
    ``bodies``, the window, in their order (what :func:`rank` orders)."""
    return _scores(q, bodies)


def score(q: Query, docs: Sequence[Sequence[str]]) -> list[float]:
    """The BM25 score of each document (its index terms) within ``docs``, the window."""
    return _scores(q, [" ".join(doc) for doc in docs])


def rank(q: Query, candidates: Sequence[tuple[int, str]]) -> list[tuple[int, float]]:
    """``(id, score)`` of each candidate (message id, index body), best first, then
    newest (largest id) first; deterministic for a given query and window."""
    values = _scores(q, [body for _, body in candidates])
    scored = [(ident, value) for (ident, _), value in zip(candidates, values, strict=True)]
    scored.sort(key=lambda pair: (-pair[1], -pair[0]))
    return scored
