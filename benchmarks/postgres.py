"""PostgreSQL rows of the benchmarks: coda_session on a server against raw asyncpg.

Run ``python benchmarks/postgres.py`` (a minute or two) or ``python benchmarks/postgres.py
--quick`` (smaller sizes; the CI smoke run). The server comes from ``CODA_BENCH_POSTGRES_URL``,
else ``CODA_TEST_POSTGRES_URL`` (a SQLAlchemy URL, ``postgresql+asyncpg://user:password@host:
port/dbname``, of a role that may create databases; ``eval "$(scripts/pg-test-server start)"``
starts one). With neither set the script prints one line saying the rows were skipped and
exits 0.

Each part runs in a database of its own (``CREATE DATABASE bench_<random>_<part>``, its schema
made by the library), dropped at the end. The baseline is one plain asyncpg connection
running, in the same database and the same run, the statements a careful hand-written
program needs for the same work; where that is the library's own statement (the text of
:mod:`coda_session.repository.sql.pg_sql`, with the same parameters) the row says so.
Ours and the baseline run interleaved, round by round, in rotating order; every figure is
the median of the per-operation ``time.perf_counter`` timings; every ratio is ours / raw.
Each target prints PASS or MISS; nothing fails on timing and the script exits 0.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from harness import (
    TAIL,
    TEXTS,
    Server,
    Table,
    append_rounds,
    arguments,
    build_texts,
    content,
    environment,
    interleaved,
    median,
    message,
    mode,
    plain,
    postgres_url,
    resume,
    resume_sync,
    save_new,
    save_new_sync,
    section,
    time_each,
    time_each_async,
    us,
    verdict,
)

from coda_session import AsyncSessionManager, SessionConfig, SessionManager
from coda_session.repository.sql.postgresql import statements as pg_sql
from coda_session.repository.sql.postgresql.search import tsvector_literal
from coda_session.search.analysis import index_body, terms

#: The size limit the library passes with every save (APPEND's max_bytes); the baseline checks
#: the same one.
MAX_BYTES = SessionConfig().max_session_bytes

# -- sizes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    append_ops: int  # 1: durable appends per contender
    append_rounds: int  # ... split into this many interleaved rounds
    bulk_messages: int  # 2: messages in one save
    bulk_repeats: int
    big_session: int  # 3: messages in the big session (seeded by SQL)
    small_session: int  # ... and in the small one (saved through the API)
    resume_repeats: int
    list_sessions: int  # 4: sessions listed
    list_repeats: int


FULL = Sizes(
    append_ops=2_000,
    append_rounds=4,
    bulk_messages=1_000,
    bulk_repeats=15,
    big_session=100_000,
    small_session=100,
    resume_repeats=300,
    list_sessions=10_000,
    list_repeats=25,
)
QUICK = Sizes(
    append_ops=400,
    append_rounds=2,
    bulk_messages=200,
    bulk_repeats=5,
    big_session=10_000,
    small_session=100,
    resume_repeats=60,
    list_sessions=1_000,
    list_repeats=10,
)

TABLE_HEAD = ("#", "measurement", "ours", "raw", "ratio", "target", "verdict")


def compare(
    table: Table, key: str, label: str, ours: float, raw: float, limit: float | None
) -> None:
    """A row of ours against raw: ratio ours / raw, checked against ``limit`` if given."""
    ratio = ours / raw
    table.add(
        key,
        label,
        us(ours),
        us(raw),
        f"{ratio:.2f}x",
        f"<= {limit:.2f}x" if limit is not None else "",
        verdict(ratio <= limit) if limit is not None else "",
    )


async def session_row(conn: Any, name: str) -> tuple[str, int]:
    """A session's id and metadata version (the raw program's own session, made untimed)."""
    row = await conn.fetchrow("SELECT id, metadata_version FROM sessions WHERE name = $1", name)
    assert row is not None, name
    return str(row[0]), int(row[1])


def raw_fields(i: int) -> tuple[str, str, str, int, int]:
    """What a hand-written program stores for ``message(i)``: role, content, an ISO-8601
    UTC timestamp, the size (UTF-8 bytes of role + content + timestamp) and the characters
    (role + content), as the library computes them."""
    msg = message(i)
    role, text = msg["role"], msg["content"]
    ts = datetime.now(UTC).isoformat()
    return role, text, ts, len(role) + len(text.encode()) + len(ts), len(role) + len(text)


async def raw_append_rows(
    conn: Any, sid: str, version: int, rows: list[tuple[str, str, str, int, int]]
) -> list[int]:
    """The library's one-statement append (pg_sql.APPEND), the same parameters."""
    roles, texts, stamps, sizes, chars = (list(c) for c in zip(*rows, strict=True))
    nothing = [None] * len(rows)
    size = sum(sizes)
    # the statement indexes the rows for search too: their index bodies and tsvectors
    # (issue 18), computed as the library computes them
    bodies = [index_body(terms(t)) for t in texts]
    params = {
        "session_id": sid,
        "roles": roles,
        "contents": texts,
        "timestamps": stamps,
        "extras": nothing,
        "packed": nothing,
        "sizes": sizes,
        "chars": chars,
        "max_bytes": MAX_BYTES,
        "metadata_version": version,
        "updated_at": datetime.now(UTC),
        "size_delta": size,
        "root_id": sid,  # the tree's key: a session that is no branch is its own root
        "bodies": bodies,
        "tsvs": [tsvector_literal(b.split()) for b in bodies],
    }
    found = await conn.fetch(pg_sql.APPEND.sql, *pg_sql.APPEND.args(params))
    if not found or found[0][3] is None:
        raise RuntimeError("raw append: session gone or full")
    return [int(i) for i in found[0][2]]


