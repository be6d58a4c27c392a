"""``list_sessions`` with a metadata filter and a tag filter over many sessions.

Run ``python benchmarks/list_filters.py [--sessions 100000]`` (a minute or two). The
PostgreSQL rows need a server: ``--postgres-url`` or ``CODA_TEST_POSTGRES_URL`` (a
SQLAlchemy URL of a role that may create databases; a database of its own is made and
dropped). Each filter is timed for its first page (50 sessions) and a page deep in (the
page after the first 500 matching sessions), against ``list_sessions()`` filtered in
Python (what the spec's snippet does), all in the same run.

The store: ``--sessions`` sessions written by SQL (``INSERT ... SELECT``: the triggers of
migration 0011 index them as they would another program's rows), each with metadata
``{"project": "p<i % 100>", "owner": {"team": "team<i % 10>"}, "priority": <i % 5>,
"tags": ["t<i % 50>", "u<i>"]}``. The filters: ``metadata={"project": "p7"}`` (1% of the
sessions), ``metadata={"owner": {"team": "team3"}, "priority": 3}`` (2%, nested),
``tags="t7"`` (2%), ``tags="u4242"`` (one session), ``tags=["t7", "t8"]`` (none).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from coda_session import AsyncSessionManager, SessionInfo  # noqa: E402

PAGE = 50
DEEP = 500
#: run ANALYZE after writing the store (--analyze); off: the planner as a fresh store has it
ANALYZE = False

FILTERS: list[tuple[str, dict[str, Any], Callable[[SessionInfo], bool]]] = [
    (
        "metadata project=p7 (1%)",
        {"metadata": {"project": "p7"}},
        lambda i: i.metadata.get("project") == "p7",
    ),
    (
        "metadata owner.team=team3, priority=3 (2%)",
        {"metadata": {"owner": {"team": "team3"}, "priority": 3}},
        lambda i: (
            i.metadata.get("owner", {}).get("team") == "team3" and i.metadata.get("priority") == 3
        ),
    ),
    ("tag t7 (2%)", {"tags": "t7"}, lambda i: "t7" in i.metadata.get("tags", [])),
    ("tag u4242 (1 session)", {"tags": "u4242"}, lambda i: "u4242" in i.metadata.get("tags", [])),
    (
        "tags t7 and t8 (none)",
        {"tags": ["t7", "t8"]},
        lambda i: {"t7", "t8"} <= set(i.metadata.get("tags", [])),
    ),
]

_SQLITE_FILL = """
WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < :n)
INSERT INTO sessions (id, name, created_at, updated_at, metadata)
SELECT printf('id-%08d', i), printf('s-%08d', i),
    strftime('%Y-%m-%dT%H:%M:%S', '2026-01-01', '+' || i || ' seconds') || '+00:00',
    strftime('%Y-%m-%dT%H:%M:%S', '2026-01-01', '+' || (i * 7 % :n) || ' seconds') || '+00:00',
    json_object('project', 'p' || (i % 100), 'owner', json_object('team', 'team' || (i % 10)),
        'priority', i % 5, 'tags', json_array('t' || (i % 50), 'u' || i))
FROM c
"""

_PG_FILL = """
INSERT INTO sessions (id, name, created_at, updated_at, metadata)
SELECT 'id-' || lpad(i::text, 8, '0'), 's-' || lpad(i::text, 8, '0'),
    timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second',
    timestamptz '2026-01-01 00:00:00+00' + (i * 7 % $1) * interval '1 second',
    json_build_object('project', 'p' || (i % 100), 'owner', json_build_object('team',
        'team' || (i % 10)), 'priority', i % 5, 'tags', json_build_array('t' || (i % 50),
        'u' || i))
FROM generate_series(0, $1 - 1) i
"""


async def _timed(fn: Callable[[], Any], runs: int) -> float:
    """The median milliseconds of ``runs`` calls (after one warm-up)."""
    await fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def _measure(manager: AsyncSessionManager, label: str, runs: int) -> None:
    print(f"\n{label}")
    print(f"  {'filter':44} {'first page':>11} {'deep page':>11} {'all+Python':>11}")
    for name, kwargs, keep in FILTERS:
        cursor = None
        seen = 0
        while seen < DEEP:
            page = await manager.list_sessions(**kwargs, limit=PAGE, cursor=cursor)
            seen += len(page)
            cursor = page.next_cursor
            if cursor is None:
                break

        async def first(kwargs: dict[str, Any] = kwargs) -> Any:
            return await manager.list_sessions(**kwargs, limit=PAGE)

        async def deep(kwargs: dict[str, Any] = kwargs, cursor: str | None = cursor) -> Any:
            return await manager.list_sessions(**kwargs, limit=PAGE, cursor=cursor)

        async def python(keep: Callable[[SessionInfo], bool] = keep) -> Any:
            return [i for i in await manager.list_sessions() if keep(i)][:PAGE]

        a = await _timed(first, runs)
        b = await _timed(deep, runs) if cursor is not None else float("nan")
        c = await _timed(python, max(1, runs // 10))
        print(f"  {name:44} {a:9.2f}ms {b:9.2f}ms {c:9.1f}ms")


async def _sqlite(n: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        manager = AsyncSessionManager({"session": {"storage_path": tmp}})
        await manager.list_sessions()  # creates the schema
        conn = sqlite3.connect(Path(tmp) / "sessions.db")
        start = time.perf_counter()
        with conn:
            conn.execute(_SQLITE_FILL, {"n": n})
        if ANALYZE:
            conn.execute("ANALYZE")
        conn.close()
        print(f"sqlite: {n} sessions written in {time.perf_counter() - start:.1f}s")
        try:
            await _measure(manager, f"SQLite, {n} sessions", runs)
        finally:
            await manager.close()


async def _postgresql(url: str, n: int, runs: int) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    base = make_url(url)
    name = f"coda_bench_{secrets.token_hex(4)}"
    args = base.translate_connect_args(username="user")
    admin = await asyncpg.connect(**args)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        target = base.set(database=name).render_as_string(hide_password=False)
        manager = AsyncSessionManager({"session": {"database_url": target}})
        await manager.list_sessions()
        conn = await asyncpg.connect(**{**args, "database": name})
        start = time.perf_counter()
        await conn.execute(_PG_FILL, n)
        if ANALYZE:
            await conn.execute("ANALYZE")
        await conn.close()
        print(f"postgresql: {n} sessions written in {time.perf_counter() - start:.1f}s")
        try:
            await _measure(manager, f"PostgreSQL, {n} sessions", runs)
        finally:
            await manager.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--postgres-url", default=os.environ.get("CODA_TEST_POSTGRES_URL"))
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--analyze", action="store_true")
    opts = parser.parse_args()
    global ANALYZE
    ANALYZE = opts.analyze
    if not opts.skip_sqlite:
        asyncio.run(_sqlite(opts.sessions, opts.runs))
    if opts.postgres_url:
        asyncio.run(_postgresql(opts.postgres_url, opts.sessions, opts.runs))
    else:
        print("\npostgresql: skipped (no --postgres-url or CODA_TEST_POSTGRES_URL)")


if __name__ == "__main__":
    main()
