"""Differential test: random operation sequences on a real backend and on a plain model.

A :class:`hypothesis.stateful.RuleBasedStateMachine` drives the blocking API
(``SessionManager``, autosave off, so nothing is written behind the test's back) on each
backend, and a plain-Python model of what the README promises:

* ``create_session(name)`` creates, or resumes: a new object showing the *saved* state
  (``exist_ok=False`` on an existing name: ``SessionExistsError``);
* a session object is a view as of its load or last save plus its own unsaved changes
  (appended messages, a truncation of what it saw keeping the newest ``k``, a metadata
  patch); its counts and cached messages are as of that load or save, and saved messages
  outside its cache are read from storage: only after another writer truncated or deleted
  the session may those reads (and ``get_token_count()``) show less, what storage holds now;
* ``save_session`` appends, truncates only messages the object had seen, merges metadata
  key by key, and afterwards the object shows the stored state; saving with no changes
  writes nothing; saving a deleted session raises ``SessionNotFoundError`` and keeps the
  changes on the object;
* a branch copies the source's saved messages and metadata; an existing target raises
  ``SessionExistsError``, a missing source ``SessionNotFoundError``;
* reopening (a new manager on the same storage) shows exactly what was saved;
* invalid input (NaN, a malformed timestamp, negative counts) raises
  ``InvalidMessageError`` and changes nothing; any string (NUL characters, lone
  surrogates, the stored form's escape character ``␛``) is kept exactly.

The "user" holds up to two objects per name (two parts of a program, or two processes), so
objects that save into the same session meanwhile are exercised too. After every step the
observable state must agree: ``list_sessions()`` (names, order, ``message_count``,
``metadata``), ``get_session_info()``, and each held object's ``message_count``,
``metadata``, ``has_unsaved_changes`` and ``get_token_count()`` (the README's estimate over
the object's view). ``get_messages()`` is a rule of its own and is never called between
steps, so the test does not warm an object's cache on its own. Errors must agree too: the
same exception type from the backend and from the model.

Sequences the machine found are also replayed as plain tests (``REPLAYS`` at the end), as
random search finds some of them only now and then.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, currently_in_test_context, settings, target
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
    SessionManager,
    SessionNotFoundError,
    UnsavedChangesWarning,
)
from tests.support import BACKENDS, Store

NAMES = ["a", "b", "c"]
# two handles per name, as two parts of a program (or two processes) would hold: the
# README's rules for objects that save into the same session meanwhile are part of the model
SLOTS = [0, 1]
# message_cache_size only bounds memory: what an object shows must not depend on it
CACHE_SIZES = [1000, 3, 0]
META_KEYS = ["k1", "k2", "k3"]
ROLES = ["user", "assistant", "tool"]

# contents: a short text, a long text (stored zlib-compressed), JSON values, and invalid
# ones (NUL, NaN) that every backend must refuse alike with InvalidMessageError
CONTENT_KINDS = [*["text"] * 6, "long", "none", "parts", "dict", "long-parts", "odd-text", "nan"]
# a given timestamp comes back exactly as given; an invalid one is refused
TIMESTAMPS: list[str | None] = [
    *[None] * 6,
    "2026-11-24T21:58:54.123456+00:00",
    "2020-01-01T00:00:00",
    "not-a-date",
]
META_VALUES: list[Any] = [
    *[0, 1, "x", None, [1, "two"], {"nested": True}, math.nan],
    {"a\x00\udc80": "\u241b0000\ud800"},
]

# examples per backend, sized for well under a minute in all (each SQLite example copies
# an empty migrated database; the memory backend is cheapest, so it explores most)
EXAMPLES = {"memory": 200, "sqlite": 100, "sqlite-core": 40, "custom": 40, "postgresql": 30}
STEPS = 50


def _invalid(value: Any) -> bool:
    """True if the README's value rules reject ``value`` (the model's own check)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(_invalid(v) for v in value)
    if isinstance(value, dict):
        return any(_invalid(v) for v in value.values())
    return False


# -- the model ---------------------------------------------------------------------------


