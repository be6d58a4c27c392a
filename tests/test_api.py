"""The public surface: exports, typing marker, and sync/async twins with equal signatures."""

from __future__ import annotations

import inspect
from pathlib import Path

import coda_session
from coda_session import AsyncSession, AsyncSessionManager, Session, SessionManager


def test_all_is_exactly_the_public_api() -> None:
    assert sorted(coda_session.__all__) == coda_session.__all__
    public = {
        n
        for n in vars(coda_session)
        if not n.startswith("_") and not inspect.ismodule(getattr(coda_session, n))
    }
    assert public == set(coda_session.__all__) - {"__version__"}


def test_package_is_typed() -> None:
    assert (Path(coda_session.__file__).parent / "py.typed").is_file()


def test_error_hierarchy() -> None:
    base = coda_session.SessionError
    for name in (
        "SessionNotFoundError",
        "SessionExistsError",
        "InvalidMessageError",
        "InvalidConfigError",
        "StorageError",
        "SchemaVersionError",
        "ManagerClosedError",
    ):
        assert issubclass(getattr(coda_session, name), base)
    assert issubclass(coda_session.SchemaVersionError, coda_session.StorageError)
    assert issubclass(coda_session.SessionNotFoundError, LookupError)
    assert issubclass(coda_session.InvalidMessageError, ValueError)


def _public_methods(cls: type) -> dict[str, inspect.Signature]:
    out = {}
    for name, member in inspect.getmembers(cls):
        if name.startswith("_") and name not in (
            "__enter__",
            "__exit__",
            "__aenter__",
            "__aexit__",
        ):
            continue
        if inspect.isfunction(member):
            out[name] = inspect.signature(member)
    return out


def _normalized(sig: inspect.Signature) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


def test_sync_managers_mirror_async_ones() -> None:
    a, s = _public_methods(AsyncSessionManager), _public_methods(SessionManager)
    only_async = {"aclose", "__aenter__", "__aexit__"}
    only_sync = {"__enter__", "__exit__"}
    assert set(a) - only_async == set(s) - only_sync
    for name in set(a) - only_async:
        assert _normalized(a[name]) == _normalized(s[name]), name
        assert inspect.iscoroutinefunction(getattr(AsyncSessionManager, name)), name
        assert not inspect.iscoroutinefunction(getattr(SessionManager, name)), name


def test_sync_sessions_mirror_async_ones() -> None:
    a, s = _public_methods(AsyncSession), _public_methods(Session)
    assert set(a) == set(s)
    for name in a:
        assert _normalized(a[name]) == _normalized(s[name]), name
        assert not inspect.iscoroutinefunction(getattr(Session, name)), name
    assert {n for n in a if inspect.iscoroutinefunction(getattr(AsyncSession, n))} == {
        "get_entries",
        "get_lineage",
        "get_messages",
        "get_messages_with_ids",
        "get_token_count",
        "pop_messages",
    }
    props = {
        n
        for n, v in inspect.getmembers(AsyncSession)
        if isinstance(v, property) and not n.startswith("_")
    }
    sync_props = {n for n, v in inspect.getmembers(Session) if isinstance(v, property)}
    assert sync_props - props == {"messages"}  # reading all messages is I/O: sync only
    assert props <= sync_props


def test_trusted_session_info_equals_a_validated_one() -> None:
    from datetime import UTC, datetime

    from coda_session import SessionInfo

    now = datetime.now(UTC)
    values = dict(
        id="i",
        name="n",
        created_at=now,
        updated_at=now,
        message_count=2,
        size_bytes=9,
        metadata={"k": [1]},
        root_id="r",
        parent_id="p",
        fork_point=1,
    )
    fast = SessionInfo._trusted(**values)  # type: ignore[arg-type]
    slow = SessionInfo(**values)
    assert fast == slow and fast.model_dump() == slow.model_dump()
    assert fast.model_fields_set == slow.model_fields_set
    assert repr(fast) == repr(slow) and hash(fast.name) == hash(slow.name)


def test_memory_backend_loads_no_sql_stack(tmp_path: Path) -> None:
    """`import coda_session` and a whole session's life on the memory backend (export and
    import included) load neither the SQLite driver nor the SQL backend."""
    import subprocess
    import sys

    script = f"""
import sys
import coda_session
from coda_session import SessionManager
with SessionManager({{"session": {{"backend": "memory"}}}}) as m:
    s = m.create_session("x")
    s.add_message({{"role": "user", "content": "hi"}})
    m.save_session(s)
    m.export_session("x", {str(tmp_path / "x.jsonl")!r})
    m.import_session({str(tmp_path / "x.jsonl")!r}, name="y")
    assert [i.name for i in m.list_sessions()] == ["x", "y"]
loaded = sorted(n for n in sys.modules if n.startswith(("aiosqlite", "coda_session.repository.sql")))
print(loaded)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
