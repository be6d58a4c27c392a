"""Model-based test of copy-on-write branching, on every backend.

A :class:`hypothesis.stateful.RuleBasedStateMachine` drives the blocking API
(``SessionManager``, autosave off, one session object per name) through random sequences
of: create, add messages, save, fork (at the end, at a position, negative ones too, after
a message id, and invalid forks), truncate, clear, set_messages, pop (an immediate write),
update metadata, delete, and reopen (a new manager on the same storage), over several sessions
and branches of branches. Next to it runs a naive model in which a fork simply copies the
source's *saved* list of messages (objects keep unsaved changes, so forks that must not
see them happen all the time).

After every step the observable state must agree with the model:

* ``list_sessions()``: names in order, ``message_count``, ``metadata``, and the tree
  structure (``parent_id``, ``fork_point``, ``root_id``, compared as the model's sessions
  they name, so a parent deleted since still counts);
* each held object: ``message_count``, ``metadata``, ``has_unsaved_changes``, its
  ``parent_id``/``fork_point``/``root_id``, and ``get_messages_with_ids()``: role and
  content of every message, None for exactly the unsaved ones, and the same id for the
  same message wherever it shows (a parent and its branches), ascending in a session and,
  except on the custom backend (whose ids are per session), never two messages one id;
* in turn for one name a step: ``get_session_info``, ``get_tree``, ``list_branches``,
  ``get_lineage`` and ``get_messages`` (SessionNotFoundError alike for a missing name);
* on the SQL backends, by raw SQL: the ``messages`` rows are exactly the saved messages the
  live sessions show (no row kept that nobody shows, none lost), every row is shown by a
  non-holder session (its own rows, or a segment's owner_id/lo/hi range), no holder is
  left empty, no segment belongs to a holder or a missing session, every segment's
  counters agree with its rows and its rows are consecutive in their owner's places
  (``ord``: its count and k-th row are found from its two ends), ``session_view`` shows
  each session's saved messages, and a fork (valid or not) changes no row of
  ``messages``.

Errors must agree too: the same exception type from the backend and from the model (a
fork checks its source, then its position or message id, then the new name).
"""

from __future__ import annotations

import asyncio
import copy
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from coda_session import (
    InvalidMessageError,
    Session,
    SessionExistsError,
    SessionInfo,
    SessionManager,
    SessionNotFoundError,
    SessionStorage,
    UnsavedChangesWarning,
)
from coda_session.repository import Repository
from tests.support import BACKENDS, Store

NAMES = ["a", "b", "c", "d"]
ROLES = ["user", "assistant", "tool"]
META_KEYS = ["k1", "k2"]
META_VALUES: list[Any] = [0, 1, "x", None, [1, "two"], {"nested": True}]
# values of fork_point / fork_after the library must refuse for their type
BAD_TYPES: list[Any] = [True, 1.0, "1"]
# how a fork is asked for: at the end (neither keyword), at a position, after a message
# id, with both keywords or a keyword of the wrong type (InvalidMessageError)
FORK_KINDS = [*["end"] * 2, *["point"] * 5, *["after"] * 5, "both", "bad-type"]
# message ids no session shows
NO_SUCH_IDS = [0, -1, 10**12]

# examples per backend, sized for under a minute each with the whole file on 2 cores
# (-n 4): PostgreSQL and custom cost most a step
EXAMPLES = {"memory": 60, "sqlite": 40, "sqlite-core": 30, "custom": 25, "postgresql": 20}
STEPS = 30

ERRORS = (SessionExistsError, SessionNotFoundError, InvalidMessageError)


