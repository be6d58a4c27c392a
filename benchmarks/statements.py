"""Statement traces: how many SQL statements (and, on PostgreSQL, round trips) each common
operation costs, on every SQL path.

Run ``python benchmarks/statements.py`` (seconds). The PostgreSQL rows need a server:
``--postgres-url`` or ``CODA_TEST_POSTGRES_URL`` (a SQLAlchemy URL of a role that may
create databases; the script makes a database of its own and drops it); without one they
are skipped. It prints one table per path, and ``--json`` prints the counts as JSON too.

The paths: SQLite's fast path (its own ``sqlite3`` connections), SQLite through
SQLAlchemy (``fast_path=False``), PostgreSQL's fast path (its own asyncpg connections) and
PostgreSQL through SQLAlchemy. What is counted, all through public or protocol-level hooks
(so the same script runs on any checkout, before and after a change):

- SQLite: every statement the library's connections run, from ``sqlite3``'s trace callback
  (set on each connection as it is made), transaction control (BEGIN, COMMIT, ...) counted
  apart; through SQLAlchemy also the statements the engine sends (``before_cursor_execute``
  on every :class:`~sqlalchemy.engine.Engine`).
- PostgreSQL: asyncpg's query logger (``Connection.add_query_logger``, added to each
  connection as it is made) sees every statement asyncpg runs on the fast path, each one
  round trip (the statement is prepared by then: every operation runs once before it is
  counted), and the transaction control SQLAlchemy's adapter sends. It does not see the
  statements SQLAlchemy runs through prepared statements: there ``before_cursor_execute``
  counts them, one round trip each.

The operations, on a session of :data:`HISTORY` saved messages: create, a save of 1 new
message, of 10, of 1 message with a metadata patch, ``load_session`` (the row and the
newest 50 messages), a page of 50 from the middle (``read_page``), and a fork at the middle
(``fork_session``). Nothing here is timed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from coda_session import AsyncSessionManager, SessionConfig

URL_VARIABLES = ("CODA_BENCH_POSTGRES_URL", "CODA_TEST_POSTGRES_URL")
#: saved messages of the session the operations run on
HISTORY = 200
PAGE = 50

#: transaction control, and the empty statement SQLAlchemy's asyncpg adapter pings with
_CONTROL = re.compile(r"\s*(;|(BEGIN|COMMIT|ROLLBACK|END|SAVEPOINT|RELEASE)\b)", re.IGNORECASE)


def _repository_class() -> Any:
    """The SQL repository (the class that takes ``fast_path=``): imported by name when
    used, so that a checkout where it lives elsewhere fails here, plainly."""
    from coda_session.repository import sql

    return sql.SqlRepository


# -- the trace ----------------------------------------------------------------------------


@dataclass
class Trace:
    """What the hooks saw while :attr:`on`: (source, SQL) in order."""

    on: bool = False
    seen: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, source: str, sql: str) -> None:
        if self.on:
            with self.lock:
                self.seen.append((source, sql))

    @contextmanager
    def window(self) -> Iterator[list[tuple[str, str]]]:
        got: list[tuple[str, str]] = []
        with self.lock:
            self.seen = got
        self.on = True
        try:
            yield got
        finally:
            self.on = False


TRACE = Trace()


def install_hooks() -> None:
    """Trace every ``sqlite3`` and asyncpg connection made from now on, and every engine."""
    connect = sqlite3.connect

    def traced_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = connect(*args, **kwargs)
        # statements run by a trigger come as "-- TRIGGER ..." lines: part of their statement
        conn.set_trace_callback(
            lambda sql: None if sql.startswith("--") else TRACE.add("sqlite", sql)
        )
        return conn

    sqlite3.connect = traced_connect  # type: ignore[assignment]

    def before(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        TRACE.add("engine", statement)

    sa.event.listen(Engine, "before_cursor_execute", before)

    try:
        import asyncpg
    except ImportError:
        return
    pg_connect = asyncpg.connect

    async def logged_connect(*args: Any, **kwargs: Any) -> Any:
        conn = await pg_connect(*args, **kwargs)
        conn.add_query_logger(lambda q: TRACE.add("asyncpg", q.query))
        return conn

    asyncpg.connect = logged_connect


# -- the operations -----------------------------------------------------------------------


def message(i: int) -> dict[str, Any]:
    return {"role": "user" if i % 2 else "assistant", "content": f"message {i} " * 8}


Op = Callable[[], Awaitable[Any]]


async def operations(manager: AsyncSessionManager, repo: Any, name: str) -> list[tuple[str, Op]]:
    """The counted operations on a new session ``name`` (its history saved first)."""
    state: dict[str, Any] = {}

    async def create() -> None:
        state["s"] = await manager.create_session(name)

    async def seed() -> None:
        s = state["s"]
        for i in range(HISTORY):
            s.add_message(message(i))
        await manager.save_session(s)
        state["ids"] = [i for i, _ in await s.get_messages_with_ids()]

    async def save(n: int, patch: bool = False) -> None:
        s = state["s"]
        for i in range(n):
            s.add_message(message(i))
        if patch:
            s.update_metadata({"turn": n})
        await manager.save_session(s)

    async def load() -> None:
        state["s"] = await manager.load_session(name)

    async def page() -> None:
        s, ids = state["s"], state["ids"]
        mid = len(ids) // 2
        await repo.read_page(
            s.id, after_id=ids[mid], upto_id=ids[-1], limit=PAGE, root_id=s.root_id
        )

    async def fork() -> None:
        await manager.fork_session(name, HISTORY // 2, name=f"{name}-fork")

    return [
        ("create", create),
        ("", seed),  # not counted
        ("save: 1 new message (append)", lambda: save(1)),
        ("save: 10 new messages", lambda: save(10)),
        ("save: 1 message + metadata patch", lambda: save(1, patch=True)),
        (f"load_session (row + newest {PAGE})", load),
        (f"read_page ({PAGE} from the middle)", page),
        ("fork_session at the middle", fork),
    ]


@dataclass
class Count:
    statements: int  # SQL the database ran, transaction control apart
    control: int  # BEGIN, COMMIT, ..., and pings
    trips: int | None  # PostgreSQL: round trips
    engine: int | None  # through SQLAlchemy: statements the engine sent


def count(path: str, seen: list[tuple[str, str]]) -> Count:
    engine = [sql for source, sql in seen if source == "engine"]
    if path.startswith("sqlite"):
        traced = [sql for source, sql in seen if source == "sqlite"]
        control = sum(1 for sql in traced if _CONTROL.match(sql))
        return Count(len(traced) - control, control, None, len(engine) if engine else None)
    logged = [sql for source, sql in seen if source == "asyncpg"]
    control = sum(1 for sql in logged if _CONTROL.match(sql))
    if path == "postgresql":
        return Count(len(logged) - control, control, len(logged), None)
    # through SQLAlchemy: the engine's statements (prepared: not logged) and what asyncpg
    # logged besides (the adapter's transaction control, pings)
    engine_data = [sql for sql in engine if not _CONTROL.match(sql)]
    return Count(
        len(engine_data),
        control + len(engine) - len(engine_data),
        len(engine) + len(logged),
        len(engine),
    )


async def settle() -> None:
    """Let the query loggers' calls land: asyncpg schedules them (``call_soon``) when a
    statement ends, so they run after the operation that ran it returns."""
    await asyncio.sleep(0.05)


async def run_path(
    path: str, config: dict[str, Any], verbose: bool = False
) -> list[tuple[str, Count]]:
    fast = path in ("sqlite", "postgresql")
    repo = _repository_class()(_config(config), fast_path=fast)
    results: list[tuple[str, Count]] = []
    async with AsyncSessionManager(config, storage=repo) as manager:
        # every operation once first: connections made, statements prepared and cached
        for _label, op in await operations(manager, repo, "warm"):
            await op()
        for label, op in await operations(manager, repo, "traced"):
            if not label:
                await op()
                continue
            await settle()
            with TRACE.window() as seen:
                await op()
                await settle()
            results.append((label, count(path, list(seen))))
            if verbose:
                print(f"-- {path}: {label}")
                for source, sql in seen:
                    print(f"   {source:8} {' '.join(sql.split())[:150]}")
    return results


def _config(config: dict[str, Any]) -> SessionConfig:
    return SessionConfig.from_mapping(config)


# -- PostgreSQL ---------------------------------------------------------------------------


def configured_url(given: str | None) -> str | None:
    if given:
        return given
    for name in URL_VARIABLES:
        if os.environ.get(name):
            return os.environ[name]
    return None


async def _admin(url: URL, statement: str) -> None:
    import asyncpg

    args = url.translate_connect_args(username="user")
    conn = await asyncpg.connect(**args)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


# -- the table ----------------------------------------------------------------------------


def table(path: str, rows: list[tuple[str, Count]]) -> str:
    pg = path.startswith("postgresql")
    via_engine = path not in ("sqlite", "postgresql")
    head = ["operation", "statements", "BEGIN/COMMIT/ping"]
    if pg:
        head.append("round trips")
    if via_engine:
        head.append("engine executes")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for label, c in rows:
        cells = [label, str(c.statements), str(c.control)]
        if pg:
            cells.append(str(c.trips))
        if via_engine:
            cells.append(str(c.engine))
        lines.append(" | ".join(cells))
    return "\n".join(f"| {line} |" for line in lines)


async def main_async(args: argparse.Namespace) -> dict[str, list[tuple[str, Count]]]:
    install_hooks()
    out: dict[str, list[tuple[str, Count]]] = {}
    wanted = set(args.paths.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        for path in ("sqlite", "sqlite-core"):
            if path in wanted:
                where = Path(tmp) / path
                config = {"session": {"storage_path": str(where), "autosave_interval": 0}}
                out[path] = await run_path(path, config, args.verbose)
    url = configured_url(args.postgres_url)
    pg_paths = [p for p in ("postgresql", "postgresql-core") if p in wanted]
    if pg_paths and url is None:
        print("PostgreSQL rows skipped: no --postgres-url or CODA_TEST_POSTGRES_URL")
    elif pg_paths:
        assert url is not None
        server = make_url(url)
        for path in pg_paths:
            # a database of its own per path
            database = f"statements_{secrets.token_hex(4)}_{path.replace('-', '_')}"
            await _admin(server, f'CREATE DATABASE "{database}" TEMPLATE template0')
            try:
                at = server.set(database=database).render_as_string(hide_password=False)
                config = {
                    "session": {
                        "backend": "postgresql",
                        "database_url": at,
                        "autosave_interval": 0,
                    }
                }
                out[path] = await run_path(path, config, args.verbose)
            finally:
                await _admin(server, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres-url", help="a SQLAlchemy URL (else CODA_TEST_POSTGRES_URL)")
    parser.add_argument(
        "--paths",
        default="sqlite,sqlite-core,postgresql,postgresql-core",
        help="comma-separated: sqlite, sqlite-core, postgresql, postgresql-core",
    )
    parser.add_argument("--json", action="store_true", help="print the counts as JSON too")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each statement")
    args = parser.parse_args(argv)
    import coda_session

    print(f"coda_session from {Path(coda_session.__file__).parent}")
    out = asyncio.run(main_async(args))
    for path, rows in out.items():
        print(f"\n{path}\n")
        print(table(path, rows))
    if args.json:
        print(json.dumps({p: {label: vars(c) for label, c in rows} for p, rows in out.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
