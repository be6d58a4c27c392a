"""Writes on one branching tree that run into each other (issue 16, item 2).

A source's truncate, clear, pop or delete rewrites the segments of its branches (their
views of its rows) and moves rows to holders; a branch's own pop, truncate or delete
rewrites the same segments. Each interleaving is run deterministically: the first
operation is held mid-way by another connection (on PostgreSQL a row lock on a row it is
about to write, after it has read the segments; on SQLite the write lock, which holds it
before it starts), the second runs (or waits) meanwhile, then the hold is released. After
each: every session shows what it must (contents and ids), its counters equal its view,
storage keeps exactly the rows some session shows, no operation failed, and deleting every
session leaves no row, and neither operation needed a second attempt. The outcome of
each pair does not depend on the order they end up in, so the same expectations hold on
every backend. A few interleavings, and appends waiting for a row, run again on a
PostgreSQL database whose default isolation is REPEATABLE READ.

A randomized test runs a few real processes doing forks, pops, truncations, clears,
deletes and appends on one tree, with the same checks at the end.

Runs on both SQLite paths and both PostgreSQL paths (the library's asyncpg runner and
SQLAlchemy's engine, ``postgresql-core``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from coda_session import (
    AsyncSession,
    AsyncSessionManager,
    SessionConfig,
    SessionError,
    SessionNotFoundError,
)
from coda_session.repository.sql import SqlRepository
from tests.support import BACKENDS, PG_SKIP_REASON, Store, postgres_url

TS = "2025-01-01T00:00:00"

POSTGRESQL_PATHS = [
    *(p for p in BACKENDS if p.id == "postgresql"),
    pytest.param(
        "postgresql-core",
        marks=[
            pytest.mark.postgresql,
            pytest.mark.skipif(postgres_url() is None, reason=PG_SKIP_REASON),
        ],
        id="postgresql-core",
    ),
]
"""PostgreSQL through the library's asyncpg runner and through SQLAlchemy's engine
(``fast_path=False``)."""
TREE_BACKENDS = [*(p for p in BACKENDS if p.id in ("sqlite", "sqlite-core")), *POSTGRESQL_PATHS]
"""Every SQL backend, PostgreSQL on both paths."""

HANG = 60.0
"""Seconds after which a step that never comes is a failure (a guard, not a measure)."""


def msg(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text, "timestamp": TS}


class Tree:
    """Managers on one backend's store; ``postgresql-core`` and ``sqlite-core`` run
    through SQLAlchemy's engine."""

    def __init__(self, backend: str, path: Path) -> None:
        self.backend = backend
        self.store = Store("postgresql" if backend.startswith("postgresql") else backend, path)

    @property
    def on_postgresql(self) -> bool:
        return self.store.url is not None

    def manager(self, **settings: Any) -> AsyncSessionManager:
        config = self.store.config.model_copy(update={"autosave_interval": 0, **settings})
        if self.backend == "postgresql-core":
            return AsyncSessionManager(config, SqlRepository(config, fast_path=False))
        if self.backend == "postgresql":
            return AsyncSessionManager(config, SqlRepository(config))
        if self.backend == "sqlite-core":
            return AsyncSessionManager(config, SqlRepository(config, fast_path=False))
        return self.store.async_manager(**{"autosave_interval": 0, **settings})

    def execute(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return self.store.execute(sql, *params)


@contextlib.asynccontextmanager
async def managers(tree: Tree, n: int) -> AsyncIterator[list[AsyncSessionManager]]:
    made = [tree.manager() for _ in range(n)]
    try:
        yield made
    finally:
        for m in made:
            await m.close()


# -- holding an operation mid-way ----------------------------------------------------------


class Hold:
    """Another program's connection holding a lock the library will wait for.

    On PostgreSQL it holds the rows a query names ``FOR UPDATE``: an operation that
    writes one of them waits there, after everything it read before. On SQLite it holds
    the write lock (``BEGIN IMMEDIATE``): every write waits before it starts."""

    def __init__(self, tree: Tree) -> None:
        self._tree = tree
        self._pg: asyncpg.Connection | None = None
        self._sqlite: sqlite3.Connection | None = None

    async def start(self, pg_rows_query: str, *params: Any) -> None:
        if self._tree.on_postgresql:
            url = self._tree.store.url
            assert url is not None
            args = make_url(url).translate_connect_args(username="user")
            self._pg = await asyncpg.connect(**args, timeout=30)
            await self._pg.execute("BEGIN")
            held = await self._pg.fetch(pg_rows_query + " FOR UPDATE", *params)
            assert held, "nothing to hold"
        else:
            database = self._tree.store.database
            assert database is not None
            self._sqlite = sqlite3.connect(database, isolation_level=None)
            self._sqlite.execute("BEGIN IMMEDIATE")

    async def waiting(self) -> int | None:
        """How many of the library's connections wait for a lock now (None on SQLite,
        where a wait cannot be seen from outside)."""
        if self._pg is None:
            return None
        # the statistics views keep one snapshot per transaction: cleared for a fresh look
        await self._pg.execute("SELECT pg_stat_clear_snapshot()")
        found = await self._pg.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        return int(found)

    async def until_waiting(self, n: int, done: asyncio.Future[Any] | None = None) -> None:
        """Until ``n`` connections wait (or ``done`` finished without waiting). On
        SQLite, a moment for the operations to reach the lock."""
        if self._pg is None:
            await asyncio.sleep(0.05)
            return
        deadline = time.monotonic() + HANG
        while (done is None or not done.done()) and (await self.waiting() or 0) < n:
            assert time.monotonic() < deadline, f"never {n} waiting for a lock"
            await asyncio.sleep(0.005)

    async def release(self) -> None:
        if self._pg is not None:
            await self._pg.execute("ROLLBACK")
            await self._pg.close()
            self._pg = None
        if self._sqlite is not None:
            self._sqlite.execute("ROLLBACK")
            self._sqlite.close()
            self._sqlite = None


# -- checks ---------------------------------------------------------------------------------

View = list[tuple[int, str]]
"""What a session shows: (message id, content), oldest first."""


async def view(m: AsyncSessionManager, name: str) -> View:
    s = await m.load_session(name)
    return [(int(i or 0), str(d["content"])) for i, d in await s.get_messages_with_ids()]


async def check_tree(tree: Tree, expected: Mapping[str, View | list[str]]) -> list[str]:
    """Every difference between storage and ``expected`` (the sessions that must exist
    and what each shows: (id, content) pairs, or contents only), as readable lines; none
    when all is well. Every view must be in id order, no id twice."""
    problems: list[str] = []
    sizes = {int(i): int(s) for i, s in tree.execute("SELECT id, size_bytes FROM messages")}
    shown: set[int] = set()
    async with managers(tree, 1) as (reader,):
        infos = {i.name: i for i in await reader.list_sessions()}
        if sorted(infos) != sorted(expected):
            problems.append(f"sessions {sorted(infos)}, expected {sorted(expected)}")
        for name, info in sorted(infos.items()):
            try:
                got = await view(reader, name)
            except Exception as exc:  # reported, not raised: every problem is listed
                problems.append(f"{name}: reading it raised {type(exc).__name__}: {exc}")
                continue
            ids = [i for i, _ in got]
            shown.update(ids)
            if ids != sorted(set(ids)):
                problems.append(f"{name}: ids out of order or repeated: {ids}")
            want = expected.get(name)
            if want and not isinstance(want[0], tuple):
                got_or_contents: list[Any] = [c for _, c in got]
            else:
                got_or_contents = list(got)
            if want is not None and got_or_contents != want:
                problems.append(f"{name} shows {got_or_contents}, expected {want}")
            if info.message_count != len(got):
                problems.append(f"{name}: message_count {info.message_count}, shows {len(got)}")
            size = sum(sizes.get(i, 0) for i in ids)
            if info.size_bytes != size:
                problems.append(f"{name}: size_bytes {info.size_bytes}, its rows {size}")
    leaked = sorted(set(sizes) - shown)
    if leaked:
        problems.append(f"{len(leaked)} message rows no session shows: {leaked[:10]}")
    missing = sorted(shown - set(sizes))
    if missing:
        problems.append(f"shown but not stored: {missing[:10]}")
    return problems


async def delete_all(tree: Tree) -> list[str]:
    """Delete every session; what is left in storage, as problems."""
    async with managers(tree, 1) as (m,):
        for info in await m.list_sessions():
            await m.delete_session(info.name)
    left = [
        int(tree.execute(f"SELECT count(*) FROM {table}")[0][0])
        for table in ("sessions", "messages", "session_segments")
    ]
    return [] if left == [0, 0, 0] else [f"after deleting every session: {left} rows left"]


# -- the interleavings ------------------------------------------------------------------------

A = [f"a{i}" for i in range(8)]
"""The source's messages; ``v`` branches from all of them and adds ``v0``, ``u`` from
the first 5 (a bystander nobody writes)."""

Op = Callable[[AsyncSessionManager, str], Awaitable[Any]]


async def _pop(m: AsyncSessionManager, name: str) -> Any:
    s = await m.load_session(name)
    return [d["content"] for d in await s.pop_messages(3)]


async def _truncate(m: AsyncSessionManager, name: str) -> None:
    s = await m.load_session(name)
    s.truncate_messages(2)
    await m.save_session(s)


async def _clear(m: AsyncSessionManager, name: str) -> None:
    s = await m.load_session(name)
    s.clear_messages()
    await m.save_session(s)


async def _set(m: AsyncSessionManager, name: str) -> None:
    s = await m.load_session(name)
    s.set_messages([msg(f"{name}-set")])
    await m.save_session(s)


async def _append(m: AsyncSessionManager, name: str) -> None:
    s = await m.load_session(name)
    s.add_message(msg(f"{name}-later"))
    await m.save_session(s)


async def _delete(m: AsyncSessionManager, name: str) -> None:
    await m.delete_session(name)


async def _fork(m: AsyncSessionManager, name: str) -> None:
    await m.create_session(f"{name}-fork", branch_from=name)


OPS: dict[str, Op] = {
    "pop": _pop,
    "truncate": _truncate,
    "clear": _clear,
    "set": _set,
    "append": _append,
    "delete": _delete,
    "fork": _fork,
}


def after(op: str, name: str, before: View, new_ids: dict[str, list[int]]) -> dict[str, View]:
    """What ``name`` (and a fork it made) shows after ``op``, from what it showed before;
    ``new_ids`` gives the ids of messages the operation wrote (read back afterwards)."""
    if op == "pop":
        return {name: before[:-3]}
    if op == "truncate":
        return {name: before[-2:]}
    if op == "clear":
        return {name: []}
    if op == "set":
        return {name: [(new_ids[name][0], f"{name}-set")]}
    if op == "append":
        return {name: [*before, (new_ids[name][0], f"{name}-later")]}
    if op == "delete":
        return {}
    assert op == "fork"
    return {name: before, f"{name}-fork": before}


def popped(op: str, before: View) -> Any:
    return [c for _, c in before[-3:]] if op == "pop" else None


async def setup_tree(m: AsyncSessionManager) -> dict[str, View]:
    a = await m.create_session("a", exist_ok=False)
    for text in A:
        a.add_message(msg(text))
    await m.save_session(a)
    v = await m.create_session("v", branch_from="a")
    v.add_message(msg("v0"))
    await m.save_session(v)
    await m.create_session("u", branch_from="a", fork_point=5)
    return {name: await view(m, name) for name in ("a", "v", "u")}


def hold_query(held: str, op: str, views: dict[str, View]) -> tuple[str, list[Any]]:
    """The rows the held operation writes after it has read what the other one changes.

    The source's truncate, clear and delete move its oldest rows (the branches show them)
    to a holder, and its pop its newest: the first row moved is held. A branch's pop,
    truncate and delete rewrite or delete its segment: that row is held."""
    if held == "a":
        row = views["a"][-1][0] if op == "pop" else views["a"][0][0]
        return "SELECT id FROM messages WHERE id = $1", [row]
    return (
        "SELECT g.id FROM session_segments g JOIN sessions s ON s.id = g.session_id "
        "WHERE s.name = $1",
        [held],
    )


# (the held session and its operation, the other session and its operation)
SOURCE_FIRST = [
    (("a", h), ("v", o))
    for h in ("clear", "truncate", "delete", "pop")
    for o in ("pop", "truncate", "clear", "set", "append", "delete", "fork")
]
BRANCH_FIRST = [
    (("v", h), ("a", o)) for h in ("pop", "truncate", "delete") for o in ("clear", "delete", "pop")
]
CASES = [
    pytest.param(held, other, id=f"{held[0]}.{held[1]}-then-{other[0]}.{other[1]}")
    for held, other in SOURCE_FIRST + BRANCH_FIRST
]


async def interleave(
    tree: Tree, held: tuple[str, str], other: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Run ``held`` (session, operation) held mid-way, ``other`` meanwhile, then check;
    neither may have needed a second attempt (a deadlock, a serialization failure)."""
    caplog.set_level(logging.DEBUG, logger="coda_session")
    async with managers(tree, 3) as (setup, hm, om):
        views = await setup_tree(setup)
        hold = Hold(tree)
        query, params = hold_query(held[0], held[1], views)
        await hold.start(query, *params)
        try:
            first = asyncio.ensure_future(OPS[held[1]](hm, held[0]))
            await hold.until_waiting(1, first)
            assert not first.done(), "the held operation was not held"
            second = asyncio.ensure_future(OPS[other[1]](om, other[0]))
            await hold.until_waiting(2, second)
        finally:
            await hold.release()
        outcomes = await asyncio.wait_for(
            asyncio.gather(first, second, return_exceptions=True), HANG
        )
    errors = [f"{type(e).__name__}: {e}" for e in outcomes if isinstance(e, BaseException)]
    assert not errors, errors
    retried = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert not retried, retried
    # the ids of the messages the operations wrote, in the order written
    written: dict[str, list[int]] = {}
    async with managers(tree, 1) as (reader,):
        for name in (held[0], other[0]):
            if await reader.get_session_info(name) is not None:
                written[name] = [i for i, c in await view(reader, name) if "-" in c]
    expected = dict(views)
    for (name, op), outcome in zip((held, other), outcomes, strict=True):
        expected.pop(name)
        expected.update(after(op, name, views[name], written))
        assert outcome == popped(op, views[name]), (name, op)
    problems = await check_tree(tree, expected)
    assert not problems, problems
    problems = await delete_all(tree)
    assert not problems, problems


@pytest.mark.parametrize("backend", TREE_BACKENDS)
@pytest.mark.parametrize(("held", "other"), CASES)
async def test_interleaved_writes_on_one_tree(
    backend: str,
    held: tuple[str, str],
    other: tuple[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await interleave(Tree(backend, tmp_path / "sessions"), held, other, caplog)


@pytest.mark.parametrize("backend", POSTGRESQL_PATHS)
@pytest.mark.parametrize(
    ("held", "other"),
    [
        pytest.param(held, other, id=f"{held[0]}.{held[1]}-then-{other[0]}.{other[1]}")
        for held, other in [
            (("a", "clear"), ("v", "pop")),
            (("a", "delete"), ("v", "truncate")),
            (("a", "pop"), ("v", "delete")),
            (("v", "pop"), ("a", "clear")),
        ]
    ],
)
async def test_interleaved_writes_where_the_server_defaults_to_repeatable_read(
    backend: str,
    held: tuple[str, str],
    other: tuple[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server (or database) whose default isolation is REPEATABLE READ: a write that
    waited for the tree would read a snapshot from before the wait (and fail to
    serialize, and be run again), unless the library asks for READ COMMITTED itself."""
    tree = Tree(backend, tmp_path / "sessions")
    assert tree.store.url is not None
    database = make_url(tree.store.url).database
    tree.execute(
        f"ALTER DATABASE \"{database}\" SET default_transaction_isolation = 'repeatable read'"
    )
    assert tree.execute("SHOW default_transaction_isolation") == [("repeatable read",)]
    await interleave(tree, held, other, caplog)


@pytest.mark.parametrize("backend", POSTGRESQL_PATHS)
async def test_appends_where_the_server_defaults_to_repeatable_read(
    backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two appends to one session wait for its row (held by another program); each then
    writes on the newest committed row, without a serialization failure to run again:
    a plain append is one statement outside any explicit transaction, so the library's
    connections set READ COMMITTED as their default too."""
    caplog.set_level(logging.DEBUG, logger="coda_session")
    tree = Tree(backend, tmp_path / "sessions")
    assert tree.store.url is not None
    database = make_url(tree.store.url).database
    tree.execute(
        f"ALTER DATABASE \"{database}\" SET default_transaction_isolation = 'repeatable read'"
    )
    async with managers(tree, 3) as (setup, m1, m2):
        views = await setup_tree(setup)
        hold = Hold(tree)
        await hold.start("SELECT id FROM sessions WHERE name = $1", "a")
        try:
            appends = [
                asyncio.ensure_future(_append(m, name)) for m, name in ((m1, "a"), (m2, "a"))
            ]
            await hold.until_waiting(2)
        finally:
            await hold.release()
        await asyncio.wait_for(asyncio.gather(*appends), HANG)
    retried = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert not retried, retried
    async with managers(tree, 1) as (reader,):
        got = await view(reader, "a")
    assert got[:-2] == views["a"]
    assert [c for _, c in got[-2:]] == ["a-later", "a-later"]
    problems = await check_tree(tree, {**views, "a": got})
    assert not problems, problems


# -- at random, across processes --------------------------------------------------------------

PROCESSES = 4
STEPS = 100
"""Operations each process runs."""
ROOT_MESSAGES = 20
BASE_MESSAGES = 200
WEIGHTS = [*["fork"] * 3, *["pop"] * 3, "truncate", "clear", "delete", *["append"] * 2]
"""How often each operation is picked: pops reach into what a branch inherited while
its source's rows move."""


def _worker(backend: str, config: dict[str, Any], k: int, seed: int, out: str, go: Any) -> None:
    go.wait(HANG)  # every process starts at once: their operations overlap
    asyncio.run(_work(backend, config, k, seed, Path(out)))


async def _work(backend: str, config_data: dict[str, Any], k: int, seed: int, out: Path) -> None:
    """Process ``k``: random operations on the sessions it owns (named ``p<k>-...``) and
    forks of any session of the tree. What its sessions show is modelled exactly (a
    fork's by a read right after it: nobody else writes it). Writes its model
    ({name: contents}) and every failure to ``out``."""
    rng = random.Random(seed)
    config = SessionConfig.model_validate(config_data)
    fast = backend in ("sqlite", "postgresql")
    m = AsyncSessionManager(config, SqlRepository(config, fast_path=fast))
    model: dict[str, list[str]] = {}
    owned: dict[str, AsyncSession] = {}
    errors: list[str] = []
    try:
        # a source of its own whose rows move when it is truncated, cleared or deleted
        base = f"p{k}-base"
        owned[base] = await m.create_session(base, branch_from="root")
        for i in range(BASE_MESSAGES):
            owned[base].add_message(msg(f"{base}.{i}"))
        await m.save_session(owned[base])
        model[base] = [str(d["content"]) for d in await owned[base].get_messages()]
        for step in range(STEPS):
            choice = rng.choice(WEIGHTS)
            try:
                if choice == "fork" or not owned:
                    sources = [i.name for i in await m.list_sessions()]
                    name = f"p{k}-{step}"
                    try:
                        owned[name] = await m.create_session(name, branch_from=rng.choice(sources))
                    except SessionNotFoundError:
                        continue  # its source was deleted meanwhile by its owner
                    model[name] = [str(d["content"]) for d in await owned[name].get_messages()]
                    continue
                name = rng.choice(sorted(owned))
                s = owned[name]
                if choice == "pop":
                    n = rng.randint(1, 10)
                    got = [d["content"] for d in await s.pop_messages(n)]
                    if got != model[name][-n:]:
                        errors.append(f"{name}: popped {got}, expected {model[name][-n:]}")
                    del model[name][-n:]
                elif choice == "truncate":
                    keep = rng.randint(1, 30)
                    s.truncate_messages(keep)
                    await m.save_session(s)
                    model[name] = model[name][-keep:]
                elif choice == "clear":
                    s.clear_messages()
                    await m.save_session(s)
                    model[name] = []
                elif choice == "delete":
                    await m.delete_session(name)
                    del model[name], owned[name]
                else:
                    added = [f"{name}.{step}.{j}" for j in range(rng.randint(1, 5))]
                    for text in added:
                        s.add_message(msg(text))
                    await m.save_session(s)
                    model[name].extend(added)
            except SessionError as exc:
                errors.append(f"{choice}: {type(exc).__name__}: {exc}")
            except Exception as exc:  # untyped: the worst kind, reported
                errors.append(f"{choice}: untyped {type(exc).__name__}: {exc}")
    finally:
        try:
            await m.close()
        except Exception as exc:  # a flush of a session left unsaved by a failure
            errors.append(f"close: {type(exc).__name__}: {exc}")
        out.write_text(json.dumps({"model": model, "errors": errors}))


@pytest.mark.parametrize("backend", TREE_BACKENDS)
def test_random_writes_on_one_tree_across_processes(backend: str, tmp_path: Path) -> None:
    tree = Tree(backend, tmp_path / "sessions")
    root: View = []

    async def seed() -> None:
        async with managers(tree, 1) as (m,):
            s = await m.create_session("root", exist_ok=False)
            for i in range(ROOT_MESSAGES):
                s.add_message(msg(f"r{i}"))
            await m.save_session(s)
            root.extend(await view(m, "root"))

    asyncio.run(seed())
    context = multiprocessing.get_context("spawn")
    config = tree.store.config.model_dump(mode="json")
    outs = [tmp_path / f"out{k}.json" for k in range(PROCESSES)]
    go = context.Event()
    procs = [
        context.Process(target=_worker, args=(backend, config, k, 1000 + k, str(outs[k]), go))
        for k in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    go.set()
    for p in procs:
        p.join(HANG * 2)
        assert p.exitcode == 0, p.exitcode
    expected: dict[str, list[str]] = {"root": [c for _, c in root]}
    errors: list[str] = []
    for out in outs:
        found = json.loads(out.read_text())
        expected.update(found["model"])
        errors.extend(found["errors"])

    async def check() -> list[str]:
        return await check_tree(tree, expected) + await delete_all(tree)

    problems = asyncio.run(check())
    assert not errors and not problems, (errors, problems)