def _close_dropping_unsaved(manager: SessionManager) -> None:
    """Close with autosave off: the model drops unsaved changes, as the manager does (its
    UnsavedChangesWarning naming them is tested in test_lifecycle.py)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsavedChangesWarning)
        manager.close()


# -- the model ---------------------------------------------------------------------------


@dataclass(eq=False)
class MMessage:
    uid: int  # the model's identity of the message (the same object in every copy)
    role: str
    content: str


@dataclass(eq=False)
class MSession:
    uid: int
    name: str
    root: int  # uid of the tree's first session
    parent: int | None
    fork_point: int | None
    messages: list[MMessage] = field(default_factory=list)  # the saved ones
    metadata: dict[str, Any] = field(default_factory=dict)  # the saved one
    live: bool = True


@dataclass(eq=False)
class MObject:
    """The one session object held for a name: the saved state plus unsaved changes."""

    session: MSession
    keep: int | None = None  # a pending truncation: keep the newest `keep` saved ones
    pending: list[MMessage] = field(default_factory=list)
    patch: dict[str, Any] = field(default_factory=dict)

    def view(self) -> list[MMessage]:
        saved = self.session.messages
        return saved if self.keep is None else saved[len(saved) - self.keep :]

    def shown(self) -> list[MMessage]:
        return self.view() + self.pending

    def metadata(self) -> dict[str, Any]:
        return {**self.session.metadata, **self.patch}

    def unsaved(self) -> bool:
        return bool(self.pending or self.keep is not None or self.patch)

    def truncate(self, keep: int) -> None:
        view = self.view()
        excess = len(view) + len(self.pending) - keep
        if excess <= 0:
            return
        drop_saved = min(excess, len(view))
        if drop_saved:
            self.keep = len(view) - drop_saved
        if excess > drop_saved:
            self.pending = self.pending[excess - drop_saved :]


class Model:
    """Sessions as plain Python lists: a fork copies the source's saved list."""

    def __init__(self) -> None:
        self.sessions: list[MSession] = []  # every session ever made, in creation order
        self.objects: dict[str, MObject] = {}  # name -> the object held for it
        self._uid = 0

    def next_uid(self) -> int:
        self._uid += 1
        return self._uid

    def find(self, name: str) -> MSession | None:
        for session in self.sessions:
            if session.live and session.name == name:
                return session
        return None

    def by_uid(self, uid: int) -> MSession:
        return next(s for s in self.sessions if s.uid == uid)

    def live(self) -> list[MSession]:
        return [s for s in self.sessions if s.live]

    def _new(self, name: str, source: MSession | None, point: int | None) -> MObject:
        uid = self.next_uid()
        if source is None:
            session = MSession(uid, name, uid, None, None)
        else:
            assert point is not None
            session = MSession(
                uid,
                name,
                source.root,
                source.uid,
                point,
                list(source.messages[:point]),
                copy.deepcopy(source.metadata),
            )
        self.sessions.append(session)
        obj = self.objects[name] = MObject(session)
        return obj

    def create(self, name: str, exist_ok: bool, stray_fork_point: bool) -> MObject:
        if stray_fork_point:
            raise InvalidMessageError("fork_point needs branch_from")
        session = self.find(name)
        if session is None:
            return self._new(name, None, None)
        if not exist_ok:
            raise SessionExistsError(name)
        obj = self.objects[name] = MObject(session)  # a new object: the old one is dropped
        return obj

    def load(self, name: str) -> MObject:
        session = self.find(name)
        if session is None:
            raise SessionNotFoundError(name)
        obj = self.objects[name] = MObject(session)
        return obj

    def fork_check(
        self,
        source: str,
        name: str | None,
        point: Any,
        after: Any,
        id_of: Callable[[MMessage], int],
        exists_first: bool,
    ) -> tuple[MSession, int]:
        """The source and the number of its saved messages a branch starts with, after
        the checks in the library's order (``name`` None: a generated, free name).

        ``exists_first``: when the new name is taken *and* the position or id is invalid,
        whether SessionExistsError wins (the library: it does not)."""
        if point is not None and after is not None:
            raise InvalidMessageError("both")
        for value in (point, after):
            if value is not None and type(value) is not int:
                raise InvalidMessageError("not an int")
        src = self.find(source)
        if src is None:
            raise SessionNotFoundError(source)
        count = len(src.messages)
        if point is not None and point < 0:
            point += count
            if point < 0:
                raise InvalidMessageError("out of range")
        taken = name is not None and self.find(name) is not None
        if taken and exists_first:
            raise SessionExistsError(name)
        if after is not None:
            ids = [id_of(m) for m in src.messages]
            if after not in ids:
                raise InvalidMessageError("no such message")
            point = ids.index(after) + 1
        elif point is None:
            point = count
        elif point > count:
            raise InvalidMessageError("out of range")
        if taken:
            raise SessionExistsError(name)
        return src, point

    def fork(self, name: str, src: MSession, point: int) -> MObject:
        return self._new(name, src, point)

    def save(self, name: str) -> None:
        obj = self.objects[name]
        if not obj.unsaved():
            return
        session = obj.session
        session.messages = obj.view() + obj.pending
        session.metadata.update(copy.deepcopy(obj.patch))
        obj.keep, obj.pending, obj.patch = None, [], {}

    def pop(self, name: str, n: int) -> list[MMessage]:
        if n < 0:
            raise InvalidMessageError("n")
        if n == 0:
            self.save(name)  # pops nothing, writes the other changes
            return []
        obj = self.objects[name]
        take = min(n, len(obj.pending))
        popped = obj.pending[len(obj.pending) - take :]
        del obj.pending[len(obj.pending) - take :]
        if take == n:
            return popped  # unsaved messages only: no write, other changes stay unsaved
        # one write: the pending truncation and metadata, then the newest saved ones go
        kept = obj.view()
        drop = min(n - take, len(kept))
        obj.session.messages = kept[: len(kept) - drop]
        obj.session.metadata.update(copy.deepcopy(obj.patch))
        obj.keep, obj.patch = None, {}
        return kept[len(kept) - drop :] + popped

    def delete(self, name: str, missing_ok: bool) -> None:
        session = self.find(name)
        if session is None:
            if missing_ok:
                return
            raise SessionNotFoundError(name)
        session.live = False
        self.objects.pop(name, None)

    def tree(self, name: str) -> list[int]:
        session = self.find(name)
        if session is None:
            raise SessionNotFoundError(name)
        return [s.uid for s in self.live() if s.root == session.root]

    def branches(self, name: str) -> list[int]:
        session = self.find(name)
        if session is None:
            raise SessionNotFoundError(name)
        return [s.uid for s in self.live() if s.parent == session.uid]

    def lineage(self, session: MSession) -> list[int]:
        chain = [session]
        while chain[-1].parent is not None:
            parent = self.by_uid(chain[-1].parent)
            if not parent.live:
                break
            chain.append(parent)
        return [s.uid for s in reversed(chain)]


