"""The search query: its grammar and its parsed form.

Package A of issue 18 implements ``parse`` and the translations here; the types below are
the interface every backend codes against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["Phrase", "Query"]


@dataclass(frozen=True, slots=True)
class Phrase:
    """Index terms that must occur at consecutive positions; with ``prefix``, the last one
    matches any term it begins."""

    terms: tuple[str, ...]
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed query: every group must match (a group matches when any of its phrases
    does), no excluded phrase may match, and the filters hold."""

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
