"""Benchmarks of coda_session against the stdlib ``sqlite3`` doing the same work.

Run ``python benchmarks/bench.py`` (a few minutes) or ``python benchmarks/bench.py --quick``
(smaller sizes, well under a minute; the CI smoke run). Every figure is the median of
repeated ``time.perf_counter`` timings, and every ratio is taken against a baseline measured
in the same run: plain ``sqlite3`` on a separate database file with the library's own DDL
(copied from ``sqlite_master``), ``journal_mode=WAL``, ``synchronous=NORMAL``,
``foreign_keys=ON`` (as the library sets) and explicit ``BEGIN``/``COMMIT``.

Ours and the baseline run interleaved, round by round, so that the noise of a shared machine
falls on both alike. Each target prints PASS or MISS next to its ratio; nothing fails on
timing and the script always exits 0.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
from harness import (
    TAIL,
    TEXTS,
    Table,
    append_rounds,
    arguments,
    build_texts,
    environment,
    interleaved,
    median,
    message,
    mode,
    plain,
    resume,
    resume_sync,
    save_new,
    save_new_sync,
    section,
    time_each,
    time_each_async,
    time_sync,
    us,
    verdict,
)

from coda_session import AsyncSessionManager, SessionManager

# -- sizes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    append_ops: int  # target 1: durable appends per API
    append_rounds: int  # ... split into this many interleaved rounds
    bulk_messages: int  # target 2: messages in one save
    bulk_repeats: int
    big_session: int  # target 3: messages in the big session
    small_session: int
    resume_repeats: int
    list_sessions: int  # target 4: sessions listed
    list_repeats: int
    micro_repeats: int  # the breakdown's no-op round trips


FULL = Sizes(
    append_ops=2_000,
    append_rounds=4,
    bulk_messages=20_000,
    bulk_repeats=5,
    big_session=100_000,
    small_session=100,
    resume_repeats=300,
    list_sessions=10_000,
    list_repeats=25,
    micro_repeats=3_000,
)
QUICK = Sizes(
    append_ops=400,
    append_rounds=2,
    bulk_messages=5_000,
    bulk_repeats=3,
    big_session=20_000,
    small_session=100,
    resume_repeats=60,
    list_sessions=1_000,
    list_repeats=10,
    micro_repeats=500,
)

REPORT_HEAD = ("#", "measurement", "median", "msgs/s", "ratio", "target", "verdict")


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.2f} ms"


def per_s(count: float, seconds: float) -> str:
    return f"{count / seconds:,.0f}" if seconds > 0 else "-"


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def message_row(session_id: str, i: int) -> tuple[Any, ...]:
    """The row the library stores for ``message(i)``: no extra keys, so metadata is NULL."""
    msg = message(i)
    return (session_id, msg["role"], msg["content"], now_iso(), None)


# -- the raw sqlite3 baseline -------------------------------------------------------------

INSERT_MESSAGE = (
    "INSERT INTO messages (session_id, role, content, timestamp, metadata) VALUES (?, ?, ?, ?, ?)"
)
INSERT_SESSION = (
    "INSERT INTO sessions (id, name, created_at, updated_at, metadata, message_count, "
    "size_bytes) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
BUMP_SESSION = (
    "UPDATE sessions SET updated_at = ?, message_count = message_count + ?, "
    "size_bytes = size_bytes + ? WHERE id = ? RETURNING message_count, size_bytes"
)
TAIL_QUERY = (
    "SELECT id, role, content, timestamp, metadata FROM messages "
    "WHERE session_id = ? ORDER BY id DESC LIMIT ?"
)

#: The library lists sessions oldest first, so the baseline sorts the same way.
# the columns a SessionInfo is built from (the table also keeps a metadata version)
_INFO_COLUMNS = "id, name, created_at, updated_at, metadata, message_count, size_bytes"
RAW_LIST = f"SELECT {_INFO_COLUMNS} FROM sessions ORDER BY created_at, name"
RAW_LIST_UNORDERED = f"SELECT {_INFO_COLUMNS} FROM sessions"


def library_ddl(workdir: Path) -> list[str]:
    """The DDL of the tables and indexes the library creates, read from a fresh database."""
    where = workdir / "ddl"

    async def create() -> None:
        async with AsyncSessionManager(config(where)):
            pass

    asyncio.run(create())
    conn = sqlite3.connect(where / "sessions.db")
    try:
        rows = conn.execute(
            # not the triggers that give rows of other programs a tree key (0009): the
            # baseline's inserts, like another program's, carry none and would fire them
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND type != 'trigger' "
            "AND name NOT LIKE 'alembic%' AND name NOT LIKE 'sqlite%' "
            # the FTS5 table's shadow tables: creating the virtual table creates them
            "AND name NOT LIKE 'message\\_fts\\_%' ESCAPE '\\' "
            "ORDER BY type DESC, name DESC"
        ).fetchall()
    finally:
        conn.close()
    return [str(r[0]) for r in rows]


class Raw:
    """A plain ``sqlite3`` connection on its own database file with the library's schema."""

    def __init__(self, path: Path, ddl: list[str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute("PRAGMA foreign_keys = ON")
        for stmt in ddl:
            self.conn.execute(stmt)

    def new_session(self, name: str, messages: int = 0) -> str:
        sid = str(uuid.uuid4())
        stamp = now_iso()
        self.conn.execute("BEGIN")
        self.conn.execute(INSERT_SESSION, (sid, name, stamp, stamp, "{}", messages, 0))
        if messages:
            self.conn.executemany(INSERT_MESSAGE, [message_row(sid, i) for i in range(messages)])
        self.conn.execute("COMMIT")
        return sid

    def append(self, sid: str, i: int) -> None:
        """One durable append: a one-row transaction."""
        msg = message(i)
        row = (sid, msg["role"], msg["content"], now_iso(), None)
        self.conn.execute("BEGIN")
        self.conn.execute(INSERT_MESSAGE, row)
        self.conn.execute("COMMIT")

    def append_bump(self, sid: str, i: int) -> None:
        """A durable append with the library's statements: bump the counters, insert."""
        msg = message(i)
        row = (sid, msg["role"], msg["content"], now_iso(), None)
        size = len(msg["role"]) + len(msg["content"].encode()) + len(row[3])
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute(BUMP_SESSION, (now_iso(), 1, size, sid)).fetchall()
        self.conn.execute(INSERT_MESSAGE, row)
        self.conn.execute("COMMIT")

    def insert_many(self, rows: list[tuple[Any, ...]]) -> None:
        self.conn.execute("BEGIN")
        self.conn.executemany(INSERT_MESSAGE, rows)
        self.conn.execute("COMMIT")

    def resume_tail(self, name: str) -> list[dict[str, Any]]:
        """Look the session up by name, read its newest messages, oldest first, as dicts."""
        found = self.conn.execute("SELECT id FROM sessions WHERE name = ?", (name,)).fetchone()
        rows = self.conn.execute(TAIL_QUERY, (found[0], TAIL)).fetchall()
        out = []
        for _id, role, text, stamp, extra in reversed(rows):
            msg: dict[str, Any] = {"role": role, "content": text, "timestamp": stamp}
            if extra is not None:
                msg.update(json.loads(extra))
            out.append(msg)
        return out

    def fetch_all(self, sql: str) -> list[Any]:
        return self.conn.execute(sql).fetchall()

    def list_sessions(self) -> list[dict[str, Any]]:
        rows = self.conn.execute(RAW_LIST).fetchall()
        return [
            {
                "id": sid,
                "name": name,
                "created_at": datetime.fromisoformat(created),
                "updated_at": datetime.fromisoformat(updated),
                "metadata": json.loads(meta) if meta else {},
                "message_count": count,
                "size_bytes": size,
            }
            for sid, name, created, updated, meta, count, size in rows
        ]

    def close(self) -> None:
        self.conn.close()


def config(path: Path) -> dict[str, Any]:
    return {"session": {"storage_path": str(path)}}


# -- 1. durable append --------------------------------------------------------------------


async def bench_append(work: Path, ddl: list[str], sizes: Sizes, report: Table) -> None:
    raw = Raw(work / "append-raw" / "raw.db", ddl)
    raw_sid = raw.new_session("raw")
    raw_bump_sid = raw.new_session("raw-bump")
    async with AsyncSessionManager(config(work / "append-async")) as am:
        with SessionManager(config(work / "append-sync")) as sm:
            a_sess = await am.create_session("bench")
            s_sess = sm.create_session("bench")
            counter = 0

            async def append_async(i: int) -> None:
                a_sess.add_message(message(i))
                await am.save_session(a_sess)

            def append_sync(i: int) -> None:
                s_sess.add_message(message(i))
                sm.save_session(s_sess)

            async def one(kind: str, n: int) -> list[float]:
                nonlocal counter
                indexes = [(counter + k) % TEXTS for k in range(1, n + 1)]
                counter += n
                if kind == "async":
                    return await time_each_async(append_async, indexes)
                if kind == "sync":
                    return plain(time_each, append_sync, indexes)
                if kind == "raw":
                    return time_each(functools.partial(raw.append, raw_sid), indexes)
                return time_each(functools.partial(raw.append_bump, raw_bump_sid), indexes)

            samples, walls, n = await append_rounds(
                one, ("raw", "raw_bump", "async", "sync"), sizes.append_ops, sizes.append_rounds
            )
            stored = (await am.load_session("bench")).message_count
            assert stored == a_sess.message_count, "async appends were not all stored"
    raw.close()

    base = median(samples["raw"])
    report.add(
        "1",
        f"durable append x{n}: raw sqlite3 (BEGIN; INSERT; COMMIT)",
        us(base),
        per_s(n, walls["raw"]),
    )
    bump = median(samples["raw_bump"])
    report.add(
        "1",
        "  raw sqlite3, the library's statements (UPDATE..RETURNING; INSERT)",
        us(bump),
        per_s(n, walls["raw_bump"]),
        f"{base / bump:.2f}x raw",
    )
    for kind, label in (
        ("async", "async API (add_message + save_session)"),
        ("sync", "sync shim (add_message + save_session)"),
    ):
        mine = median(samples[kind])
        ratio = base / mine  # our throughput as a fraction of raw's
        report.add(
            "1",
            f"  {label}",
            us(mine),
            per_s(n, walls[kind]),
            f"{ratio:.2f}x raw",
            ">= 0.10x raw",
            verdict(ratio >= 0.10),
        )


# -- 2. one save of many new messages -------------------------------------------------------


async def bench_bulk(work: Path, ddl: list[str], sizes: Sizes, report: Table) -> None:
    n = sizes.bulk_messages
    raw = Raw(work / "bulk-raw" / "raw.db", ddl)
    # "raw-paused" takes the sync path: a second, unreported sync save each round, kept so
    # that the figures compare with those of earlier runs
    kinds = ("raw", "raw-paused", "async", "sync")
    made = dict.fromkeys(kinds, 0)
    async with AsyncSessionManager(config(work / "bulk-async")) as am:
        with SessionManager(config(work / "bulk-sync")) as sm:

            async def once(kind: str) -> float:
                rep = made[kind]
                made[kind] += 1
                if kind == "raw":
                    sid = raw.new_session(f"bulk-{rep}")
                    rows = [message_row(sid, i) for i in range(n)]
                    t0 = time.perf_counter()
                    raw.insert_many(rows)
                    return time.perf_counter() - t0
                if kind == "async":
                    return await save_new(am, f"bulk-{rep}", n)
                return plain(save_new_sync, sm, f"bulk-{rep}", n)

            times = await interleaved(once, kinds, sizes.bulk_repeats, warmup=0, collect=True)
    raw.close()

    base = median(times["raw"])
    reps = sizes.bulk_repeats
    report.add(
        "2",
        f"save {n:,} new messages x{reps}: raw executemany, one transaction",
        ms(base),
        per_s(n, base),
    )
    for kind, label in (("async", "async save_session"), ("sync", "sync save_session")):
        mine = median(times[kind])
        ratio = mine / base
        report.add(
            "2",
            f"  {label}",
            ms(mine),
            per_s(n, mine),
            f"{ratio:.2f}x raw time",
            "<= 2.00x",
            verdict(ratio <= 2.0),
        )


# -- 3. resume + get_messages(limit=50) -------------------------------------------------------


async def build_session(manager: AsyncSessionManager, name: str, count: int) -> None:
    sess = await manager.create_session(name)
    for i in range(count):
        sess.add_message(message(i))
    await manager.save_session(sess)


async def bench_resume(work: Path, ddl: list[str], sizes: Sizes, report: Table) -> None:
    big, small = sizes.big_session, sizes.small_session
    where = work / "resume"
    raw = Raw(work / "resume-raw" / "raw.db", ddl)
    raw.new_session("big", big)
    raw.new_session("small", small)
    build_start = time.perf_counter()
    async with AsyncSessionManager(config(where)) as am:
        await build_session(am, "big", big)
        await build_session(am, "small", small)
    build = time.perf_counter() - build_start
    report.notes.append(f"note 3: built the {big:,}-message session via the API in {build:.2f} s")

    keys = [(api, name) for api in ("raw", "async", "sync") for name in ("big", "small")]
    async with AsyncSessionManager(config(where)) as am:
        with SessionManager(config(where)) as sm:

            def resume_raw(name: str) -> float:
                t0 = time.perf_counter()
                got = raw.resume_tail(name)
                took = time.perf_counter() - t0
                assert len(got) == TAIL
                return took

            async def one(key: tuple[str, str]) -> float:
                api, name = key
                if api == "async":
                    return await resume(am, name)
                if api == "sync":
                    return plain(resume_sync, sm, name)
                return resume_raw(name)

            times = await interleaved(one, keys, sizes.resume_repeats, warmup=5)
    raw.close()

    reps = sizes.resume_repeats
    med = {key: median(v) for key, v in times.items()}
    report.add(
        "3", f"resume + get_messages(limit=50) x{reps}: raw, {big:,} msgs", us(med[("raw", "big")])
    )
    report.add(
        "3",
        f"  raw, {small:,} msgs",
        us(med[("raw", "small")]),
        "",
        f"{med[('raw', 'big')] / med[('raw', 'small')]:.2f}x big/small",
    )
    for api in ("async", "sync"):
        mine_big, mine_small = med[(api, "big")], med[(api, "small")]
        scale = mine_big / mine_small
        report.add("3", f"  {api} API, {small:,} msgs", us(mine_small))
        report.add(
            "3",
            f"  {api} API, {big:,} msgs vs {small:,} msgs",
            us(mine_big),
            "",
            f"{scale:.2f}x big/small",
            "<= 1.50x",
            verdict(scale <= 1.5),
        )
        ratio = mine_big / med[("raw", "big")]
        report.add(
            "3",
            f"  {api} API, {big:,} msgs vs raw indexed tail query",
            us(mine_big),
            "",
            f"{ratio:.2f}x raw time",
            "<= 5.00x",
            verdict(ratio <= 5.0),
        )


# -- 4. list_sessions -------------------------------------------------------------------------


async def bench_list(work: Path, ddl: list[str], sizes: Sizes, report: Table) -> None:
    n = sizes.list_sessions
    where = work / "list"
    raw = Raw(work / "list-raw" / "raw.db", ddl)
    for i in range(n):
        raw.new_session(f"session-{i:06d}", 2)
    build_start = time.perf_counter()
    async with AsyncSessionManager(config(where)) as am:
        for i in range(n):
            sess = await am.create_session(f"session-{i:06d}")
            sess.add_message(message(2 * i))
            sess.add_message(message(2 * i + 1))
            await am.save_session(sess)
    build = time.perf_counter() - build_start
    report.notes.append(
        f"note 4: created {n:,} sessions via the API (create + 2 messages + save) in "
        f"{build:.1f} s = {build / n * 1e3:.2f} ms each"
    )

    query_only = {
        sql: time_sync(functools.partial(raw.fetch_all, sql), sizes.list_repeats)
        for sql in (RAW_LIST, RAW_LIST_UNORDERED)
    }
    async with AsyncSessionManager(config(where)) as am:
        with SessionManager(config(where)) as sm:
            times = await interleaved(
                lambda kind: _list_once(kind, am, sm, raw, n),
                ("raw", "raw-paused", "async", "sync"),
                sizes.list_repeats,
            )
    raw.close()

    base = median(times["raw"])
    reps = sizes.list_repeats
    report.add("4", f"list {n:,} sessions x{reps}: raw SELECT FROM sessions -> dicts", ms(base))
    for kind in ("async", "sync"):
        mine = median(times[kind])
        report.add(
            "4",
            f"  {kind} list_sessions()",
            ms(mine),
            "",
            f"{mine / base:.2f}x raw time",
            "< 50 ms",
            verdict(mine < 0.050),
        )
    paused = median(times["raw-paused"])
    report.add(
        "4",
        "  raw -> dicts with the collector paused (as list_sessions does)",
        ms(paused),
        "",
        f"{paused / base:.2f}x raw time",
    )
    report.add(
        "4",
        "  raw query alone: fetchall(), ORDER BY created_at, name",
        ms(median(query_only[RAW_LIST])),
    )
    report.add(
        "4",
        "  raw query alone: fetchall(), no ORDER BY",
        ms(median(query_only[RAW_LIST_UNORDERED])),
    )


def _list_sync(sm: SessionManager) -> tuple[float, int]:
    t0 = time.perf_counter()
    got = sm.list_sessions()
    return time.perf_counter() - t0, len(got)


async def _list_once(
    kind: str, am: AsyncSessionManager, sm: SessionManager, raw: Raw, expected: int
) -> float:
    if kind == "sync":
        took, count = plain(_list_sync, sm)
        assert count == expected
        return took
    t0 = time.perf_counter()
    if kind == "async":
        got: list[Any] = await am.list_sessions()
    elif kind == "raw-paused":
        gc.disable()
        try:
            got = raw.list_sessions()
        finally:
            gc.enable()
    else:
        got = raw.list_sessions()
    took = time.perf_counter() - t0
    assert len(got) == expected
    return took


# -- breakdown ---------------------------------------------------------------------------------


async def bench_breakdown(work: Path, ddl: list[str], sizes: Sizes, report: Table) -> None:
    reps = sizes.micro_repeats
    raw = Raw(work / "micro-raw" / "raw.db", ddl)
    raw.new_session("one", 1)
    conn = raw.conn

    def empty_write() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("COMMIT")

    def point_read() -> None:
        conn.execute("BEGIN")
        conn.execute("SELECT * FROM sessions WHERE name = ?", ("one",)).fetchall()
        conn.execute("COMMIT")

    rows: list[tuple[str, list[float]]] = []
    rows.append(
        (
            "raw sqlite3: empty write transaction (BEGIN IMMEDIATE; COMMIT)",
            time_sync(empty_write, reps),
        )
    )
    rows.append(
        ("raw sqlite3: session row by name, in a read transaction", time_sync(point_read, reps))
    )

    async with aiosqlite.connect(work / "micro-raw" / "raw.db") as adb:
        hops = []
        for _ in range(reps):
            t0 = time.perf_counter()
            await adb.execute_fetchall("SELECT 1")
            hops.append(time.perf_counter() - t0)
        rows.append(("aiosqlite: execute_fetchall('SELECT 1') (one thread hop)", hops))

    async with AsyncSessionManager(config(work / "micro")) as am:
        with SessionManager(config(work / "micro")) as sm:
            a_sess = await am.create_session("one")
            a_sess.add_message(message(0))
            await am.save_session(a_sess)
            s_sess = sm.load_session("one")

            scratch = await am.create_session("scratch")  # never saved
            adds = []
            for i in range(reps):
                t0 = time.perf_counter()
                scratch.add_message(message(i % TEXTS))
                adds.append(time.perf_counter() - t0)
            rows.append(("add_message alone (validate + encode, no I/O)", adds))

            noop = []
            for _ in range(reps):
                t0 = time.perf_counter()
                await am.save_session(a_sess)
                noop.append(time.perf_counter() - t0)
            rows.append(("async save_session with nothing to save (no I/O)", noop))

            rows.append(
                (
                    "sync save_session with nothing to save (runs the private loop, no I/O)",
                    plain(time_sync, lambda: sm.save_session(s_sess), reps),
                )
            )
            rows.append(
                (
                    "  the same, called from a thread running an event loop (a notebook)",
                    time_sync(lambda: sm.save_session(s_sess), reps),
                )
            )

            infos = []
            for _ in range(reps):
                t0 = time.perf_counter()
                await am.get_session_info("one")
                infos.append(time.perf_counter() - t0)
            rows.append(("async get_session_info (one read transaction)", infos))
            rows.append(
                (
                    "sync get_session_info (one read transaction)",
                    plain(time_sync, lambda: sm.get_session_info("one"), reps),
                )
            )
    raw.close()
    for label, samples in rows:
        report.add("b", label, us(median(samples)))


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, ("1", "2", "3", "4", "b")).parse_args(argv)
    sizes = QUICK if args.quick else FULL
    parts = set(args.only or ("1", "2", "3", "4", "b"))

    build_texts()
    print(environment("SQLAlchemy", "aiosqlite", "coda-session", sqlite=True))
    print(mode(args.quick, "medians of repeated perf_counter timings"))
    report = Table(REPORT_HEAD, left=2, shown=(2, 4))
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="coda-bench-"))
    try:
        ddl = library_ddl(work)
        benches = (
            ("1", "1. durable append", bench_append),
            ("2", "2. one save of many new messages", bench_bulk),
            ("3", "3. resume + get_messages(limit=50)", bench_resume),
            ("4", "4. list_sessions", bench_list),
            ("b", "breakdown", bench_breakdown),
        )
        for key, title, bench in benches:
            if key in parts:
                with section(title):
                    asyncio.run(bench(work, ddl, sizes, report))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.print()
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
