"""An import that fails writes nothing; a closed manager stops an import; bounded lines."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from pathlib import Path

import pytest

from coda_session import (
    AsyncSessionManager,
    FileFormatError,
    ManagerClosedError,
)
from coda_session.transfer import format as fmt_
from tests.support import Store


def _session_lines(name: str, n: int) -> list[str]:
    head = {"coda_session": 1, "kind": "session", "name": name, "metadata": {}}
    lines = [json.dumps(head)]
    lines += [json.dumps({"role": "user", "content": f"m{i}"}) for i in range(n)]
    lines.append(json.dumps({"coda_session": 1, "kind": "end", "message_count": n}))
    return lines


TRAILERS = {
    "garbage": "this is not JSON",
    "stray message": json.dumps({"role": "user", "content": "late"}),
    "second session": "\n".join(_session_lines("other", 2)),
}


@pytest.mark.parametrize("trailer", list(TRAILERS), ids=list(TRAILERS))
async def test_import_with_bad_data_after_the_end_writes_nothing(
    store: Store, tmp_path: Path, trailer: str
) -> None:
    path = tmp_path / "bad.jsonl"
    # 998 messages: the end line is line 1000 and the bad line 1001
    path.write_text("\n".join([*_session_lines("s", 998), TRAILERS[trailer]]) + "\n")
    m = store.async_manager()
    try:
        with pytest.raises(FileFormatError, match="line 1001"):
            await m.import_session(path)
        assert await m.list_sessions() == []
    finally:
        await m.close()


async def test_json_import_with_bad_data_after_the_object_writes_nothing(
    store: Store, tmp_path: Path
) -> None:
    path = tmp_path / "bad.json"
    body = {"name": "s", "messages": [{"role": "user", "content": f"m{i}"} for i in range(5)]}
    path.write_text(json.dumps(body) + "\n{}\n")
    m = store.async_manager()
    try:
        with pytest.raises(FileFormatError, match="after the JSON object"):
            await m.import_session(path)
        assert await m.list_sessions() == []
    finally:
        await m.close()


@pytest.mark.parametrize(
    "tail",
    ["garbage", "header-less message", "truncated"],
)
async def test_import_store_error_notes_name_the_sessions_imported(
    store: Store, tmp_path: Path, tail: str
) -> None:
    lines = [json.dumps({"coda_session": 1, "kind": "store"})]
    lines += _session_lines("a", 3) + _session_lines("b", 2)
    if tail == "garbage":
        lines.append("{not json")
    elif tail == "header-less message":
        lines.append(json.dumps({"role": "user", "content": "x"}))
    else:
        lines += _session_lines("c", 2)[:-1]
    path = tmp_path / "store.jsonl"
    path.write_text("\n".join(lines) + "\n")
    m = store.async_manager()
    try:
        with pytest.raises(FileFormatError) as caught:
            await m.import_store(path)
        assert caught.value.__notes__ == ["imported before the failure: a, b"]
        assert [i.name for i in await m.list_sessions()] == ["a", "b"]
    finally:
        await m.close()


@pytest.mark.parametrize("fmt", [None, "jsonl", "json"])
async def test_dev_zero_raises_file_format_error(
    store: Store, monkeypatch: pytest.MonkeyPatch, fmt: str | None
) -> None:
    # the documented limit, made small so the test reads a few MB of /dev/zero, not 256
    monkeypatch.setattr(fmt_, "MAX_LINE_CHARS", 1 << 20)
    m = store.async_manager()
    try:
        with pytest.raises(FileFormatError):
            await m.import_session("/dev/zero", format=fmt)
        assert await m.list_sessions() == []
    finally:
        await m.close()


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
async def test_a_value_past_the_line_limit_raises_file_format_error(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    monkeypatch.setattr(fmt_, "MAX_LINE_CHARS", 1 << 20)
    path = tmp_path / f"long.{fmt}"
    big = {"role": "user", "content": "z" * (2 << 20)}
    if fmt == "jsonl":
        lines = _session_lines("s", 1)
        lines[1] = json.dumps(big)
        path.write_text("\n".join(lines) + "\n")
    else:
        path.write_text(json.dumps({"name": "s", "messages": [big]}))
    m = store.async_manager()
    try:
        with pytest.raises(FileFormatError, match="longer than 1048576 characters"):
            await m.import_session(path, format=fmt)
        assert await m.list_sessions() == []
    finally:
        await m.close()


def test_the_line_limit_is_documented() -> None:
    assert fmt_.MAX_LINE_CHARS == 256 * 1024 * 1024
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert "256 MiB" in readme


async def test_close_during_an_import_raises_manager_closed_and_writes_nothing(
    store: Store,
) -> None:
    lines = _session_lines("slow", 50)
    read_fd, write_fd = os.pipe()
    stop = threading.Event()

    def feed() -> None:
        with os.fdopen(write_fd, "w") as fh:
            for line in lines[:-1]:
                time.sleep(0.02)
                fh.write(line + "\n")
                fh.flush()
            stop.wait(5)  # hold the end line back until the manager is closed
            with contextlib.suppress(BrokenPipeError):
                fh.write(lines[-1] + "\n")

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    m = store.async_manager()
    await m.open()
    source = os.fdopen(read_fd, encoding="utf-8")
    try:
        task = asyncio.ensure_future(m.import_session(source, format="jsonl"))
        await asyncio.sleep(0.3)
        assert not task.done()
        await m.close()
        stop.set()
        with pytest.raises(ManagerClosedError):
            await asyncio.wait_for(task, 30)
    finally:
        stop.set()
        feeder.join(10)
        source.close()
    again = store.async_manager()
    try:
        assert await again.list_sessions() == []
    finally:
        await again.close()


async def test_imported_sessions_read_back_whole(
    amanager: AsyncSessionManager, tmp_path: Path
) -> None:
    # more than one batch, to prove the staged import writes every batch exactly once
    path = tmp_path / "long.jsonl"
    path.write_text("\n".join(_session_lines("long", 2500)) + "\n")
    s = await amanager.import_session(path)
    assert s.message_count == 2500
    got = await s.get_messages()
    assert [g["content"] for g in got] == [f"m{i}" for i in range(2500)]


@pytest.mark.parametrize("backend", ["sqlite", "sqlite-core"])
async def test_an_import_waiting_for_its_source_does_not_lock_out_writers(
    tmp_path: Path, backend: str
) -> None:
    store = Store(backend, tmp_path / "sessions")
    lines = _session_lines("slow", 2500)  # more than a page: the first page is in hand
    read_fd, write_fd = os.pipe()
    release = threading.Event()

    def feed() -> None:
        with os.fdopen(write_fd, "w") as fh:
            fh.write("\n".join(lines[:-1]) + "\n")
            fh.flush()
            release.wait(30)
            fh.write(lines[-1] + "\n")

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    importer = store.async_manager()
    other = store.async_manager(busy_timeout=1.0)
    source = os.fdopen(read_fd, encoding="utf-8")
    try:
        await importer.open()
        task = asyncio.ensure_future(importer.import_session(source, format="jsonl"))
        await asyncio.sleep(1.0)  # the import has read the first pages and waits for more
        s = await other.create_session("meanwhile")  # would wait out busy_timeout, then fail
        s.add_message({"role": "user", "content": "x"})
        await other.save_session(s)
        release.set()
        imported = await asyncio.wait_for(task, 30)
        assert imported.message_count == 2500
    finally:
        release.set()
        feeder.join(10)
        source.close()
        await importer.close()
        await other.close()
