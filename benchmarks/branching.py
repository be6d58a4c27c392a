"""Copy-on-write branching: what a fork costs, how reads of deep branches scale, what storage
a hundred forks take, what a chain of 1,000 forks stores and costs, and a sliding window
kept under branches. SQLite (a temporary directory) and, when a server is configured,
PostgreSQL.

Run ``python benchmarks/branching.py`` (a few minutes) or ``python benchmarks/branching.py
--quick`` (smaller sizes, well under a minute; the CI smoke run). The PostgreSQL rows need
``CODA_BENCH_POSTGRES_URL`` or ``CODA_TEST_POSTGRES_URL`` (as ``postgres.py``); without them
they are skipped with one line. ``--backend sqlite`` or ``--backend postgresql`` runs one.

Every figure is the median of repeated ``time.perf_counter`` timings of the public API call
(async manager, and the blocking ``SessionManager`` from a thread without an event loop, as
a script calls it), end to end. Every ratio is between two figures of the same run, taken
interleaved in rotating order so the noise of a shared machine falls on both alike: a fork
of a big source against a fork of a 10-message one, a read of a deep branch against a read
of a plain session of the same length. Each target prints PASS or MISS; nothing fails on
timing and the script exits 0.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import (
    TAIL,
    TEXTS,
    Server,
    Table,
    arguments,
    build_texts,
    environment,
    interleaved,
    median,
    message,
    mode,
    plain,
    postgres_url,
    section,
    verdict,
)

from coda_session import AsyncSession, AsyncSessionManager, SessionManager

# -- sizes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    fork_small: int  # 1: messages of the small source
    fork_big: int  # ... and of the big one
    fork_repeats: int  # forks per API, source and fork position
    deep_depth: int  # 2, 3: forks between the root and the deep branch
    deep_level: int  # ... messages each level adds (the root's too)
    tail_repeats: int  # 2: reads of the newest 50
    full_repeats: int  # 3: full reads
    storage_source: int  # 4: messages of the forked session
    storage_forks: int  # ... and its forks
    chain_depth: int  # 5: forks in the chain (each adds one message)
    chain_repeats: int  # ... timings of each fork / read
    window_keep: int  # 6: messages the truncated session keeps
    window_turns: int  # ... turns (append one, truncate to the window)
    window_repeats: int  # ... timings of each read / fork


FULL = Sizes(
    fork_small=10,
    fork_big=100_000,
    fork_repeats=100,
    deep_depth=10,
    deep_level=10_000,
    tail_repeats=200,
    full_repeats=9,
    storage_source=10_000,
    storage_forks=100,
    chain_depth=1_000,
    chain_repeats=30,
    window_keep=5_000,
    window_turns=200,
    window_repeats=30,
)
QUICK = Sizes(
    fork_small=10,
    fork_big=10_000,
    fork_repeats=10,
    deep_depth=10,
    deep_level=500,
    tail_repeats=20,
    full_repeats=5,
    storage_source=2_000,
    storage_forks=100,
    chain_depth=200,
    chain_repeats=10,
    window_keep=500,
    window_turns=50,
    window_repeats=10,
)

#: The fork cost's absolute limit on SQLite (a fork of the big source, either API).
FORK_LIMIT_SQLITE = 0.002
#: Big / small (fork), deep / plain (reads).
RATIO_LIMIT = 1.5

TABLE_HEAD = ("#", "backend", "measurement", "median", "ratio", "target", "verdict")


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.3f} ms"


def mb(count: int) -> str:
    return f"{count / 1e6:,.2f} MB"


# -- the stores -------------------------------------------------------------------------


class Backend:
    """Where one part's store lives, and how many bytes it takes."""

    name = ""

    async def config(self, part: str) -> dict[str, Any]:
        raise NotImplementedError

    async def size(self, part: str) -> tuple[int, str]:
        """The store's bytes (with the manager closed), and how they were counted."""
        raise NotImplementedError

    async def close(self) -> None:
        pass