NAIVE_LOCK = (
    "SELECT message_count, size_bytes, last_message_id FROM sessions WHERE id = $1 FOR UPDATE"
)
NAIVE_INSERT = (
    "INSERT INTO messages (session_id, role, content, timestamp, metadata, content_zlib, "
    "size_bytes, char_count, root_id) VALUES ($1, $2, $3, $4, NULL, NULL, $5, $6, $1) "
    "RETURNING id"
)
NAIVE_UPDATE = (
    "UPDATE sessions SET updated_at = $2, message_count = message_count + 1, "
    "size_bytes = size_bytes + $3, last_message_id = greatest(last_message_id, $4) "
    "WHERE id = $1"
)


async def raw_append_naive(conn: Any, sid: str, i: int) -> int:
    """The same durable append in five round trips: BEGIN; SELECT ... FOR UPDATE;
    INSERT ... RETURNING; UPDATE sessions; COMMIT."""
    role, text, ts, size, chars = raw_fields(i)
    async with conn.transaction():
        cur = await conn.fetchrow(NAIVE_LOCK, sid)
        if cur is None or cur[1] + size > MAX_BYTES:
            raise RuntimeError("raw append: session gone or full")
        new_id = await conn.fetchval(NAIVE_INSERT, sid, role, text, ts, size, chars)
        await conn.execute(NAIVE_UPDATE, sid, datetime.now(UTC), size, new_id)
    return int(new_id)


# -- 1. durable append --------------------------------------------------------------------