@dataclass
class MMessage:
    role: str
    content: Any
    timestamp: str | None  # None: generated by the library (only its presence is checked)
    id: int = 0  # storage key, set when saved

    def characters(self) -> int:
        # README: characters of role, content and extra keys. A text content counts as its
        # text; any other JSON value as stored uncompressed, among the extra keys: the
        # compact JSON {"content": ...} (these messages have no other extra key). Stored
        # compressed or not, on any backend, it must count the same.
        if isinstance(self.content, str):
            return len(self.role) + len(self.content)
        extra = json.dumps({"content": self.content}, ensure_ascii=False, separators=(",", ":"))
        return len(self.role) + len(extra)


@dataclass
class MSession:
    uid: int
    name: str
    messages: list[MMessage] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    writes: int = 0  # saves that wrote something


@dataclass
class MObject:
    """A session object: a view of the saved state plus its own unsaved changes."""

    uid: int
    name: str
    view: list[MMessage]  # the saved messages it shows (its snapshot, maybe truncated)
    upto: int  # the newest storage key it has seen
    metadata: dict[str, Any]
    keep: int | None = None  # a pending truncation of the saved messages
    pending: list[MMessage] = field(default_factory=list)
    patch: dict[str, Any] = field(default_factory=dict)
    writes: int = 0  # the session's writes as of its snapshot

    def messages(self) -> list[MMessage]:
        return self.view + self.pending

    def tokens(self, saved: list[MMessage] | None = None) -> int:
        """README: ceil(characters / 4) over role, content and extra keys, + 4 a message
        (of the object's view, or of ``saved`` and its unsaved messages)."""
        messages = (self.view if saved is None else saved) + self.pending
        chars = sum(m.characters() for m in messages)
        return math.ceil(chars / 4) + 4 * len(messages)

    def unsaved(self) -> bool:
        return bool(self.pending or self.keep is not None or self.patch)

    def truncate(self, keep: int) -> None:
        excess = len(self.view) + len(self.pending) - keep
        if excess <= 0:
            return
        drop_saved = min(excess, len(self.view))
        if drop_saved:
            self.view = self.view[drop_saved:]
            self.keep = len(self.view)
        if excess > drop_saved:
            self.pending = self.pending[excess - drop_saved :]


class Model:
    """Storage as the README describes it, in plain Python."""

    def __init__(self) -> None:
        self.sessions: dict[str, MSession] = {}  # in creation order: list_sessions' order
        self._next_uid = 1
        self._next_id = 1  # storage keys: monotonic, never reused

    def _new(self, name: str) -> MSession:
        session = MSession(self._next_uid, name)
        self._next_uid += 1
        self.sessions[name] = session
        return session

    def by_uid(self, uid: int) -> MSession | None:
        for session in self.sessions.values():
            if session.uid == uid:
                return session
        return None

    def surviving(self, obj: MObject) -> list[MMessage]:
        """The saved messages of the object's view that storage still holds (another
        writer may have truncated or deleted the session since the object's load or save:
        deletions take the oldest first, so these are the newest of the view)."""
        session = self.by_uid(obj.uid)
        held = set() if session is None else {m.id for m in session.messages}
        return [m for m in obj.view if m.id in held]

    def _append(self, session: MSession, messages: list[MMessage]) -> None:
        for message in messages:
            session.messages.append(
                MMessage(
                    message.role, copy.deepcopy(message.content), message.timestamp, self._next_id
                )
            )
            self._next_id += 1

    @staticmethod
    def snapshot(session: MSession) -> MObject:
        return MObject(
            uid=session.uid,
            name=session.name,
            view=list(session.messages),
            upto=session.messages[-1].id if session.messages else 0,
            metadata=copy.deepcopy(session.metadata),
            writes=session.writes,
        )

    def create(self, name: str, exist_ok: bool) -> MObject:
        session = self.sessions.get(name)
        if session is None:
            session = self._new(name)
        elif not exist_ok:
            raise SessionExistsError(name)
        return self.snapshot(session)

    def load(self, name: str) -> MObject:
        session = self.sessions.get(name)
        if session is None:
            raise SessionNotFoundError(name)
        return self.snapshot(session)

    def branch(self, source: str, name: str) -> MObject:
        if source not in self.sessions:
            raise SessionNotFoundError(source)
        if name in self.sessions:
            raise SessionExistsError(name)
        src = self.sessions[source]
        session = self._new(name)
        session.metadata = copy.deepcopy(src.metadata)
        self._append(session, src.messages)
        return self.snapshot(session)

    def delete(self, name: str, missing_ok: bool) -> None:
        if name not in self.sessions:
            if missing_ok:
                return
            raise SessionNotFoundError(name)
        del self.sessions[name]

    def save(self, obj: MObject) -> None:
        if not obj.unsaved():
            return  # nothing to write: no storage access, no error
        session = self.by_uid(obj.uid)
        if session is None:
            raise SessionNotFoundError(obj.name)  # the object keeps its unsaved changes
        session.writes += 1
        if obj.keep is not None:
            seen = [m for m in session.messages if m.id <= obj.upto]
            drop = max(0, len(seen) - obj.keep)
            del session.messages[:drop]  # the seen ones are the oldest
        self._append(session, obj.pending)
        session.metadata.update(copy.deepcopy(obj.patch))
        # afterwards the object shows the stored state
        fresh = self.snapshot(session)
        obj.view, obj.upto, obj.metadata = fresh.view, fresh.upto, fresh.metadata
        obj.writes = fresh.writes
        obj.keep, obj.pending, obj.patch = None, [], {}


