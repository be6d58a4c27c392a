"""What the benchmark scripts share: the messages they write, timing (interleaved rounds in
rotating order, medians), the printed table, the command line, and throwaway PostgreSQL
databases.

The scripts run from ``benchmarks/`` and import this module by its bare name.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import platform
import secrets
import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from importlib.metadata import version
from typing import Any, TypeVar

from sqlalchemy.engine import URL, make_url

from coda_session import AsyncSessionManager, SessionManager

T = TypeVar("T")
K = TypeVar("K")

#: The library reads this many messages with the session row on resume.
TAIL = 50

# -- data -------------------------------------------------------------------------------

_TEXT = (
    "the agent reads the file and proposes a patch for the failing test before it runs "
    "the suite again and reports what changed in the session store"
)
_WORDS = _TEXT.split()


@functools.cache
def content(i: int) -> str:
    """A deterministic message text of about 200 characters (cached: building the texts
    is no part of what is timed)."""
    words = [_WORDS[(i * 7 + k) % len(_WORDS)] for k in range(32)]
    return f"#{i}: " + " ".join(words)


#: Distinct texts the timed loops cycle through (built once, before any timing).
TEXTS = 100


def build_texts() -> None:
    for i in range(TEXTS):
        content(i)


def message(i: int) -> dict[str, Any]:
    return {"role": "user" if i % 2 == 0 else "assistant", "content": content(i)}


# -- figures ----------------------------------------------------------------------------


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


class Table:
    """The rows of one script: each printed as it comes (a progress line), then all of
    them as one table with the notes under it.

    ``head`` names the columns; the first ``left`` are left-aligned, the others (but the
    last, the verdict) right-aligned; the progress line shows the ``shown`` columns that
    are not empty. A row may leave its trailing cells out.
    """

    def __init__(self, head: tuple[str, ...], left: int, shown: tuple[int, ...]) -> None:
        self.head, self.left, self.shown = head, left, shown
        self.rows: list[tuple[str, ...]] = []
        self.notes: list[str] = []

    def add(self, *cells: str) -> None:
        row = (*cells, *[""] * (len(self.head) - len(cells)))
        self.rows.append(row)
        figures = " ".join(row[i] for i in self.shown if row[i])
        print(f"  .. {' '.join(row[: self.left])}: {figures}".rstrip(), flush=True)

    def print(self) -> None:
        rows = [self.head, *self.rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.head) - 1)]

        def line(r: tuple[str, ...]) -> str:
            left = [c.ljust(w) for c, w in zip(r[: self.left], widths, strict=False)]
            right = [
                c.rjust(w) for c, w in zip(r[self.left : -1], widths[self.left :], strict=True)
            ]
            return "  ".join([*left, *right, r[-1]]).rstrip()

        print()
        print(line(self.head))
        print("-" * len(line(self.head)))
        for r in self.rows:
            print(line(r))
        for note in self.notes:
            print(note)


# -- timing -----------------------------------------------------------------------------


@contextmanager
def section(title: str) -> Iterator[None]:
    print(f"{title} ...", flush=True)
    gc.collect()
    start = time.perf_counter()
    yield
    print(f"  ({time.perf_counter() - start:.1f} s)", flush=True)


#: The benchmarks run under asyncio.run(); a blocking-API call made from there takes the
#: path for callers that run an event loop of their own (a notebook: handed to a helper
#: thread). Scripts call from a thread without one: the sync figures are taken there.
PLAIN = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-plain")


def plain(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` in a thread with no event loop (as a script calls), wait for it."""
    return PLAIN.submit(fn, *args).result()


def rotate(items: Sequence[T], shift: int) -> list[T]:
    """The order of the contenders in one round (rotated, so none always goes first)."""
    shift %= len(items)
    return [*items[shift:], *items[:shift]]