async def bench_append(server: Server, sizes: Sizes, table: Table) -> None:
    db = await server.create("append")
    cfg = server.library_config(db)
    conn = await server.connect(db)
    kinds = ("raw", "raw_naive", "async", "sync")
    try:
        async with AsyncSessionManager(cfg) as am:
            with SessionManager(cfg) as sm:
                a_sess = await am.create_session("async")
                s_sess = sm.create_session("sync")
                await am.create_session("raw")
                await am.create_session("raw-naive")
                raw_sid, raw_version = await session_row(conn, "raw")
                naive_sid, _ = await session_row(conn, "raw-naive")
                counter = 0
                stored: dict[str, int] = dict.fromkeys(kinds, 0)

                async def append_async(i: int) -> None:
                    a_sess.add_message(message(i))
                    await am.save_session(a_sess)

                def append_sync(i: int) -> None:
                    s_sess.add_message(message(i))
                    sm.save_session(s_sess)

                async def append_raw(i: int) -> None:
                    await raw_append_rows(conn, raw_sid, raw_version, [raw_fields(i)])

                async def append_naive(i: int) -> None:
                    await raw_append_naive(conn, naive_sid, i)

                async def one(kind: str, n: int) -> list[float]:
                    nonlocal counter
                    stored[kind] += n
                    indexes = [(counter + k) % TEXTS for k in range(1, n + 1)]
                    counter += n
                    if kind == "async":
                        return await time_each_async(append_async, indexes)
                    if kind == "sync":
                        return plain(time_each, append_sync, indexes)
                    if kind == "raw":
                        return await time_each_async(append_raw, indexes)
                    return await time_each_async(append_naive, indexes)

                samples, _, n = await append_rounds(
                    one, kinds, sizes.append_ops, sizes.append_rounds
                )

                # every contender's appends are all stored, and the library reads the raw
                # ones back as its own
                for kind, name in (
                    ("async", "async"),
                    ("sync", "sync"),
                    ("raw", "raw"),
                    ("raw_naive", "raw-naive"),
                ):
                    back = await am.load_session(name)
                    assert back.message_count == stored[kind], (name, back.message_count)
                    newest = (await back.get_messages(limit=1))[0]
                    assert newest["content"] in {content(i) for i in range(TEXTS)}
                    count = await conn.fetchval(
                        "SELECT count(*) FROM messages m JOIN sessions s ON s.id = m.session_id "
                        "WHERE s.name = $1",
                        name,
                    )
                    assert count == stored[kind], (name, count)
                trip = []
                for _ in range(200):
                    t0 = time.perf_counter()
                    await conn.fetchval("SELECT 1")
                    trip.append(time.perf_counter() - t0)
    finally:
        await conn.close()

    base, naive = median(samples["raw"]), median(samples["raw_naive"])
    table.add("1", "one round trip: raw SELECT 1 (for scale)", "", us(median(trip)))
    table.add(
        "1",
        f"durable append x{n}: raw, pg_sql.APPEND (the library's statement, same params; 1 trip)",
        "",
        us(base),
    )
    table.add(
        "1",
        "  raw naive: BEGIN; SELECT..FOR UPDATE; INSERT..RETURNING; UPDATE; COMMIT (5 trips)",
        "",
        us(naive),
        f"{naive / base:.2f}x APPEND",
    )
    for kind, label in (
        ("async", "async API: add_message + save_session"),
        ("sync", "sync API: add_message + save_session"),
    ):
        mine = median(samples[kind])
        compare(table, "1", f"  {label}, vs raw APPEND", mine, base, 1.5)
        compare(table, "1", f"  {label}, vs raw naive (informative)", mine, naive, None)


# -- 2. one save of many new messages -------------------------------------------------------


async def bench_bulk(server: Server, sizes: Sizes, table: Table) -> None:
    db = await server.create("bulk")
    cfg = server.library_config(db)
    conn = await server.connect(db)
    n = sizes.bulk_messages
    kinds = ("raw", "async", "sync")
    try:
        async with AsyncSessionManager(cfg) as am:
            with SessionManager(cfg) as sm:
                # the warm-up's sessions are <kind>--1, the timed ones <kind>-0, <kind>-1, ...
                made = dict.fromkeys(kinds, -1)

                async def once(kind: str) -> float:
                    name = f"{kind}-{made[kind]}"
                    made[kind] += 1
                    if kind == "raw":
                        await am.create_session(name)  # the raw program's session (untimed)
                        sid, ver = await session_row(conn, name)
                        rows = [raw_fields(i) for i in range(n)]
                        t0 = time.perf_counter()
                        ids = await raw_append_rows(conn, sid, ver, rows)
                        took = time.perf_counter() - t0
                        assert len(ids) == n
                        return took
                    if kind == "async":
                        return await save_new(am, name, n)
                    return plain(save_new_sync, sm, name, n)

                times = await interleaved(once, kinds, sizes.bulk_repeats)
                for kind in kinds:
                    back = await am.load_session(f"{kind}-0")
                    assert back.message_count == n, (kind, back.message_count)
                    got = await back.get_messages(limit=2)
                    assert [m["content"] for m in got] == [content(n - 2), content(n - 1)]
    finally:
        await conn.close()

    base = median(times["raw"])
    reps = sizes.bulk_repeats
    table.add(
        "2",
        f"save {n:,} new messages x{reps}: raw, pg_sql.APPEND with arrays (same params)",
        "",
        us(base),
    )
    for kind in ("async", "sync"):
        compare(table, "2", f"  {kind} save_session", median(times[kind]), base, 2.0)


# -- 3. resume + get_messages(limit=50) -------------------------------------------------------