# -- the machine -------------------------------------------------------------------------

Outcome = tuple[str, Any]  # ("ok", value) or ("error", exception type)


def _outcome(fn: Callable[[], Any]) -> Outcome:
    try:
        return ("ok", fn())
    except (SessionExistsError, SessionNotFoundError, InvalidMessageError) as exc:
        return ("error", type(exc))


def _text(name: str, n: int) -> str:
    """A distinct short text whose length varies in steps of 4 characters (one token), so
    that the token count notices which messages an object shows, not only how many."""
    return f"{name}-{n}" + "." * (4 * (n % 5))


def _plain(message: dict[str, Any]) -> tuple[str, Any]:
    return (message["role"], message["content"])


def empty_database(backend: str, where: Path) -> Path | None:
    """An empty, migrated database file to copy for each example (SQLite backends): much
    cheaper than creating and migrating one per example."""
    store = Store(backend, where / "template")
    if store.database is None:
        return None
    config = store.config.model_copy(update={"autosave_interval": 0})
    with SessionManager(config, store.repository(private_loop=True)) as manager:
        assert manager.list_sessions() == []
    assert store.database is not None
    return store.database


class DifferentialMachine(RuleBasedStateMachine):
    def __init__(self, backend: str, template: Path | None = None) -> None:
        super().__init__()
        self.backend = backend
        self.tmp = Path(tempfile.mkdtemp(prefix="coda-diff-"))
        self.store = Store(backend, self.tmp / "sessions")
        if template is not None:
            self.store.path.mkdir(mode=0o700)
            shutil.copy2(template, self.store.path / template.name)
        self.config = self.store.config
        self.manager: SessionManager | None = None
        self.model = Model()
        # the objects the "user" holds: (name, slot) -> the last one returned for it
        self.objects: dict[tuple[str, int], tuple[Session, MObject]] = {}
        self.counter = 0
        self.wrote = False  # anything written since the manager was opened
        self.stale_steps = 0  # steps on objects whose session changed behind their back
        self.steps = 0

    def _open(self) -> None:
        self.manager = SessionManager(self.config, self.store.repository(private_loop=True))

    def _close(self) -> None:
        if self.manager is not None:
            manager, self.manager = self.manager, None
            # autosave off: the model drops unsaved changes here, as the manager does
            # (its UnsavedChangesWarning naming them is tested in test_lifecycle.py)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UnsavedChangesWarning)
                manager.close()

    @property
    def m(self) -> SessionManager:
        assert self.manager is not None
        return self.manager

    def teardown(self) -> None:
        if currently_in_test_context():  # not in a replay (below)
            # steer the search towards objects whose session changed (or went) behind
            # their back: the README's rules for those are the subtle part
            target(self.stale_steps, label="steps on stale objects")
        try:
            self._close()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _both(self, real: Callable[[], Any], model: Callable[[], Any]) -> tuple[Any, Any]:
        """Run one operation on both sides; demand the same outcome kind and error type."""
        expected = _outcome(model)
        actual = _outcome(real)
        assert actual[0] == expected[0] and (actual[0] == "ok" or actual[1] is expected[1]), (
            f"backend {self.backend}: got {actual!r}, the model says {expected!r}"
        )
        return actual[1], expected[1]

    def _pick(self, data: st.DataObject) -> tuple[tuple[str, int], Session, MObject]:
        """One of the objects held now (the rules that use it require one)."""
        key = data.draw(st.sampled_from(sorted(self.objects)), label="object")
        session, obj = self.objects[key]
        stored = self.model.by_uid(obj.uid)
        if stored is None or stored.writes != obj.writes:
            self.stale_steps += 1
        return key, session, obj

    # -- rules ----------------------------------------------------------------------------

    @initialize(cache=st.sampled_from(CACHE_SIZES))
    def open_manager(self, cache: int) -> None:
        # autosave off: nothing is written behind the test's back (nor on close)
        self.config = self.store.config.model_copy(
            update={"autosave_interval": 0, "message_cache_size": cache}
        )
        self._open()
        # start with an object in hand, so that every rule can run from the first step
        self.create(NAMES[0], SLOTS[0], exist_ok=True)

    @rule(
        name=st.sampled_from(NAMES),
        slot=st.sampled_from(SLOTS),
        exist_ok=st.sampled_from([True, True, True, False]),
    )
    def create(self, name: str, slot: int, exist_ok: bool) -> None:
        self.wrote |= name not in self.model.sessions  # a new session is stored at once
        real, model = self._both(
            lambda: self.m.create_session(name, exist_ok=exist_ok),
            lambda: self.model.create(name, exist_ok),
        )
        if isinstance(real, Session):
            self.objects[name, slot] = (real, model)

    @rule(name=st.sampled_from(NAMES), slot=st.sampled_from(SLOTS))
    def load(self, name: str, slot: int) -> None:
        real, model = self._both(lambda: self.m.load_session(name), lambda: self.model.load(name))
        if isinstance(real, Session):
            self.objects[name, slot] = (real, model)

    @precondition(lambda self: bool(self.objects))
    @rule(
        data=st.data(),
        role=st.sampled_from(ROLES),
        kind=st.sampled_from(CONTENT_KINDS),
        timestamp=st.sampled_from(TIMESTAMPS),
        and_save=st.booleans(),
    )
    def add(
        self, data: st.DataObject, role: str, kind: str, timestamp: str | None, and_save: bool
    ) -> None:
        key, session, obj = self._pick(data)
        self.counter += 1
        n = self.counter
        content: Any = {
            "text": _text(key[0], n),
            "long": f"{key[0]}-{n} " + "lorem ipsum " * 120,
            "none": None,
            "parts": [{"type": "text", "text": _text(key[0], n)}],
            "dict": {"n": n},
            "long-parts": [{"type": "text", "text": f"{key[0]}-{n} " + "lorem ipsum " * 120}],
            "odd-text": f"{key[0]}-{n}\x00\udc80\u241b0000",
            "nan": {"n": math.nan},
        }[kind]
        message: dict[str, Any] = {"role": role, "content": content}
        if timestamp is not None:
            message["timestamp"] = timestamp

        def model() -> None:
            if _invalid(content) or timestamp == "not-a-date":
                raise InvalidMessageError("invalid message")
            obj.pending.append(MMessage(role, copy.deepcopy(content), timestamp))

        self._both(lambda: session.add_message(message), model)
        if and_save:
            self._save(session, obj)

    @precondition(lambda self: bool(self.objects))
    @rule(
        data=st.data(),
        count=st.integers(0, 3),
        bad=st.sampled_from([False, False, True]),
        and_save=st.booleans(),
    )
    def set_messages(self, data: st.DataObject, count: int, bad: bool, and_save: bool) -> None:
        key, session, obj = self._pick(data)
        messages: list[dict[str, Any]] = []
        for i in range(count):
            self.counter += 1
            text: Any = _text(key[0], self.counter)
            messages.append(
                {"role": "user", "content": [math.nan] if bad and i == count - 1 else text}
            )

        def model() -> None:
            if any(_invalid(m["content"]) for m in messages):
                raise InvalidMessageError("invalid message")  # nothing changes
            obj.truncate(0)
            obj.pending.extend(MMessage(m["role"], m["content"], None) for m in messages)

        self._both(lambda: session.set_messages(messages), model)
        if and_save:
            self._save(session, obj)

    @precondition(lambda self: bool(self.objects))
    @rule(data=st.data())
    def save(self, data: st.DataObject) -> None:
        _key, session, obj = self._pick(data)
        self._save(session, obj)

    def _save(self, session: Session, obj: MObject) -> None:
        self.wrote |= obj.unsaved()
        self._both(lambda: self.m.save_session(session), lambda: self.model.save(obj))

    @precondition(lambda self: bool(self.objects))
    @rule(
        data=st.data(),
        keep=st.integers(-1, 4),
        and_save=st.booleans(),
    )
    def truncate(self, data: st.DataObject, keep: int, and_save: bool) -> None:
        _key, session, obj = self._pick(data)

        def model() -> None:
            if keep < 0:
                raise InvalidMessageError("negative")
            obj.truncate(keep)

        self._both(lambda: session.truncate_messages(keep), model)
        if and_save:
            self._save(session, obj)

    @precondition(lambda self: bool(self.objects))
    @rule(
        data=st.data(),
        and_save=st.booleans(),
    )
    def clear(self, data: st.DataObject, and_save: bool) -> None:
        _key, session, obj = self._pick(data)
        self._both(session.clear_messages, lambda: obj.truncate(0))
        if and_save:
            self._save(session, obj)

    @precondition(lambda self: bool(self.objects))
    @rule(
        data=st.data(),
        key=st.sampled_from(META_KEYS),
        value=st.sampled_from(META_VALUES),
        and_save=st.booleans(),
    )
    def update_metadata(self, data: st.DataObject, key: str, value: Any, and_save: bool) -> None:
        _held, session, obj = self._pick(data)

        def model() -> None:
            if _invalid(value):
                raise InvalidMessageError("invalid metadata")
            obj.metadata[key] = copy.deepcopy(value)
            obj.patch[key] = copy.deepcopy(value)

        self._both(lambda: session.update_metadata({key: value}), model)
        if and_save:
            self._save(session, obj)

    @rule(source=st.sampled_from(NAMES), name=st.sampled_from(NAMES), slot=st.sampled_from(SLOTS))
    def branch(self, source: str, name: str, slot: int) -> None:
        both_wrong = source not in self.model.sessions and name in self.model.sessions
        expected = _outcome(lambda: self.model.branch(source, name))
        actual = _outcome(lambda: self.m.create_session(name, branch_from=source))
        if both_wrong:
            # a missing source and an existing target: the README does not say which wins
            allowed = {SessionNotFoundError, SessionExistsError}
            assert actual[0] == "error" and actual[1] in allowed, actual
            return
        assert actual[0] == expected[0] and (actual[0] == "ok" or actual[1] is expected[1]), (
            f"backend {self.backend}: got {actual!r}, the model says {expected!r}"
        )
        if actual[0] == "ok":
            self.objects[name, slot] = (actual[1], expected[1])
            self.wrote = True

    # deleting is the most destructive step (it ends every object of the session): only
    # while there is more than one session, so that the rest of the example has something
    @precondition(lambda self: len(self.model.sessions) > 1)
    @rule(name=st.sampled_from(NAMES), missing_ok=st.booleans())
    def delete(self, name: str, missing_ok: bool) -> None:
        self._both(
            lambda: self.m.delete_session(name, missing_ok=missing_ok),
            lambda: self.model.delete(name, missing_ok),
        )

    # only once something was written since the last (re)open: reopening drops every
    # object, so reopening an unchanged store would only thin out the interesting steps
    @precondition(lambda self: self.wrote)
    @rule()
    def reopen(self) -> None:
        # autosave is off: closing writes nothing, unsaved changes are lost
        self._close()
        self.objects.clear()
        self.wrote = False
        self._open()

    @precondition(lambda self: bool(self.objects))
    @rule(data=st.data(), limit=st.none() | st.integers(-1, 6))
    def get_messages(self, data: st.DataObject, limit: int | None) -> None:
        key, session, obj = self._pick(data)

        def model() -> list[MMessage]:
            if limit is not None and limit < 0:
                raise InvalidMessageError("negative")
            messages = obj.messages()
            if limit is None:
                return messages
            return messages[max(0, len(messages) - limit) :] if limit else []

        real, expected = self._both(lambda: session.get_messages(limit=limit), model)
        if not isinstance(real, list):
            return
        where = f"backend {self.backend}: get_messages({limit}) of object {key}"
        surviving = self.model.surviving(obj)
        if len(surviving) < len(obj.view):
            # README: another writer truncated or deleted the session since this object's
            # load or save. Its cached messages are as of then; saved messages outside its
            # cache are read from storage, which holds only the newest of them now. So the
            # saved part is the newest k of the view's, for some k between what storage
            # still holds and all of them; the unsaved part is exact.
            unsaved = min(len(obj.pending), len(expected))
            saved_part = expected[: len(expected) - unsaved]
            unsaved_part = expected[len(expected) - unsaved :]
            k = len(real) - unsaved
            held = {m.id for m in surviving}
            least = sum(1 for m in saved_part if m.id in held)
            assert least <= k <= len(saved_part), f"{where}: {k} saved messages"
            expected = saved_part[len(saved_part) - k :] + unsaved_part
        assert [_plain(m) for m in real] == [(m.role, m.content) for m in expected], where
        for got, want in zip(real, expected, strict=True):
            # messages come back exactly: a timestamp key only when one was given
            if want.timestamp is not None:
                assert got["timestamp"] == want.timestamp, (got, want)
            else:
                assert "timestamp" not in got, got

    # -- invariants -----------------------------------------------------------------------

    @precondition(lambda self: self.manager is not None)
    @invariant()
    def sessions_agree(self) -> None:
        listed = self.m.list_sessions()
        actual = [(i.name, i.message_count, i.metadata) for i in listed]
        expected = [(s.name, len(s.messages), s.metadata) for s in self.model.sessions.values()]
        assert actual == expected, f"backend {self.backend}: list_sessions()"
        # one name a step (in turn) keeps the cost of a step down
        self.steps += 1
        name = NAMES[self.steps % len(NAMES)]
        info = self.m.get_session_info(name)
        session = self.model.sessions.get(name)
        got = None if info is None else (info.message_count, info.metadata)
        want = None if session is None else (len(session.messages), session.metadata)
        assert got == want, f"backend {self.backend}: get_session_info({name!r})"

    @invariant()
    def objects_agree(self) -> None:
        # separate asserts, so that hypothesis reports distinct discrepancies separately
        for key, (session, obj) in self.objects.items():
            where = f"backend {self.backend}: object {key}"
            assert session.message_count == len(obj.messages()), f"{where}: message_count"
            assert session.metadata == obj.metadata, f"{where}: metadata"
            assert session.has_unsaved_changes == obj.unsaved(), f"{where}: has_unsaved_changes"
            # counted from the cache when it holds the whole view, else by the storage
            # (without loading messages or touching the cache): if another writer
            # truncated or deleted the session meanwhile, storage counts what it holds now
            tokens = session.get_token_count()
            surviving = self.model.surviving(obj)
            allowed = {obj.tokens()}
            if len(surviving) < len(obj.view):
                allowed.add(obj.tokens(surviving))
            assert tokens in allowed, f"{where}: get_token_count() {tokens} not in {allowed}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_differential(backend: str, tmp_path: Path) -> None:
    template = empty_database(backend, tmp_path)
    run_state_machine_as_test(
        partial(DifferentialMachine, backend, template),  # type: ignore[arg-type]  # a factory works
        settings=settings(
            max_examples=EXAMPLES[backend],
            stateful_step_count=STEPS,
            deadline=None,
            # no "explain" phase: it reruns the failing example under coverage, slowly
            phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


# -- replays ------------------------------------------------------------------------------
# Sequences the machine found, replayed on every run (random search finds some of them only
# now and then). Each step is a rule with its arguments; "key" names the object that
# hypothesis drew. The invariants are checked after every step, as in the machine.

REPLAYS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    # another writer replaces what an object saw with as many new messages; the object's
    # next save must leave it showing the stored messages, not its old cache plus its own
    "save after another writer replaced the messages": [
        ("open_manager", {"cache": 1000}),
        (
            "add",
            {"key": ("a", 0), "role": "user", "kind": "text", "timestamp": None, "and_save": True},
        ),
        ("load", {"name": "a", "slot": 1}),
        ("set_messages", {"key": ("a", 0), "count": 1, "bad": False, "and_save": True}),
        (
            "add",
            {"key": ("a", 1), "role": "user", "kind": "text", "timestamp": None, "and_save": True},
        ),
        ("get_messages", {"key": ("a", 1), "limit": None}),
    ],
    # the same with a save that writes only metadata: the object's stale messages stay
    "metadata-only save after another writer replaced the messages": [
        ("open_manager", {"cache": 1000}),
        ("set_messages", {"key": ("a", 0), "count": 1, "bad": False, "and_save": True}),
        ("load", {"name": "a", "slot": 1}),
        ("set_messages", {"key": ("a", 1), "count": 1, "bad": False, "and_save": True}),
        ("update_metadata", {"key": ("a", 0), "meta_key": "k1", "value": 0, "and_save": True}),
        ("get_messages", {"key": ("a", 0), "limit": None}),
    ],
    # after a save the object shows the stored metadata, also another writer's keys
    "metadata after another writer": [
        ("open_manager", {"cache": 1000}),
        ("load", {"name": "a", "slot": 1}),
        ("update_metadata", {"key": ("a", 0), "meta_key": "k1", "value": 0, "and_save": True}),
        (
            "add",
            {"key": ("a", 1), "role": "user", "kind": "text", "timestamp": None, "and_save": True},
        ),
    ],
    # a JSON content stored compressed counts as many characters as stored plainly (two
    # short texts first, so that one character less would show as one token less)
    "token count of a compressed JSON content": [
        ("open_manager", {"cache": 1000}),
        *[
            (
                "add",
                {
                    "key": ("a", 0),
                    "role": "user",
                    "kind": kind,
                    "timestamp": None,
                    "and_save": False,
                },
            )
            for kind in ["text", "text", "long-parts"]
        ],
        ("save", {"key": ("a", 0)}),
        ("reopen", {}),
        ("load", {"name": "a", "slot": 0}),
    ],
}


class _Chosen:
    """Stands in for hypothesis' data object in a replay: "draws" the named object."""

    def __init__(self, key: tuple[str, int]) -> None:
        self.key = key

    def draw(self, strategy: Any, label: Any = None) -> tuple[str, int]:
        return self.key


@pytest.mark.parametrize("replay", list(REPLAYS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_differential_replay(backend: str, replay: str, tmp_path: Path) -> None:
    machine = DifferentialMachine(backend, empty_database(backend, tmp_path))
    try:
        for rule_name, arguments in REPLAYS[replay]:
            kwargs = dict(arguments)
            if "key" in kwargs:
                kwargs["data"] = _Chosen(kwargs.pop("key"))
            if "meta_key" in kwargs:
                kwargs["key"] = kwargs.pop("meta_key")
            getattr(machine, rule_name)(**kwargs)
            machine.sessions_agree()
            machine.objects_agree()
    finally:
        machine.teardown()
