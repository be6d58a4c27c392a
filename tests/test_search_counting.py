"""Ranking and snippets find the same occurrences as the plain definitions (issue 18).

``search.ranking`` counts a phrase's occurrences without doubling every body's spaces
unless two occurrences touch, and ``search.snippet`` finds a phrase's first term with
``list.index``; both are checked here against the definitions they replace, written out
plainly, on random bodies and queries of a small vocabulary (so phrases repeat, touch and
overlap often).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from coda_session.search.analysis import term_spans
from coda_session.search.query import Query, parse
from coda_session.search.ranking import K1, B, score
from coda_session.search.snippet import make_snippet

WORDS = ("a", "b", "ab", "abc", "ba")


def _reference_scores(q: Query, docs: Sequence[Sequence[str]]) -> list[float]:
    """BM25 over the window as ``search.ranking`` defines it: every separator doubled, a
    phrase counted with str.count."""
    phrases = list(dict.fromkeys(p for group in q.groups for p in group))
    bodies = [" ".join(doc) for doc in docs]
    size = len(bodies)
    if not phrases or not size:
        return [0.0] * size
    padded = [" " + body.replace(" ", "  ") + " " for body in bodies]
    lengths = [body.count(" ") + 1 if body else 0 for body in bodies]
    average = sum(lengths) / size or 1.0
    norms = [K1 * (1 - B + B * length / average) for length in lengths]
    scores = [0.0] * size
    for phrase in phrases:
        pattern = " " + "  ".join(phrase.terms) + ("" if phrase.prefix else " ")
        counts = [text.count(pattern) for text in padded]
        held = size - counts.count(0)
        if not held:
            continue
        idf = math.log(1 + (size - held + 0.5) / (held + 0.5))
        for i, count in enumerate(counts):
            if count:
                scores[i] += idf * count * (K1 + 1) / (count + norms[i])
    return scores


def _reference_matches(text: str, q: Query) -> list[tuple[int, int]]:
    """Where the query's phrases occur in ``text``: every start position tried."""
    spans = term_spans(text)
    doc = [term for term, _, _ in spans]
    found = []
    for group in q.groups:
        for phrase in group:
            words, last = phrase.terms, len(phrase.terms) - 1
            for start in range(len(doc) - last):
                if all(doc[start + k] == words[k] for k in range(last)):
                    end = doc[start + last]
                    if end == words[last] or (phrase.prefix and end.startswith(words[last])):
                        first, final = spans[start], spans[start + last]
                        found.append((min(first[1], final[1]), max(first[2], final[2])))
    return sorted(found)


documents = st.lists(st.lists(st.sampled_from(WORDS), min_size=0, max_size=12), max_size=6)
phrases = st.lists(
    st.tuples(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3), st.booleans()),
    min_size=1,
    max_size=3,
)


def _query(items: list[tuple[list[str], bool]]) -> Query:
    return parse(" ".join(f'"{" ".join(words)}"' + ("*" if star else "") for words, star in items))


@settings(max_examples=300, deadline=None)
@given(documents, phrases)
def test_scores_count_occurrences_as_defined(docs: list[list[str]], items: list[Any]) -> None:
    q = _query(items)
    assert score(q, docs) == _reference_scores(q, docs)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(WORDS), max_size=30), phrases)
def test_snippets_mark_every_occurrence(words: list[str], items: list[Any]) -> None:
    q = _query(items)
    text = " ".join(words)
    marked = [frag for frag, hit in make_snippet(text, q, width=10_000).fragments if hit]
    expected: list[tuple[int, int]] = []
    for lo, hi in _reference_matches(text, q):
        if expected and lo <= expected[-1][1]:
            expected[-1] = (expected[-1][0], max(expected[-1][1], hi))
        else:
            expected.append((lo, hi))
    assert marked == [text[lo:hi] for lo, hi in expected]