#: The big session's rows, made by the server: message i is ``message(i % TEXTS)``
#: (role by i's parity), with an ISO-8601 timestamp one millisecond per message, and its
#: size and characters as the library computes them.
SEED_MESSAGES = (
    "INSERT INTO messages (session_id, role, content, timestamp, metadata, content_zlib, "
    "size_bytes, char_count) "
    "SELECT $1::text, x.role, x.content, x.ts, NULL, NULL, "
    "octet_length(x.role) + octet_length(x.content) + octet_length(x.ts), "
    "char_length(x.role) + char_length(x.content) "
    "FROM (SELECT g, CASE WHEN g % 2 = 0 THEN 'user' ELSE 'assistant' END AS role, "
    "($2::text[])[g % $4::int + 1] AS content, "
    "to_char(timestamptz '2026-01-01 00:00:00+00' + g * interval '1 millisecond', "
    "'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '+00:00' AS ts "
    "FROM generate_series(0, $3::int - 1) AS g) x ORDER BY x.g"
)
#: The session row's counters, brought in step with its messages.
FIX_COUNTERS = (
    "UPDATE sessions s SET message_count = a.n, size_bytes = a.size, last_message_id = a.last "
    "FROM (SELECT count(*) AS n, coalesce(sum(size_bytes), 0) AS size, "
    "coalesce(max(id), 0) AS last FROM messages WHERE session_id = $1) a WHERE s.id = $1"
)


async def seed_messages(conn: Any, sid: str, count: int) -> None:
    texts = [content(i) for i in range(TEXTS)]
    async with conn.transaction():
        await conn.execute(SEED_MESSAGES, sid, texts, count, TEXTS)
        await conn.execute(FIX_COUNTERS, sid)


def raw_tail(rows: list[Any]) -> list[dict[str, Any]]:
    """LOAD_BY_NAME's rows (newest first) as the message dicts, oldest first."""
    out = []
    for r in reversed(rows):
        # the session's columns, then the message's (id, role, content, timestamp, ...)
        m = r[12:]
        if m[0] is None:
            continue
        text = m[2]
        if text is None and m[5] is not None:
            text = zlib.decompress(m[5])[1:].decode()
        msg: dict[str, Any] = {"role": m[1], "content": text, "timestamp": m[3]}
        if m[4] is not None:
            msg.update(json.loads(m[4]))
        out.append(msg)
    return out


async def bench_resume(server: Server, sizes: Sizes, table: Table) -> None:
    big, small = sizes.big_session, sizes.small_session
    db = await server.create("resume")
    cfg = server.library_config(db)
    conn = await server.connect(db)
    keys = [(api, name) for api in ("raw", "async", "sync") for name in ("big", "small")]
    try:
        async with AsyncSessionManager(cfg) as am:
            await am.create_session("big")
            sid, _ = await session_row(conn, "big")
            t0 = time.perf_counter()
            await seed_messages(conn, sid, big)
            await conn.execute("ANALYZE sessions")
            await conn.execute("ANALYZE messages")
            table.notes.append(
                f"note 3: seeded the {big:,}-message session by INSERT ... SELECT "
                f"generate_series (+ counters, ANALYZE) in {time.perf_counter() - t0:.2f} s"
            )
            sess = await am.create_session("small")
            for i in range(small):
                sess.add_message(message(i % TEXTS))
            await am.save_session(sess)

            # the library reads the seeded rows as its own
            back = await am.load_session("big")
            assert back.message_count == big, back.message_count
            size = await conn.fetchval(
                "SELECT sum(size_bytes) FROM messages WHERE session_id=$1", sid
            )
            info = await am.get_session_info("big")
            assert info is not None
            assert info.size_bytes == size, (info.size_bytes, size)
            tail = await back.get_messages(limit=TAIL)
            want = [message(i % TEXTS) for i in range(big - TAIL, big)]
            got = [{"role": m["role"], "content": m["content"]} for m in tail]
            assert got == [{"role": w["role"], "content": w["content"]} for w in want]
            assert tail[-1]["timestamp"].endswith("+00:00")
            load = pg_sql.LOAD_BY_NAME
            rows = await conn.fetch(load.sql, *load.args({"name": "big", "tail": TAIL}))
            assert raw_tail(rows) == tail

            with SessionManager(cfg) as sm:

                async def resume_raw(name: str) -> float:
                    t0 = time.perf_counter()
                    args = load.args({"name": name, "tail": TAIL})
                    got = raw_tail(await conn.fetch(load.sql, *args))
                    took = time.perf_counter() - t0
                    assert len(got) == TAIL
                    return took

                async def one(key: tuple[str, str]) -> float:
                    api, name = key
                    if api == "async":
                        return await resume(am, name)
                    if api == "sync":
                        return plain(resume_sync, sm, name)
                    return await resume_raw(name)

                times = await interleaved(one, keys, sizes.resume_repeats, warmup=5)
    finally:
        await conn.close()

    reps = sizes.resume_repeats
    med = {key: median(v) for key, v in times.items()}
    table.add(
        "3",
        f"resume + get_messages(limit=50) x{reps}: raw, pg_sql.LOAD_BY_NAME -> dicts, "
        f"{small:,} msgs",
        "",
        us(med[("raw", "small")]),
    )
    raw_scale = med[("raw", "big")] / med[("raw", "small")]
    table.add("3", f"  raw, {big:,} msgs", "", us(med[("raw", "big")]), f"{raw_scale:.2f}x small")
    for api in ("async", "sync"):
        for name, count in (("small", small), ("big", big)):
            compare(
                table,
                "3",
                f"  {api} load_session + get_messages, {count:,} msgs",
                med[(api, name)],
                med[("raw", name)],
                2.0,
            )
        mine_big, mine_small = med[(api, "big")], med[(api, "small")]
        scale = mine_big / mine_small
        table.add(
            "3",
            f"  {api}: {big:,} msgs vs {small:,} msgs (ours / ours)",
            us(mine_big),
            "",
            f"{scale:.2f}x small",
            "<= 1.50x",
            verdict(scale <= 1.5),
        )


