"""Files stay private and tidy: no database through a symlink, private parent directories,
no export temp files left behind by a killed exporter."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coda_session import AsyncSessionManager, SessionManager, StorageError
from tests.support import Store

SQL_BACKENDS = ["sqlite", "sqlite-core"]


@pytest.mark.parametrize("backend", SQL_BACKENDS)
@pytest.mark.parametrize("dangling", [True, False], ids=["dangling", "to-a-file"])
async def test_a_symlinked_database_file_is_refused(
    tmp_path: Path, backend: str, dangling: bool
) -> None:
    store = Store(backend, tmp_path / "sessions")
    store.path.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "db"
    if not dangling:
        target.write_bytes(b"")
    (store.path / "sessions.db").symlink_to(target)
    m = store.async_manager()
    try:
        with pytest.raises(StorageError, match=r"symbolic link.*database_url"):
            await m.open()
    finally:
        await m.close()
    assert sorted(p.name for p in elsewhere.iterdir()) == ([] if dangling else ["db"])
    assert sorted(p.name for p in store.path.iterdir()) == ["sessions.db"]


@pytest.mark.parametrize("backend", SQL_BACKENDS)
async def test_a_symlinked_wal_file_is_refused(tmp_path: Path, backend: str) -> None:
    store = Store(backend, tmp_path / "sessions")
    store.path.mkdir(mode=0o700)
    (store.path / "sessions.db-wal").symlink_to(tmp_path / "wal")
    m = store.async_manager()
    try:
        with pytest.raises(StorageError, match="symbolic link"):
            await m.open()
    finally:
        await m.close()
    assert not (tmp_path / "wal").exists()


@pytest.mark.parametrize("backend", SQL_BACKENDS)
async def test_missing_parents_of_storage_path_are_created_private(
    tmp_path: Path, backend: str
) -> None:
    old = os.umask(0o022)
    try:
        store = Store(backend, tmp_path / "a" / "b" / "c")
        m = store.async_manager()
        try:
            await m.create_session("x")
        finally:
            await m.close()
    finally:
        os.umask(old)
    for level in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
        assert stat.S_IMODE(level.stat().st_mode) == 0o700, level


async def test_an_existing_parent_keeps_its_mode(tmp_path: Path) -> None:
    parent = tmp_path / "shared"
    parent.mkdir(mode=0o755)
    os.chmod(parent, 0o755)
    m = Store("sqlite", parent / "sessions").async_manager()
    try:
        await m.open()
    finally:
        await m.close()
    assert stat.S_IMODE(parent.stat().st_mode) == 0o755
    assert stat.S_IMODE((parent / "sessions").stat().st_mode) == 0o700


async def test_export_into_a_missing_directory_raises_storage_error(
    amanager: AsyncSessionManager, tmp_path: Path
) -> None:
    s = await amanager.create_session("s")
    s.add_message({"role": "user", "content": "x"})
    await amanager.save_session(s)
    with pytest.raises(StorageError, match="does not exist; create it first"):
        await amanager.export_session("s", tmp_path / "missing" / "s.jsonl")
    assert not (tmp_path / "missing").exists()


KILLED_EXPORTER = r"""
import sys, time
from coda_session import SessionManager, SessionStorage

class Stalling(SessionStorage):
    # serves the session until the export begins, then never answers (the exporter is
    # killed meanwhile, its temp file already made)
    def __init__(self):
        self.data, self.exporting = None, False
    def save(self, session):
        self.data = session
    def load(self, name):
        if self.exporting:
            print("stalled", flush=True)
            time.sleep(3600)
        return self.data
    def delete(self, name):
        pass
    def list_all(self):
        return [self.data.info()] if self.data else []

storage = Stalling()
with SessionManager({"session": {"autosave_interval": 0}}, storage=storage) as m:
    s = m.create_session("s")
    s.add_message({"role": "user", "content": "x"})
    m.save_session(s)
    storage.exporting = True
    m.export_session("s", sys.argv[1])
"""


def _temps(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".coda-export-"))


def test_a_killed_exporters_temp_file_is_cleaned_up_by_the_next_export(tmp_path: Path) -> None:
    out = tmp_path / "exports"
    out.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_EXPORTER, str(out / "a.jsonl")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while not _temps(out) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_temps(out)) == 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    # a temp file of a live exporter (this process) stays
    live = out / f".coda-export-{os.getpid()}-live"
    live.write_text("")
    with SessionManager({"session": {"backend": "memory"}}) as m:
        s = m.create_session("b")
        s.add_message({"role": "user", "content": "y"})
        m.save_session(s)
        m.export_session("b", out / "b.jsonl")
    assert _temps(out) == [live.name]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["b.jsonl"]


def test_an_old_unnamed_temp_file_is_cleaned_up(tmp_path: Path) -> None:
    # the names earlier versions used carry no pid: stale once an hour old
    old = tmp_path / ".coda-export-abc123"
    old.write_text("partial")
    an_hour_ago = time.time() - 3700
    os.utime(old, (an_hour_ago, an_hour_ago))
    fresh = tmp_path / ".coda-export-def456"
    fresh.write_text("partial")
    with SessionManager({"session": {"backend": "memory"}}) as m:
        m.create_session("b")
        m.export_session("b", tmp_path / "b.jsonl")
    assert _temps(tmp_path) == [fresh.name]