def time_sync(fn: Callable[[], object], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def time_each(step: Callable[[int], object], indexes: Iterable[int]) -> list[float]:
    """The time of ``step(i)`` for each index, one by one."""
    out = []
    for i in indexes:
        t0 = time.perf_counter()
        step(i)
        out.append(time.perf_counter() - t0)
    return out


async def time_each_async(
    step: Callable[[int], Awaitable[object]], indexes: Iterable[int]
) -> list[float]:
    """The time of ``await step(i)`` for each index, one by one."""
    out = []
    for i in indexes:
        t0 = time.perf_counter()
        await step(i)
        out.append(time.perf_counter() - t0)
    return out


async def interleaved(
    one: Callable[[K], Awaitable[float]],
    keys: Sequence[K],
    repeats: int,
    warmup: int = 1,
    collect: bool = False,
) -> dict[K, list[float]]:
    """``repeats`` rounds of one timing (``await one(key)``) per key, in an order that
    rotates from round to round, after ``warmup`` untimed calls per key (first statements
    compile, first pages load); ``collect`` runs the collector before each timing."""
    for key in keys:
        for _ in range(warmup):
            await one(key)
    times: dict[K, list[float]] = {key: [] for key in keys}
    for rep in range(repeats):
        for key in rotate(keys, rep):
            if collect:
                gc.collect()
            times[key].append(await one(key))
    return times


async def append_rounds(
    one: Callable[[str, int], Awaitable[list[float]]], kinds: Sequence[str], total: int, rounds: int
) -> tuple[dict[str, list[float]], dict[str, float], int]:
    """Durable appends: ``one(kind, n)`` times ``n`` appends one by one. After 20 untimed
    ones per kind, ``total`` per kind in ``rounds`` rounds of rotating order. The samples
    per kind, the wall-clock time of each kind's rounds, and how many appends each timed."""
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    walls: dict[str, float] = dict.fromkeys(kinds, 0.0)
    for kind in kinds:
        await one(kind, 20)
    per_round = total // rounds
    for r in range(rounds):
        for kind in rotate(kinds, r):
            t0 = time.perf_counter()
            samples[kind] += await one(kind, per_round)
            walls[kind] += time.perf_counter() - t0
    return samples, walls, per_round * rounds


# -- timed library calls --------------------------------------------------------------


async def resume(am: AsyncSessionManager, name: str) -> float:
    """The time of a resume: ``load_session(name)`` + ``get_messages(limit=TAIL)``."""
    t0 = time.perf_counter()
    a_sess = await am.load_session(name)
    got = await a_sess.get_messages(limit=TAIL)
    took = time.perf_counter() - t0
    assert len(got) == TAIL
    return took


def resume_sync(sm: SessionManager, name: str) -> float:
    """:func:`resume` through the blocking API."""
    t0 = time.perf_counter()
    s_sess = sm.load_session(name)
    got = s_sess.get_messages(limit=TAIL)
    took = time.perf_counter() - t0
    assert len(got) == TAIL
    return took


async def save_new(am: AsyncSessionManager, name: str, n: int) -> float:
    """The time of one ``save_session`` of ``message(0 .. n-1)``, added (untimed) to the
    session ``name`` (made if missing)."""
    a_sess = await am.create_session(name)
    for i in range(n):
        a_sess.add_message(message(i))
    t0 = time.perf_counter()
    await am.save_session(a_sess)
    return time.perf_counter() - t0


def save_new_sync(sm: SessionManager, name: str, n: int) -> float:
    """:func:`save_new` through the blocking API."""
    s_sess = sm.create_session(name)
    for i in range(n):
        s_sess.add_message(message(i))
    t0 = time.perf_counter()
    sm.save_session(s_sess)
    return time.perf_counter() - t0


# -- the command line and the header ------------------------------------------------------


def arguments(
    doc: str | None,
    parts: Sequence[str] = (),
    only_help: str = "run only these parts (repeatable)",
    quick_help: str = "small sizes (CI smoke run)",
) -> argparse.ArgumentParser:
    """``--quick`` (small sizes, the CI smoke run) and, given ``parts``, ``--only``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    if parts:
        parser.add_argument("--only", choices=parts, action="append", help=only_help)
    return parser


def mode(quick: bool, how: str) -> str:
    return f"mode: {'quick' if quick else 'full'}; {how}"


def environment(*packages: str, sqlite: bool = False) -> str:
    """Python and the machine, then SQLite's version if asked, then the packages'."""
    found = [f"Python {platform.python_version()} ({platform.machine()}, {os.cpu_count()} cpus)"]
    if sqlite:
        found.append(f"sqlite {sqlite3.sqlite_version}")
    return ", ".join([*found, *(f"{name} {version(name.lower())}" for name in packages)])


# -- PostgreSQL -------------------------------------------------------------------------

URL_VARIABLES = ("CODA_BENCH_POSTGRES_URL", "CODA_TEST_POSTGRES_URL")


def postgres_url() -> str | None:
    """The configured server, or None after a line saying why the PostgreSQL rows are
    skipped (no server configured, or no asyncpg)."""
    url = next((v for v in map(os.environ.get, URL_VARIABLES) if v), None)
    if url is None:
        print(
            "PostgreSQL rows skipped: neither CODA_BENCH_POSTGRES_URL nor CODA_TEST_POSTGRES_URL "
            'is set (eval "$(scripts/pg-test-server start)" starts a server)'
        )
        return None
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        print(
            "PostgreSQL rows skipped: asyncpg is not installed "
            '(pip install "asyncpg>=0.29,<0.33", or pip install -e ".[postgresql]" here)'
        )
        return None
    return url


class Server:
    """The configured server: databases of this run, made and dropped here."""

    def __init__(self, url: str) -> None:
        self.url: URL = make_url(url)
        self.tag = f"bench_{secrets.token_hex(4)}"
        self.made: list[str] = []

    def _args(self, database: str | None) -> dict[str, Any]:
        url = self.url if database is None else self.url.set(database=database)
        args = url.translate_connect_args(username="user")
        args.update({k: v for k, v in url.query.items() if isinstance(v, str)})
        return args

    async def connect(self, database: str | None = None) -> Any:
        """A raw asyncpg connection (the library's session settings: UTC)."""
        import asyncpg

        return await asyncpg.connect(
            **self._args(database), timeout=30, server_settings={"TimeZone": "UTC"}
        )

    async def admin(self, *statements: str) -> None:
        conn = await self.connect()
        try:
            for stmt in statements:
                await conn.execute(stmt)
        finally:
            await conn.close()

    async def create(self, part: str) -> str:
        name = f"{self.tag}_{part}"
        await self.admin(f'CREATE DATABASE "{name}" TEMPLATE template0')
        self.made.append(name)
        return name

    def library_config(self, database: str) -> dict[str, Any]:
        url = self.url.set(database=database).render_as_string(hide_password=False)
        return {"session": {"database_url": url}}

    async def version(self) -> tuple[str, str]:
        """The server's version, and its durability settings (commits wait for the disk
        unless these say otherwise)."""
        conn = await self.connect()
        try:
            found = str(await conn.fetchval("SHOW server_version"))
            settings = [
                f"{name}={await conn.fetchval(f'SHOW {name}')}"
                for name in ("fsync", "synchronous_commit")
            ]
        finally:
            await conn.close()
        return found, ", ".join(settings)

    async def drop(self, name: str) -> None:
        """Drop one database of this run (made by :meth:`create`) before the end."""
        await self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.made.remove(name)

    async def drop_all(self) -> None:
        made, self.made = self.made, []
        if made:
            await self.admin(*(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)' for n in made))