class SQLite(Backend):
    name = "SQLite"

    def __init__(self, work: Path) -> None:
        self.work = work

    async def config(self, part: str) -> dict[str, Any]:
        return {"session": {"storage_path": str(self.work / part)}}

    async def size(self, part: str) -> tuple[int, str]:
        conn = sqlite3.connect(self.work / part / "sessions.db")
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
            free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
            page = int(conn.execute("PRAGMA page_size").fetchone()[0])
        finally:
            conn.close()
        return (pages - free) * page, f"{pages:,} pages - {free:,} free, of {page:,} B"


class PostgreSQL(Backend):
    name = "PostgreSQL"

    def __init__(self, server: Server) -> None:
        self.server = server
        self.databases: dict[str, str] = {}

    async def config(self, part: str) -> dict[str, Any]:
        if part not in self.databases:
            self.databases[part] = await self.server.create(part.replace("-", "_"))
        return self.server.library_config(self.databases[part])

    async def size(self, part: str) -> tuple[int, str]:
        conn = await self.server.connect(self.databases[part])
        try:
            tables = ("messages", "sessions", "session_segments")
            found = [
                int(await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", t))
                for t in tables
            ]
        finally:
            await conn.close()
        detail = ", ".join(f"{t} {n / 1e6:.2f}" for t, n in zip(tables, found, strict=True))
        return sum(found), f"pg_total_relation_size MB: {detail}"

    async def close(self) -> None:
        await self.server.drop_all()


def no_cache(cfg: dict[str, Any]) -> dict[str, Any]:
    """The same store, read by a manager that keeps no message in memory: every read of a
    session object goes to storage."""
    return {"session": {**cfg["session"], "message_cache_size": 0}}


async def build(
    am: AsyncSessionManager, name: str, start: int, count: int, branch_from: str | None = None
) -> AsyncSession:
    """A session (a fork of ``branch_from``, if given) with ``message(start ..)`` added and
    saved in one save."""
    sess = await am.create_session(name, branch_from=branch_from, exist_ok=False)
    for i in range(start, start + count):
        sess.add_message(message(i % TEXTS))
    await am.save_session(sess)
    return sess


def expected(start: int, count: int) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in (message(i % TEXTS) for i in range(count))][start:]


def pairs(got: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in got]


# -- 1. fork cost -----------------------------------------------------------------------------