# -- the machine -------------------------------------------------------------------------

Outcome = tuple[str, Any]  # ("ok", value) or ("error", exception type)


def _outcome(fn: Callable[[], Any]) -> Outcome:
    try:
        return ("ok", fn())
    except ERRORS as exc:
        return ("error", type(exc))


def _plain(messages: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(m["role"], m["content"]) for m in messages]


def _model_plain(messages: list[MMessage]) -> list[tuple[str, Any]]:
    return [(m.role, m.content) for m in messages]


# one statement (one connection on PostgreSQL) a step: every message row with its owner's
# kind ('m': holder true/false, NULL for a missing session), whether a live (non-holder)
# session shows it, empty holders ('h'), segments of a holder or a missing session ('g'),
# segments whose count or size is not their rows' or whose rows are not consecutive
# places of their owner ('p')
STORAGE_SQL = """
SELECT 'm', m.id, s.holder,
    CASE WHEN (s.id IS NOT NULL AND NOT s.holder) OR EXISTS (
        SELECT 1 FROM session_segments g JOIN sessions v ON v.id = g.session_id
        WHERE g.owner_id = m.session_id AND g.lo < m.id AND m.id <= g.hi AND NOT v.holder
    ) THEN 1 ELSE 0 END
FROM messages m LEFT JOIN sessions s ON s.id = m.session_id
UNION ALL
SELECT 'h', NULL, s.holder, 0 FROM sessions s
WHERE s.holder AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.session_id = s.id)
UNION ALL
SELECT 'g', g.id, NULL, 0 FROM session_segments g
WHERE NOT EXISTS (SELECT 1 FROM sessions v WHERE v.id = g.session_id AND NOT v.holder)
UNION ALL
SELECT 'p', g.id, NULL, 0 FROM session_segments g
LEFT JOIN (SELECT g2.id AS gid, count(*) AS n, sum(m.size_bytes) AS size,
        max(m.ord) - min(m.ord) + 1 AS places, max(m.cum_size) - min(m.cum_size - m.size_bytes)
        AS cum
    FROM session_segments g2 JOIN messages m ON m.session_id = g2.owner_id
        AND m.id > g2.lo AND m.id <= g2.hi
    GROUP BY g2.id) r ON r.gid = g.id
WHERE coalesce(r.n, 0) <> g.message_count OR coalesce(r.size, 0) <> g.size_bytes
    OR r.places <> r.n OR r.cum <> r.size
"""
# what other programs read: every (non-holder) session's message ids, in position order
VIEW_SQL = "SELECT session_id, message_id FROM session_view ORDER BY session_id, position"