# -- 4. list_sessions -------------------------------------------------------------------------

#: Sessions 1..$1-1 made by the server from session 0 (made through the API): the same
#: metadata, each a millisecond younger than the one before, two messages each.
SEED_SESSIONS = (
    "INSERT INTO sessions (id, name, created_at, updated_at, metadata, message_count, "
    "size_bytes, metadata_version, last_message_id) "
    "SELECT gen_random_uuid()::text, 'session-' || lpad(g::text, 6, '0'), "
    "t.created_at + g * interval '1 millisecond', t.updated_at + g * interval '1 millisecond', "
    "t.metadata, 0, 0, t.metadata_version, 0 "
    "FROM sessions t, generate_series(1, $1::int - 1) AS g WHERE t.name = 'session-000000'"
)
SEED_SESSION_MESSAGES = (
    "INSERT INTO messages (session_id, role, content, timestamp, metadata, content_zlib, "
    "size_bytes, char_count) "
    "SELECT s.id, m.role, m.content, m.timestamp, m.metadata, m.content_zlib, m.size_bytes, "
    "m.char_count FROM sessions s, messages m JOIN sessions t ON t.id = m.session_id "
    "WHERE t.name = 'session-000000' AND s.name <> 'session-000000' ORDER BY s.name, m.id"
)
FIX_ALL_COUNTERS = (
    "UPDATE sessions s SET message_count = a.n, size_bytes = a.size, last_message_id = a.last "
    "FROM (SELECT session_id, count(*) AS n, sum(size_bytes) AS size, max(id) AS last "
    "FROM messages GROUP BY session_id) a WHERE s.id = a.session_id"
)
RAW_LIST = (
    "SELECT id, name, created_at, updated_at, metadata, message_count, size_bytes "
    "FROM sessions ORDER BY created_at, name"
)