async def bench_fork(backend: Backend, sizes: Sizes, table: Table) -> None:
    small, big = sizes.fork_small, sizes.fork_big
    cfg = await backend.config("fork")
    t0 = time.perf_counter()
    async with AsyncSessionManager(cfg) as am:
        await build(am, "small", 0, small)
        await build(am, "big", 0, big)
    table.notes.append(
        f"note 1 ({backend.name}): built the {big:,}-message source via the API in "
        f"{time.perf_counter() - t0:.2f} s"
    )
    counts = {"small": small, "big": big}
    # where the fork starts: the end (the default), the middle, all but the last
    points: dict[str, Callable[[int], int | None]] = {
        "end": lambda n: None,
        "middle": lambda n: n // 2,
        "-1": lambda n: -1,
    }
    keys = [(api, src, where) for api in ("async", "sync") for src in counts for where in points]
    made = 0
    async with AsyncSessionManager(cfg) as am:
        with SessionManager(cfg) as sm:

            def fork_sync(name: str, src: str, point: int | None) -> tuple[float, int]:
                t0 = time.perf_counter()
                sess = sm.create_session(name, branch_from=src, fork_point=point)
                took = time.perf_counter() - t0
                return took, sess.message_count

            async def one(key: tuple[str, str, str]) -> float:
                nonlocal made
                api, src, where = key
                made += 1
                name = f"fork-{made}"
                point = points[where](counts[src])
                if api == "async":
                    t0 = time.perf_counter()
                    sess = await am.create_session(name, branch_from=src, fork_point=point)
                    took = time.perf_counter() - t0
                    count = sess.message_count
                else:
                    took, count = plain(fork_sync, name, src, point)
                want = counts[src] if point is None else point % counts[src]
                assert count == want, (name, src, where, count)
                # untimed: the store keeps the same sessions from one fork to the next
                await am.delete_session(name)
                return took

            times = await interleaved(one, keys, sizes.fork_repeats, warmup=2)
            # a fork of the big source reads as the source (checked once, untimed)
            fork = await am.create_session("check", branch_from="big", fork_point=big // 2)
            tail = await fork.get_messages(limit=3)
            assert pairs(tail) == expected(big // 2 - 3, big // 2), "fork of big: wrong tail"

    med = {k: median(v) for k, v in times.items()}
    reps = sizes.fork_repeats
    sqlite = backend.name == "SQLite"
    for api in ("async", "sync"):
        label = "AsyncSessionManager" if api == "async" else "SessionManager (blocking)"
        s, b = med[(api, "small", "end")], med[(api, "big", "end")]
        table.add(
            "1",
            backend.name,
            f"fork x{reps}, {label}.create_session(name, branch_from=src): {small} msgs",
            ms(s),
        )
        table.add(
            "1",
            backend.name,
            f"  {big:,} msgs",
            ms(b),
            "",
            "< 2 ms" if sqlite else "",
            verdict(b < FORK_LIMIT_SQLITE) if sqlite else "",
        )
        table.add(
            "1",
            backend.name,
            f"  {big:,} msgs vs {small} msgs",
            "",
            f"{b / s:.2f}x small",
            f"<= {RATIO_LIMIT:.2f}x",
            verdict(b / s <= RATIO_LIMIT),
        )
        for where, shown in (("middle", "fork_point=n//2"), ("-1", "fork_point=-1")):
            ws, wb = med[(api, "small", where)], med[(api, "big", where)]
            table.add(
                "1",
                backend.name,
                f"  {shown}: {small} msgs {ms(ws)}; {big:,} msgs",
                ms(wb),
                f"{wb / ws:.2f}x small",
            )


# -- 2, 3. reads of a deep branch ---------------------------------------------------------


async def bench_deep(backend: Backend, sizes: Sizes, table: Table) -> None:
    depth, level = sizes.deep_depth, sizes.deep_level
    total = (depth + 1) * level
    deep = f"deep-{depth}"
    cfg = await backend.config("deep")
    t0 = time.perf_counter()
    async with AsyncSessionManager(cfg) as am:
        await build(am, "deep-0", 0, level)
        for k in range(1, depth + 1):
            await build(am, f"deep-{k}", k * level, level, branch_from=f"deep-{k - 1}")
        await build(am, "plain", 0, total)
        info = await am.get_session_info(deep)
        assert info is not None and info.message_count == total, info
        lineage = await (await am.load_session(deep)).get_lineage()
        assert len(lineage) == depth + 1, [i.name for i in lineage]
    table.notes.append(
        f"note 2 ({backend.name}): built {deep} (the root and {depth} forks, each forked from "
        f"the one before at its end and given {level:,} messages of its own: {total:,}) and "
        f"'plain' ({total:,} messages) via the API in {time.perf_counter() - t0:.2f} s"
    )

    names = (deep, "plain")
    tail_keys = [
        (kind, api, n) for kind in ("resume", "cold") for api in ("async", "sync") for n in names
    ]
    full_keys = [(api, n) for api in ("async", "sync") for n in names]
    want_tail = expected(total - TAIL, total)
    async with AsyncSessionManager(cfg) as am, AsyncSessionManager(no_cache(cfg)) as cold:
        with SessionManager(cfg) as sm, SessionManager(no_cache(cfg)) as sm_cold:
            # read by a manager without a cache: each get_messages reads storage
            cold_async = {n: await cold.load_session(n) for n in names}
            cold_sync = {n: plain(sm_cold.load_session, n) for n in names}

            def resume_sync(name: str) -> tuple[float, list[dict[str, Any]]]:
                t0 = time.perf_counter()
                got = sm.load_session(name).get_messages(limit=TAIL)
                return time.perf_counter() - t0, got

            def read_sync(name: str, limit: int | None) -> tuple[float, list[dict[str, Any]]]:
                t0 = time.perf_counter()
                got = cold_sync[name].get_messages(limit=limit)
                return time.perf_counter() - t0, got

            async def tail(key: tuple[str, str, str]) -> float:
                kind, api, name = key
                if api == "sync":
                    fn = resume_sync if kind == "resume" else read_sync
                    args = (name,) if kind == "resume" else (name, TAIL)
                    took, got = plain(fn, *args)
                else:
                    t0 = time.perf_counter()
                    if kind == "resume":
                        got = await (await am.load_session(name)).get_messages(limit=TAIL)
                    else:
                        got = await cold_async[name].get_messages(limit=TAIL)
                    took = time.perf_counter() - t0
                assert len(got) == TAIL
                return took

            async def full(key: tuple[str, str]) -> float:
                api, name = key
                if api == "sync":
                    took, got = plain(read_sync, name, None)
                else:
                    t0 = time.perf_counter()
                    got = await cold_async[name].get_messages()
                    took = time.perf_counter() - t0
                assert len(got) == total
                return took

            # both read as the same conversation (checked once, untimed)
            for name in names:
                assert pairs(await cold_async[name].get_messages(limit=TAIL)) == want_tail
                got = await cold_async[name].get_messages()
                assert pairs(got) == expected(0, total), f"{name}: wrong messages"
                del got
            tails = await interleaved(tail, tail_keys, sizes.tail_repeats, warmup=3)
            fulls = await interleaved(full, full_keys, sizes.full_repeats, collect=True)

    what = f"{depth} levels deep vs plain, {total:,} msgs"
    for kind, label in (
        ("resume", "load_session + get_messages(limit=50)"),
        ("cold", "get_messages(limit=50), message_cache_size=0"),
    ):
        for api in ("async", "sync"):
            d, p = median(tails[(kind, api, deep)]), median(tails[(kind, api, "plain")])
            table.add("2", backend.name, f"{api} {label} x{sizes.tail_repeats}: plain", ms(p))
            table.add(
                "2",
                backend.name,
                f"  {what}",
                ms(d),
                f"{d / p:.2f}x plain",
                f"<= {RATIO_LIMIT:.2f}x",
                verdict(d / p <= RATIO_LIMIT),
            )
    for api in ("async", "sync"):
        d, p = median(fulls[(api, deep)]), median(fulls[(api, "plain")])
        table.add(
            "3",
            backend.name,
            f"{api} get_messages() x{sizes.full_repeats}, message_cache_size=0: plain",
            ms(p),
        )
        table.add(
            "3",
            backend.name,
            f"  {what}",
            ms(d),
            f"{d / p:.2f}x plain",
            f"<= {RATIO_LIMIT:.2f}x",
            verdict(d / p <= RATIO_LIMIT),
        )


# -- 4. storage of many forks -------------------------------------------------------------


async def bench_storage(backend: Backend, sizes: Sizes, table: Table) -> None:
    n, forks = sizes.storage_source, sizes.storage_forks
    part = "storage"
    cfg = await backend.config(part)
    async with AsyncSessionManager(cfg):
        pass
    empty, _ = await backend.size(part)
    async with AsyncSessionManager(cfg) as am:
        await build(am, "source", 0, n)
    source, source_how = await backend.size(part)
    t0 = time.perf_counter()
    async with AsyncSessionManager(cfg) as am:
        for k in range(forks):
            await am.create_session(f"fork-{k:03d}", branch_from="source")
    took = time.perf_counter() - t0
    forked, forked_how = await backend.size(part)
    # one real full copy (export + import: the same messages as rows of their own), to
    # price a copy by measurement rather than by assumption
    with tempfile.TemporaryDirectory(prefix="coda-bench-export-") as tmp:
        path = Path(tmp) / "source.jsonl"
        async with AsyncSessionManager(cfg) as am:
            assert await am.export_session("source", path) == n
            copy = await am.import_session(path, name="full-copy")
            assert copy.message_count == n
            tree = await am.get_tree("source")
            assert len(tree) == forks + 1, len(tree)
            last = await am.load_session(f"fork-{forks - 1:03d}")
            assert pairs(await last.get_messages(limit=3)) == expected(n - 3, n)
    with_copy, _ = await backend.size(part)
    one_copy = with_copy - forked
    copies = source + forks * one_copy

    name = backend.name
    table.notes.append(f"note 4 ({name}): {forks} forks made in {took:.2f} s")
    table.notes.append(f"note 4 ({name}): source only: {source_how}; + forks: {forked_how}")
    table.add("4", name, "store size: empty (schema only)", mb(empty))
    table.add("4", name, f"  with the {n:,}-message source only (one copy)", mb(source))
    table.add(
        "4", name, f"  source + {forks} forks", mb(forked), f"{forked / source:.3f}x one copy"
    )
    per_fork = (forked - source) / forks
    table.add("4", name, "  added per fork", f"{per_fork / 1e3:,.1f} kB")
    table.add(
        "4",
        name,
        "  one full copy (import of an export; measured)",
        mb(one_copy),
        f"{one_copy / max(per_fork, 1):,.0f}x a fork",
    )
    table.add(
        "4",
        name,
        f"  source + {forks} full copies (source + {forks} x one copy)",
        mb(copies),
        f"{forked / copies:.4f}x (forks / copies)",
    )


# -- 5. a chain of forks ------------------------------------------------------------------


async def tree_rows(backend: Backend, part: str) -> dict[str, int]:
    """Rows of every table of the store that holds sessions, messages or their tree."""
    tables = ("sessions", "messages", "session_segments")
    if isinstance(backend, SQLite):
        conn = sqlite3.connect(backend.work / part / "sessions.db")
        try:
            have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            return {
                t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
                for t in tables
                if t in have
            }
        finally:
            conn.close()
    assert isinstance(backend, PostgreSQL)
    conn = await backend.server.connect(backend.databases[part])
    try:
        out = {}
        for t in tables:
            if await conn.fetchval("SELECT to_regclass($1::text)", t) is not None:
                out[t] = int(await conn.fetchval(f"SELECT count(*) FROM {t}"))
        return out
    finally:
        await conn.close()


class Reads:
    """One timing, end to end, of ``(what, src)``: a fork of ``src`` at its end (``what`` is
    "fork"; the forks are ``<prefix>-0``, ``<prefix>-1``, ...), ``load_session`` + the newest
    50 ("resume"), or every message read by ``cold``, a manager without a cache ("full").
    ``length(src)`` is how many messages ``src`` has."""

    def __init__(
        self,
        am: AsyncSessionManager,
        cold: AsyncSessionManager,
        prefix: str,
        length: Callable[[str], int],
    ) -> None:
        self.am, self.cold, self.prefix, self.length = am, cold, prefix, length
        self.made = 0

    async def __call__(self, key: tuple[str, str]) -> float:
        what, src = key
        t0 = time.perf_counter()
        if what == "fork":
            await self.am.create_session(f"{self.prefix}-{self.made}", branch_from=src)
            self.made += 1
        elif what == "resume":
            got = await (await self.am.load_session(src)).get_messages(limit=TAIL)
            assert len(got) == min(TAIL, self.length(src))
        else:
            got = await (await self.cold.load_session(src)).get_messages()
            assert len(got) == self.length(src)
        return time.perf_counter() - t0


async def bench_chain(backend: Backend, sizes: Sizes, table: Table) -> None:
    """An agent that regenerates at every turn: each session a fork of the one before at
    its end, with one message of its own."""
    depth, repeats = sizes.chain_depth, sizes.chain_repeats
    part = "chain"
    cfg = await backend.config(part)
    name = backend.name
    t0 = time.perf_counter()
    async with AsyncSessionManager(cfg) as am:
        await build(am, "c-0", 0, 1)
        for k in range(1, depth + 1):
            await build(am, f"c-{k}", k, 1, branch_from=f"c-{k - 1}")
        await build(am, "plain", 0, depth + 1)
    built = time.perf_counter() - t0
    rows = await tree_rows(backend, part)
    table.notes.append(
        f"note 5 ({name}): built a chain of {depth:,} forks (c-0 .. c-{depth}, "
        f"{depth + 1:,} messages) and 'plain' ({depth + 1:,}) in {built:.2f} s; rows: {rows}"
    )
    tree_extra = sum(v for k, v in rows.items() if k != "messages")
    table.add(
        "5",
        name,
        f"rows stored for a {depth:,}-fork chain ({depth + 1:,} messages + plain)",
        f"{sum(rows.values()):,}",
        f"{tree_extra:,} non-message",
        f"O({2 * depth + 10:,})",
        verdict(tree_extra <= 2 * depth + 10),
    )
    deep = f"c-{depth}"
    keys = [(what, n) for what in ("fork", "resume", "full") for n in ("c-0", deep, "plain")]
    async with AsyncSessionManager(cfg) as am, AsyncSessionManager(no_cache(cfg)) as cold:
        one = Reads(am, cold, "f", lambda src: 1 if src == "c-0" else depth + 1)
        times = await interleaved(one, keys, repeats)
        made = one.made
        with tempfile.TemporaryDirectory(prefix="coda-bench-chain-") as tmp:
            gc.collect()
            t0 = time.perf_counter()
            written = await am.export_store(Path(tmp) / "store.jsonl")
            exported = time.perf_counter() - t0
            assert written == depth + 2 + made, written
    for what, label in (
        ("fork", "create_session(branch_from=...) at the end"),
        ("resume", f"load_session + get_messages(limit={TAIL})"),
        ("full", "get_messages(), message_cache_size=0"),
    ):
        base = median(times[(what, "c-0")])
        flat = median(times[(what, "plain")])
        d = median(times[(what, deep)])
        table.add("5", name, f"{label} x{repeats}: root (1 message)", ms(base))
        table.add("5", name, f"  plain session, {depth + 1:,} messages", ms(flat))
        table.add(
            "5",
            name,
            f"  the deepest fork ({depth:,} levels, {depth + 1:,} messages)",
            ms(d),
            f"{d / flat:.2f}x plain",
            f"<= {RATIO_LIMIT:.2f}x",
            verdict(d / flat <= RATIO_LIMIT),
        )
    table.add("5", name, f"export_store of the chain ({depth + 2 + made:,} sessions)", ms(exported))


# -- 6. a sliding window under branches -----------------------------------------------------


async def bench_window(backend: Backend, sizes: Sizes, table: Table) -> None:
    """A session with 5 branches kept to its newest ``window_keep`` messages turn after
    turn (append one, truncate): a branch's reads and forks, and the rows kept."""
    keep, turns, repeats = sizes.window_keep, sizes.window_turns, sizes.window_repeats
    part = "window"
    cfg = await backend.config(part)
    name = backend.name
    async with AsyncSessionManager(cfg) as am:
        await build(am, "w", 0, keep)
        for k in range(5):
            await am.create_session(f"wb-{k}", branch_from="w")
        await build(am, "plain", 0, keep)
    keys = [(what, n) for what in ("resume", "full", "fork") for n in ("wb-0", "plain")]

    async def measure(
        am: AsyncSessionManager, cold: AsyncSessionManager, tag: str
    ) -> dict[tuple[str, str], float]:
        one = Reads(am, cold, tag, lambda src: keep)
        times = await interleaved(one, keys, repeats)
        for k in range(one.made):
            await am.delete_session(f"{tag}-{k}")
        return {k: median(v) for k, v in times.items()}

    async with AsyncSessionManager(cfg) as am, AsyncSessionManager(no_cache(cfg)) as cold:
        before = await measure(am, cold, "x")
        src = await am.load_session("w")
        t0 = time.perf_counter()
        for t in range(turns):
            src.add_message(message((keep + t) % TEXTS))
            src.truncate_messages(keep)
            await am.save_session(src)
        turned = time.perf_counter() - t0
        after = await measure(am, cold, "y")
    rows = await tree_rows(backend, part)
    table.notes.append(
        f"note 6 ({name}): 'w' ({keep:,} messages) with 5 branches, then {turns} turns of "
        f"append + truncate_messages({keep:,}) in {turned:.2f} s; rows after: {rows}"
    )
    table.add("6", name, f"a turn of 'w' (append + truncate), mean of {turns}", ms(turned / turns))
    tree_extra = sum(v for k, v in rows.items() if k != "messages")
    table.add(
        "6",
        name,
        f"non-message rows after {turns} turns (8 sessions)",
        f"{tree_extra:,}",
        "",
        "<= 20",
        verdict(tree_extra <= 20),
    )
    for what, label in (
        ("resume", f"load_session + get_messages(limit={TAIL})"),
        ("full", "get_messages(), message_cache_size=0"),
        ("fork", "create_session(branch_from=...) at the end"),
    ):
        p = after[(what, "plain")]
        b0, b1 = before[(what, "wb-0")], after[(what, "wb-0")]
        table.add("6", name, f"{label} x{repeats}: plain, {keep:,} messages", ms(p))
        table.add("6", name, "  a branch of 'w' before the turns", ms(b0), f"{b0 / p:.2f}x plain")
        table.add(
            "6",
            name,
            f"  the same branch after {turns} turns",
            ms(b1),
            f"{b1 / b0:.2f}x before",
            f"<= {RATIO_LIMIT:.2f}x",
            verdict(b1 / b0 <= RATIO_LIMIT),
        )


# -- main ---------------------------------------------------------------------------------------

Bench = Callable[[Backend, Sizes, Table], Awaitable[None]]
BENCHES: tuple[tuple[str, str, Bench], ...] = (
    ("1", "1. fork cost", bench_fork),
    ("2", "2, 3. reads of a deep branch", bench_deep),
    ("4", "4. storage of many forks", bench_storage),
    ("5", "5. a chain of forks", bench_chain),
    ("6", "6. a sliding window under branches", bench_window),
)


async def run(backend: Backend, sizes: Sizes, parts: set[str], table: Table) -> None:
    try:
        for key, title, bench in BENCHES:
            if key in parts:
                with section(f"{backend.name} {title}"):
                    await bench(backend, sizes, table)
    finally:
        await backend.close()


def main(argv: list[str] | None = None) -> int:
    parser = arguments(
        __doc__,
        ("1", "2", "3", "4", "5", "6"),
        "run only these parts (1 fork, 2 or 3 deep-branch reads, 4 storage, 5 a chain "
        "of forks, 6 a sliding window under branches; repeatable)",
    )
    parser.add_argument(
        "--backend", choices=("sqlite", "postgresql"), action="append", help="(repeatable)"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    # parts 2 and 3 read the same deep branch: one bench measures both
    parts = {"2" if p == "3" else p for p in args.only or ("1", "2", "4", "5", "6")}
    backends = set(args.backend or ("sqlite", "postgresql"))

    build_texts()
    print(environment("coda-session", sqlite=True))
    how = "medians of repeated perf_counter timings; ratios between figures of the same run"
    print(mode(args.quick, how))
    table = Table(TABLE_HEAD, left=3, shown=(3, 4, 6))
    started = time.perf_counter()
    if "sqlite" in backends:
        work = Path(tempfile.mkdtemp(prefix="coda-bench-branching-"))
        try:
            asyncio.run(run(SQLite(work), sizes, parts, table))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if "postgresql" in backends and (url := postgres_url()) is not None:
        asyncio.run(run(PostgreSQL(Server(url)), sizes, parts, table))
    table.print()
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