class PgConnection:
    """One connection to the store's PostgreSQL database for the raw checks, kept open on
    a loop of its own (``Store.execute`` connects per call: ~50 ms, the slowest part of a
    step)."""

    def __init__(self, url: str) -> None:
        import asyncpg
        from sqlalchemy.engine import make_url

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        args = make_url(url).translate_connect_args(username="user")
        self.conn = self._run(asyncpg.connect(**args, timeout=30))

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def execute(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self._run(self.conn.fetch(sql))]

    def close(self) -> None:
        try:
            self._run(self.conn.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()
            self.loop.close()


def empty_database(backend: str, where: Path) -> Path | None:
    """An empty, migrated SQLite database to copy for each example (much cheaper than
    migrating one per example); None for the other backends."""
    store = Store(backend, where / "template")
    if store.database is None:
        return None
    config = store.config.model_copy(update={"autosave_interval": 0})
    with SessionManager(config, store.repository(private_loop=True)) as manager:
        assert manager.list_sessions() == []
    return store.database


class BranchingMachine(RuleBasedStateMachine):
    def __init__(self, backend: str, template: Path | None = None) -> None:
        super().__init__()
        self.backend = backend
        self.tmp = Path(tempfile.mkdtemp(prefix="coda-branch-"))
        self.store = Store(backend, self.tmp / "sessions")
        if template is not None:
            self.store.path.mkdir(mode=0o700)
            shutil.copy2(template, self.store.path / template.name)
        self.sql = backend in ("sqlite", "sqlite-core", "postgresql")
        self.pg: PgConnection | None = None
        self.config = self.store.config.model_copy(update={"autosave_interval": 0})
        self.manager: SessionManager | None = None
        self.model = Model()
        self.objects: dict[str, Session] = {}  # name -> the one object held for it
        self.uid_of: dict[str, int] = {}  # a real session id -> the model session's uid
        self.id_of: dict[int, int] = {}  # a model message's uid -> its real message id
        self.message_of: dict[int, int] = {}  # a real message id -> the model message's uid
        self.rows: set[int] | None = None  # SQL: the message rows after the last step
        self.forked = False  # this step forked (or tried to): no message row may change
        self.counter = 0
        self.steps = 0
        self.since_open = 0  # steps since the manager was opened

    def _storage(self) -> Repository | SessionStorage:
        return self.store.repository(private_loop=True)

    @property
    def m(self) -> SessionManager:
        assert self.manager is not None
        return self.manager

    def teardown(self) -> None:
        try:
            if self.manager is not None:
                _close_dropping_unsaved(self.manager)
        finally:
            try:
                if self.pg is not None:
                    self.pg.close()
            finally:
                shutil.rmtree(self.tmp, ignore_errors=True)

    def _both(self, real: Callable[[], Any], model: Callable[[], Any]) -> tuple[Any, Any]:
        """Run one operation on both sides; demand the same outcome and error type."""
        expected = _outcome(model)
        actual = _outcome(real)
        assert actual[0] == expected[0] and (actual[0] == "ok" or actual[1] is expected[1]), (
            f"backend {self.backend}: got {actual!r}, the model says {expected!r}"
        )
        return actual[1], expected[1]

    def _names(self) -> list[str]:
        """The live sessions' names (generated branch names too)."""
        return [s.name for s in self.model.live()]

    def _pick(self, data: st.DataObject) -> str:
        """A live session's name, its object held (loaded now if it was not)."""
        # sessions in a tree of more than one (a branch, or one with branches) thrice:
        # what one of them does must not show in the others
        trees = [s.root for s in self.model.live()]
        weighted = [
            s.name for s in self.model.live() for _ in range(1 if trees.count(s.root) == 1 else 3)
        ]
        name: str = data.draw(st.sampled_from(weighted), label="session")
        if name not in self.objects:
            self.objects[name] = self.m.load_session(name)
            self.model.load(name)
        return name

    def _message_id(self, message: MMessage) -> int:
        assert message.uid in self.id_of, "a saved message the test never saw"
        return self.id_of[message.uid]

    def _text(self, name: str) -> str:
        self.counter += 1
        return f"{name}-{self.counter}"

    # -- rules ----------------------------------------------------------------------------

    @initialize(cache=st.sampled_from([0, 0, 2, 1000]))
    def open_manager(self, cache: int) -> None:
        # message_cache_size 0: every read of an object's messages reads storage, so a
        # change to one session that shows in another is seen at once
        self.config = self.config.model_copy(update={"message_cache_size": cache})
        self.manager = SessionManager(self.config, self._storage())
        self.create(NAMES[0], exist_ok=True, stray_fork_point=False)
        # start with saved messages to branch from (later rules add and remove more)
        for role in ROLES[:2]:
            message = MMessage(self.model.next_uid(), role, self._text(NAMES[0]))
            self.objects[NAMES[0]].add_message({"role": role, "content": message.content})
            self.model.objects[NAMES[0]].pending.append(message)
        self._save(NAMES[0])

    @rule(
        name=st.sampled_from(NAMES),
        exist_ok=st.sampled_from([True, True, False]),
        stray_fork_point=st.sampled_from([False] * 5 + [True]),
    )
    def create(self, name: str, exist_ok: bool, stray_fork_point: bool) -> None:
        extra: dict[str, Any] = {"fork_point": 0} if stray_fork_point else {}
        real, _ = self._both(
            lambda: self.m.create_session(name, exist_ok=exist_ok, **extra),
            lambda: self.model.create(name, exist_ok, stray_fork_point),
        )
        if isinstance(real, Session):
            self.objects[name] = real
            self.uid_of.setdefault(real.id, self.model.objects[name].session.uid)

    @precondition(lambda self: self.model.live())
    @rule(
        data=st.data(),
        roles=st.lists(st.sampled_from(ROLES), min_size=1, max_size=3),
        and_save=st.sampled_from([True, True, False]),
    )
    def add(self, data: st.DataObject, roles: list[str], and_save: bool) -> None:
        name = self._pick(data)
        for role in roles:
            message = MMessage(self.model.next_uid(), role, self._text(name))
            self.objects[name].add_message({"role": role, "content": message.content})
            self.model.objects[name].pending.append(message)
        if and_save:
            self._save(name)

    def _save(self, name: str) -> None:
        obj = self.objects[name]
        self._both(lambda: self.m.save_session(obj), lambda: self.model.save(name))

    @precondition(lambda self: self.model.live())
    @rule(data=st.data())
    def save(self, data: st.DataObject) -> None:
        self._save(self._pick(data))

    @precondition(lambda self: self.model.live())
    @rule(data=st.data(), keep=st.integers(-1, 5), and_save=st.booleans())
    def truncate(self, data: st.DataObject, keep: int, and_save: bool) -> None:
        name = self._pick(data)
        obj = self.model.objects[name]
        self._both(
            lambda: self.objects[name].truncate_messages(keep),
            lambda: obj.truncate(keep) if keep >= 0 else _refuse(),
        )
        if and_save:
            self._save(name)

    @precondition(lambda self: self.model.live())
    @rule(data=st.data(), and_save=st.booleans())
    def clear(self, data: st.DataObject, and_save: bool) -> None:
        name = self._pick(data)
        self.objects[name].clear_messages()
        self.model.objects[name].truncate(0)
        if and_save:
            self._save(name)

    @precondition(lambda self: self.model.live())
    @rule(
        data=st.data(),
        roles=st.lists(st.sampled_from(ROLES), max_size=3),
        and_save=st.sampled_from([True, True, False]),
    )
    def set_messages(self, data: st.DataObject, roles: list[str], and_save: bool) -> None:
        name = self._pick(data)
        new = [MMessage(self.model.next_uid(), role, self._text(name)) for role in roles]
        self.objects[name].set_messages([{"role": m.role, "content": m.content} for m in new])
        obj = self.model.objects[name]
        obj.truncate(0)
        obj.pending.extend(new)
        if and_save:
            self._save(name)

    @precondition(lambda self: self.model.live())
    @rule(data=st.data(), n=st.integers(-1, 4))
    def pop(self, data: st.DataObject, n: int) -> None:
        name = self._pick(data)
        real, model = self._both(
            lambda: self.objects[name].pop_messages(n), lambda: self.model.pop(name, n)
        )
        if isinstance(model, list):
            assert _plain(real) == _model_plain(model), f"backend {self.backend}: popped"

    @precondition(lambda self: self.model.live())
    @rule(
        data=st.data(),
        key=st.sampled_from(META_KEYS),
        value=st.sampled_from(META_VALUES),
        and_save=st.booleans(),
    )
    def update_metadata(self, data: st.DataObject, key: str, value: Any, and_save: bool) -> None:
        name = self._pick(data)
        self.objects[name].update_metadata({key: value})
        self.model.objects[name].patch[key] = copy.deepcopy(value)
        if and_save:
            self._save(name)

    @precondition(lambda self: self.model.live())
    @rule(
        data=st.data(),
        how=st.sampled_from(FORK_KINDS),
        via_fork_session=st.booleans(),
        source_object=st.booleans(),
        missing_source=st.sampled_from([False] * 9 + [True]),
    )
    def fork(
        self,
        data: st.DataObject,
        how: str,
        via_fork_session: bool,
        source_object: bool,
        missing_source: bool,
    ) -> None:
        self.forked = True
        if missing_source:
            source: str = data.draw(st.sampled_from(NAMES), label="source")
        else:
            source = data.draw(st.sampled_from(self._names()), label="source")
        src = self.model.find(source)
        count = 0 if src is None else len(src.messages)
        # mostly a free name (or a generated one), now and then a taken one
        free = [n for n in NAMES if self.model.find(n) is None]
        names: list[str | None] = [None, *free, *free]
        if len(free) < len(NAMES) and data.draw(st.integers(0, 4), label="taken?") == 0:
            names = [n for n in NAMES if n not in free]
        new_name: str | None = data.draw(st.sampled_from(names), label="name")
        fork_point: Any = None
        fork_after: Any = None
        # hypothesis favours the first of the choices: the valid ones come first
        odd = data.draw(st.sampled_from([False] * 5 + [True]), label="out of range / unknown")
        if how in ("point", "both"):
            # mostly in range (negative ones too), now and then just out of it
            if odd:
                fork_point = data.draw(st.sampled_from([count + 1, -count - 1]), label="point")
            else:
                fork_point = data.draw(st.integers(-count, count), label="fork_point")
        if how in ("after", "both"):
            shown = [] if src is None else [self._message_id(m) for m in src.messages]
            others = sorted(set(self.id_of.values()) - set(shown))
            if shown and not odd:
                fork_after = data.draw(st.sampled_from(shown), label="fork_after")
            else:
                fork_after = data.draw(st.sampled_from(others + NO_SUCH_IDS), label="unknown")
        if how == "bad-type":
            bad = data.draw(st.sampled_from(BAD_TYPES), label="bad")
            if data.draw(st.booleans(), label="bad fork_point"):
                fork_point = bad
            else:
                fork_after = bad
        branch_from: str | Session = source
        if source_object and source in self.objects:
            branch_from = self.objects[source]
        name = new_name
        if name is None:
            via_fork_session = True

        def real() -> Session:
            if via_fork_session:
                return self.m.fork_session(
                    branch_from, fork_point, fork_after=fork_after, name=name
                )
            assert name is not None
            return self.m.create_session(
                name, branch_from, fork_point=fork_point, fork_after=fork_after
            )

        def model(exists_first: bool) -> Outcome:
            return _outcome(
                lambda: self.model.fork_check(
                    source, name, fork_point, fork_after, self._message_id, exists_first
                )
            )

        # every backend checks the source, then the fork point or id, then the new name
        expected = model(False)
        allowed = [expected]
        actual = _outcome(real)
        assert actual[0] == expected[0] and (
            actual[0] == "ok" or any(actual[1] is a[1] for a in allowed)
        ), f"backend {self.backend}: got {actual!r}, the model says {allowed!r}"
        if actual[0] != "ok":
            return
        branch: Session = actual[1]
        src, at = expected[1]
        if name is None:
            assert branch.name.startswith(source + "~"), branch.name
            assert self.model.find(branch.name) is None, branch.name
        self.model.fork(branch.name, src, at)
        self.objects[branch.name] = branch
        self.uid_of[branch.id] = self.model.objects[branch.name].session.uid

    # forks are what this test is about: more rules for them (and for adding), as
    # hypothesis picks among the rules evenly
    fork_2 = fork
    fork_3 = fork
    fork_4 = fork
    add_2 = add

    @rule(name=st.sampled_from(NAMES), missing_ok=st.booleans(), data=st.data())
    def delete(self, name: str, missing_ok: bool, data: st.DataObject) -> None:
        live = self._names()
        any_live: bool = data.draw(st.sampled_from([True] * 4 + [False]), label="a live one")
        if live and any_live:
            name = data.draw(st.sampled_from(live), label="live name")
        held = self.objects.get(name)
        self._both(
            lambda: self.m.delete_session(name, missing_ok=missing_ok),
            lambda: self.model.delete(name, missing_ok),
        )
        if held is not None and self.model.find(name) is None:
            del self.objects[name]
            # the object of a deleted session has no lineage any more
            got = _outcome(held.get_lineage)
            assert got == ("error", SessionNotFoundError), f"backend {self.backend}: {got}"

    @precondition(lambda self: self.since_open > 1)
    @rule()
    def reopen(self) -> None:
        # autosave is off: unsaved changes are dropped with the objects (opening costs
        # ~0.1 s on PostgreSQL: not twice in a row)
        self.since_open = 0
        _close_dropping_unsaved(self.m)
        self.objects.clear()
        self.model.objects.clear()
        self.manager = SessionManager(self.config, self._storage())

    # -- invariants -----------------------------------------------------------------------

    def _uid(self, session_id: str | None) -> int | None:
        if session_id is None:
            return None
        assert session_id in self.uid_of, f"backend {self.backend}: unknown id {session_id}"
        return self.uid_of[session_id]

    def _structure(self, info: SessionInfo | Session) -> tuple[int | None, int | None, int | None]:
        return (self._uid(info.parent_id), info.fork_point, self._uid(info.root_id))

    @staticmethod
    def _model_structure(s: MSession) -> tuple[int | None, int | None, int | None]:
        return (s.parent, s.fork_point, s.root)

    @invariant()
    def sessions_agree(self) -> None:
        where = f"backend {self.backend}"
        listed = self.m.list_sessions()
        for info in listed:
            if info.id not in self.uid_of:
                # a session the test did not create: report it by name
                raise AssertionError(f"{where}: list_sessions() shows {info.name!r}")
        got = [(i.name, i.message_count, i.metadata, *self._structure(i)) for i in listed]
        want = [
            (s.name, len(s.messages), s.metadata, *self._model_structure(s))
            for s in self.model.live()
        ]
        assert got == want, f"{where}: list_sessions()"
        uids = [self.uid_of[i.id] for i in listed]
        assert uids == [s.uid for s in self.model.live()], f"{where}: list_sessions() ids"

    @invariant()
    def objects_agree(self) -> None:
        assert set(self.objects) == set(self.model.objects)
        for name, session in self.objects.items():
            obj = self.model.objects[name]
            where = f"backend {self.backend}: object {name!r}"
            shown = obj.shown()
            assert session.message_count == len(shown), f"{where}: message_count"
            assert session.metadata == obj.metadata(), f"{where}: metadata"
            assert session.has_unsaved_changes == obj.unsaved(), f"{where}: has_unsaved_changes"
            assert self._structure(session) == self._model_structure(obj.session), (
                f"{where}: parent_id/fork_point/root_id"
            )
            assert self.uid_of[session.id] == obj.session.uid, f"{where}: id"
            pairs = session.get_messages_with_ids()
            assert _plain([m for _, m in pairs]) == _model_plain(shown), f"{where}: messages"
            saved = len(obj.view())
            ids = [i for i, _ in pairs]
            assert ids[saved:] == [None] * len(obj.pending), f"{where}: ids of unsaved ones"
            stored = [i for i in ids[:saved] if i is not None]
            assert len(stored) == saved, f"{where}: a saved message without an id"
            assert stored == sorted(set(stored)), f"{where}: ids not ascending: {stored}"
            for real_id, message in zip(stored, shown[:saved], strict=True):
                known = self.id_of.setdefault(message.uid, real_id)
                assert known == real_id, (
                    f"{where}: message {message.content!r} has id {real_id}, elsewhere {known}"
                )
                if self.backend != "custom":  # its ids are the session's own
                    other = self.message_of.setdefault(real_id, message.uid)
                    assert other == message.uid, f"{where}: id {real_id} is two messages"

    @invariant()
    def navigation_agrees(self) -> None:
        """get_session_info, get_tree, list_branches, get_lineage, get_messages: one name
        a step, in turn (a missing one too)."""
        self.steps += 1
        self.since_open += 1
        pool = NAMES + [n for n in self._names() if n not in NAMES]
        name = pool[self.steps % len(pool)]
        where = f"backend {self.backend}: {name!r}"
        session = self.model.find(name)
        info = self.m.get_session_info(name)
        if session is None:
            assert info is None, f"{where}: get_session_info"
        else:
            assert info is not None, f"{where}: get_session_info"
            got = (info.message_count, info.metadata, *self._structure(info))
            want = (len(session.messages), session.metadata, *self._model_structure(session))
            assert got == want, f"{where}: get_session_info"

        def uids(infos: list[SessionInfo]) -> list[int | None]:
            return [self._uid(i.id) for i in infos]

        real, model = self._both(lambda: uids(self.m.get_tree(name)), lambda: self.model.tree(name))
        assert real == model, f"{where}: get_tree"
        real, model = self._both(
            lambda: uids(self.m.list_branches(name)), lambda: self.model.branches(name)
        )
        assert real == model, f"{where}: list_branches"
        held = self.objects.get(name)
        if held is not None and session is not None:
            assert uids(held.get_lineage()) == self.model.lineage(session), f"{where}: lineage"
            plain = _model_plain(self.model.objects[name].shown())
            limit = self.steps % 4
            tail = plain[max(0, len(plain) - limit) :] if limit else []
            assert _plain(held.get_messages(limit)) == tail, f"{where}: get_messages({limit})"

    @invariant()
    def storage_agrees(self) -> None:
        """SQL backends: the message rows are exactly the saved messages live sessions show."""
        if not self.sql:
            return
        where = f"backend {self.backend}: storage"
        if self.store.url is not None:
            if self.pg is None:
                self.pg = PgConnection(self.store.url)
            rows = self.pg.execute(STORAGE_SQL)
        else:
            rows = self.store.execute(STORAGE_SQL)
        messages = {int(r[1]): r for r in rows if r[0] == "m"}
        assert all(r[2] is not None for r in messages.values()), (
            f"{where}: message rows of no session: {[i for i, r in messages.items() if r[2] is None]}"
        )
        unshown = sorted(i for i, r in messages.items() if not r[3])
        assert not unshown, f"{where}: message rows nobody shows: {unshown}"
        empty = [r for r in rows if r[0] == "h"]
        assert not empty, f"{where}: {len(empty)} empty holder(s)"
        stray = [r[1] for r in rows if r[0] == "g"]
        assert not stray, f"{where}: segments of no live session: {stray}"
        # a segment's count and size are its rows', which are consecutive places of their
        # owner (what a fork or truncation inside it counts by)
        miscounted = [r[1] for r in rows if r[0] == "p"]
        assert not miscounted, f"{where}: segments not matching their rows: {miscounted}"
        view = self.pg.execute(VIEW_SQL) if self.pg is not None else self.store.execute(VIEW_SQL)
        shown: dict[int, list[int]] = {}
        for session_id, message_id in view:
            shown.setdefault(self.uid_of[str(session_id)], []).append(int(message_id))
        want_view = {
            s.uid: [self._message_id(m) for m in s.messages]
            for s in self.model.live()
            if s.messages
        }
        assert shown == want_view, f"{where}: session_view"
        expected = {self._message_id(m) for s in self.model.live() for m in s.messages}
        got = set(messages)
        assert got == expected, (
            f"{where}: rows {sorted(got - expected)} kept, {sorted(expected - got)} missing"
        )
        if self.forked:
            assert self.rows is None or got == self.rows, f"{where}: a fork changed rows"
        self.forked = False
        self.rows = got


def _refuse() -> None:
    raise InvalidMessageError("negative")


@pytest.mark.parametrize("backend", BACKENDS)
def test_branching_model(backend: str, tmp_path: Path) -> None:
    template = empty_database(backend, tmp_path)
    run_state_machine_as_test(
        partial(BranchingMachine, backend, template),  # type: ignore[arg-type]  # a factory works
        settings=settings(
            max_examples=EXAMPLES[backend],
            stateful_step_count=STEPS,
            deadline=None,
            # no "explain" phase: it reruns the failing example under coverage, slowly
            phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