async def bench_list(server: Server, sizes: Sizes, table: Table) -> None:
    n = sizes.list_sessions
    db = await server.create("list")
    cfg = server.library_config(db)
    conn = await server.connect(db)
    kinds = ("raw", "raw-paused", "async", "sync")
    fetch_only: list[float] = []
    try:
        async with AsyncSessionManager(cfg) as am:
            first = await am.create_session("session-000000")
            first.add_message(message(0))
            first.add_message(message(1))
            await am.save_session(first)
            t0 = time.perf_counter()
            async with conn.transaction():
                await conn.execute(SEED_SESSIONS, n)
                await conn.execute(SEED_SESSION_MESSAGES)
                await conn.execute(FIX_ALL_COUNTERS)
            await conn.execute("ANALYZE sessions")
            await conn.execute("ANALYZE messages")
            table.notes.append(
                f"note 4: seeded {n - 1:,} sessions (2 messages each) by INSERT ... SELECT "
                f"from one made through the API in {time.perf_counter() - t0:.2f} s"
            )

            # the library reads the seeded rows as its own
            infos = await am.list_sessions()
            assert [i.name for i in infos] == [f"session-{k:06d}" for k in range(n)]
            model = infos[0]
            for info in (infos[1], infos[n // 2], infos[-1]):
                assert info.message_count == 2 and info.size_bytes == model.size_bytes, info
                assert info.metadata == model.metadata and info.created_at > model.created_at
            last = await am.load_session(infos[-1].name)
            got = await last.get_messages()
            assert [m["content"] for m in got] == [content(0), content(1)]

            def list_raw(rows: list[Any]) -> list[tuple[Any, ...]]:
                return [
                    (sid, name, created, updated, json.loads(meta) if meta else {}, count, size)
                    for sid, name, created, updated, meta, count, size in rows
                ]

            with SessionManager(cfg) as sm:

                def list_sync() -> tuple[float, int]:
                    t0 = time.perf_counter()
                    got = sm.list_sessions()
                    return time.perf_counter() - t0, len(got)

                async def once(kind: str) -> float:
                    if kind == "sync":
                        took, count = plain(list_sync)
                        assert count == n
                        return took
                    t0 = time.perf_counter()
                    if kind == "async":
                        listed: list[Any] = await am.list_sessions()
                    elif kind == "raw-paused":
                        rows = await conn.fetch(RAW_LIST)
                        gc.disable()
                        try:
                            listed = list_raw(rows)
                        finally:
                            gc.enable()
                    else:
                        listed = list_raw(await conn.fetch(RAW_LIST))
                    took = time.perf_counter() - t0
                    assert len(listed) == n
                    return took

                times = await interleaved(once, kinds, sizes.list_repeats)
                for _ in range(sizes.list_repeats):
                    t0 = time.perf_counter()
                    await conn.fetch(RAW_LIST)
                    fetch_only.append(time.perf_counter() - t0)
    finally:
        await conn.close()

    base = median(times["raw"])
    reps = sizes.list_repeats
    table.add(
        "4",
        f"list {n:,} sessions x{reps}: raw SELECT .. ORDER BY created_at, name -> tuples "
        "(metadata json.loads)",
        "",
        us(base),
    )
    paused = median(times["raw-paused"])
    table.add(
        "4",
        "  raw, tuples built with the collector paused (as list_sessions does)",
        "",
        us(paused),
        f"{paused / base:.2f}x raw",
    )
    table.add(
        "4", "  raw fetch alone (asyncpg Records, no Python work)", "", us(median(fetch_only))
    )
    for kind in ("async", "sync"):
        compare(table, "4", f"  {kind} list_sessions()", median(times[kind]), base, 2.0)


# -- main ---------------------------------------------------------------------------------------


Bench = Callable[[Server, Sizes, Table], Awaitable[None]]


async def run(url: str, sizes: Sizes, parts: set[str], quick: bool) -> Table:
    server = Server(url)
    table = Table(TABLE_HEAD, left=2, shown=(2, 3, 4))
    server_version, durability = await server.version()
    print(
        f"PostgreSQL {server_version} ({durability}) at {server.url.host}:{server.url.port}; "
        + environment("asyncpg", "SQLAlchemy", "coda-session")
    )
    print(
        mode(
            quick,
            "medians of per-operation perf_counter timings from one run (on a shared machine: "
            "compare ratios, not figures); ratio = ours / raw",
        )
    )
    benches: tuple[tuple[str, str, Bench], ...] = (
        ("1", "1. durable append", bench_append),
        ("2", "2. one save of many new messages", bench_bulk),
        ("3", "3. resume + get_messages(limit=50)", bench_resume),
        ("4", "4. list_sessions", bench_list),
    )
    try:
        for key, title, bench in benches:
            if key in parts:
                with section(f"PostgreSQL {title}"):
                    await bench(server, sizes, table)
    finally:
        await server.drop_all()
    table.notes.append(
        f"PostgreSQL {server_version}; figures are medians from one run on a shared machine"
    )
    return table


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, ("1", "2", "3", "4")).parse_args(argv)
    url = postgres_url()
    if url is None:
        return 0
    build_texts()
    started = time.perf_counter()
    table = asyncio.run(
        run(url, QUICK if args.quick else FULL, set(args.only or "1234"), args.quick)
    )
    table.print()
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
