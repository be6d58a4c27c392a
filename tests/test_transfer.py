"""Export and import: both formats, both APIs, every backend; damaged files write nothing."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from coda_session import (
    AsyncSessionManager,
    FileFormatError,
    SessionExistsError,
    SessionNotFoundError,
)
from tests.support import Store

BIG = "lorem ipsum dolor " * 200  # compressed in storage, plain in the file

MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "You are terse.", "timestamp": "2024-01-01T00:00:00+00:00"},
    {
        "role": "user",
        "content": "héllo 🌍",
        "timestamp": "2024-01-01T00:00:01+00:00",
        "name": "ann",
    },
    {
        "role": "assistant",
        "content": None,
        "timestamp": "2024-01-01T00:00:02+00:00",
        "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}],
    },
    {
        "role": "tool",
        "content": [{"type": "text", "text": BIG}],
        "tool_call_id": "c1",
        "timestamp": "2024-01-01T00:00:03+00:00",
    },
    {"role": "user", "content": BIG, "timestamp": "2024-01-01T00:00:04+00:00"},
]


async def _seed(m: AsyncSessionManager, name: str = "orig", n: int = 1) -> None:
    s = await m.create_session(name)
    for _ in range(n):
        for msg in MESSAGES:
            s.add_message(msg)
    s.update_metadata({"topic": "export", "tags": ["a", "b"]})
    await m.save_session(s)


async def _dump(m: AsyncSessionManager) -> list[tuple[str, int, dict[str, object]]]:
    return [(i.name, i.message_count, i.metadata) for i in await m.list_sessions()]


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
async def test_round_trip_under_own_and_new_name(store: Store, tmp_path: Path, fmt: str) -> None:
    source = store.async_manager()
    try:
        await _seed(source, n=3)
        original = await source.load_session("orig")
        path = tmp_path / f"orig.{fmt}"
        assert await source.export_session("orig", path, format=fmt) == 15
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        copy = await source.import_session(path, name="copy")
        assert await copy.get_messages() == await original.get_messages()
        assert copy.metadata == original.metadata
        assert copy.created_at == original.created_at and copy.updated_at == original.updated_at
        with pytest.raises(SessionExistsError):
            await source.import_session(path)  # its own name is taken here
    finally:
        await source.close()
    other = Store(store.backend, tmp_path / "elsewhere").async_manager()
    try:
        again = await other.import_session(path)  # detected format, own name
        assert again.name == "orig"
        assert [m for m in await again.get_messages()] == MESSAGES * 3
        info = await other.get_session_info("orig")
        assert info is not None and info.message_count == 15
    finally:
        await other.close()


async def test_jsonl_layout_is_the_documented_one(amanager: AsyncSessionManager) -> None:
    await _seed(amanager)
    buf = io.StringIO()
    await amanager.export_session("orig", buf)
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    # version 3: each line the time the message is filed under and the message exactly
    assert lines[0]["coda_session"] == 3 and lines[0]["kind"] == "session"
    assert lines[0]["name"] == "orig" and lines[0]["metadata"]["topic"] == "export"
    assert lines[1:-1] == [{"timestamp": m["timestamp"], "message": m} for m in MESSAGES]
    assert lines[-1] == {"coda_session": 3, "kind": "end", "message_count": 5}


async def test_the_specs_hand_written_export_imports_with_a_name(
    amanager: AsyncSessionManager, tmp_path: Path
) -> None:
    path = tmp_path / "session-backup.json"
    path.write_text(json.dumps({"messages": MESSAGES[:2], "metadata": {"k": 1}}))
    with pytest.raises(FileFormatError, match="pass name="):
        await amanager.import_session(path)
    s = await amanager.import_session(path, name="from-spec")
    assert await s.get_messages() == MESSAGES[:2]
    assert s.metadata == {"k": 1}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "end of the file"),
        (
            '{"coda_session": 1, "kind": "session", "name": "x"}\n{"role": "user", "content": "a"}\n',
            "truncated",
        ),
        (
            '{"coda_session": 1, "kind": "session", "name": "x"}\n{"role": "user", "content": "a"}\n'
            '{"coda_session": 1, "kind": "end", "message_count": 2}\n',
            "line 3",
        ),
        (
            '{"coda_session": 1, "kind": "session", "name": "x"}\n{"role": "user", "conte\n',
            "line 2",
        ),
        (
            '{"coda_session": 1, "kind": "session", "name": "x"}\n{"role": "", "content": "a"}\n'
            '{"coda_session": 1, "kind": "end", "message_count": 1}\n',
            "line 2: message 1",
        ),
        ('{"coda_session": 4, "kind": "session", "name": "x"}\n', "format version 4"),
        (
            '{"coda_session": 1, "kind": "session", "name": "x", "messages": [\n'
            '{"role": "user", "content": "a"},\n{"role": "user", "content"',
            "truncated",
        ),
        (
            '{"coda_session": 1, "kind": "session", "name": "x", "messages": [\n'
            '{"role": "user", "content": NaN}\n], "message_count": 1}\n',
            "line 2",
        ),
        ('{"name": "x", "messages": [{"role": "user", "content": "a"}]} trailing', "after"),
    ],
)
async def test_damaged_files_raise_and_write_nothing(
    amanager: AsyncSessionManager, tmp_path: Path, text: str, problem: str
) -> None:
    await _seed(amanager)
    before = await _dump(amanager)
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(FileFormatError, match=problem):
        await amanager.import_session(path)
    assert await _dump(amanager) == before
    assert await amanager.get_session_info("x") is None


async def test_a_failure_late_in_a_long_import_writes_nothing(
    amanager: AsyncSessionManager, tmp_path: Path
) -> None:
    path = tmp_path / "long.jsonl"
    lines = [json.dumps({"coda_session": 1, "kind": "session", "name": "long"})]
    lines += [json.dumps({"role": "user", "content": str(i)}) for i in range(3500)]
    lines.append('{"role": "user", "content": "no end line follows"}')
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FileFormatError, match="truncated"):
        await amanager.import_session(path)
    assert await amanager.get_session_info("long") is None
    await amanager.create_session("still-usable")  # no lock or transaction left behind


async def test_export_missing_and_bad_format(amanager: AsyncSessionManager, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SessionNotFoundError):
        await amanager.export_session("nope", out / "x.jsonl")
    await _seed(amanager)
    with pytest.raises(FileFormatError):
        await amanager.export_session("orig", out / "x.xml", format="xml")
    assert list(out.iterdir()) == []  # no partial or temporary file left


async def test_whole_store_moves_between_backends(store: Store, tmp_path: Path) -> None:
    source = store.async_manager()
    try:
        for name in ("a", "b", "c"):
            await _seed(source, name)
        dump = tmp_path / "store.jsonl"
        assert await source.export_store(dump) == 3
        expected = await _dump(source)
        messages = await (await source.load_session("b")).get_messages()
    finally:
        await source.close()
    for backend in ("memory", "sqlite"):
        target = Store(backend, tmp_path / f"to-{backend}").async_manager()
        try:
            assert await target.import_store(dump) == ["a", "b", "c"]
            assert await _dump(target) == expected
            assert await (await target.load_session("b")).get_messages() == messages
        finally:
            await target.close()


def test_sync_shim_export_import(store: Store, tmp_path: Path) -> None:
    with store.sync_manager() as m:
        s = m.create_session("s")
        s.messages = MESSAGES
        m.save_session(s)
        m.export_session("s", tmp_path / "s.json", format="json")
        copy = m.import_session(tmp_path / "s.json", name="s2")
        assert copy.get_messages() == MESSAGES
        assert m.export_store(tmp_path / "all.jsonl") == 2
    with Store(store.backend, tmp_path / "fresh").sync_manager() as fresh:
        assert fresh.import_store(tmp_path / "all.jsonl") == ["s", "s2"]


async def test_other_work_waits_for_an_import_and_succeeds(
    amanager: AsyncSessionManager, tmp_path: Path
) -> None:
    import asyncio

    path = tmp_path / "big.jsonl"
    lines = [json.dumps({"coda_session": 1, "kind": "session", "name": "big"})]
    lines += [json.dumps({"role": "user", "content": f"m{i}"}) for i in range(8000)]
    lines.append(json.dumps({"coda_session": 1, "kind": "end", "message_count": 8000}))
    path.write_text("\n".join(lines) + "\n")
    side = await amanager.create_session("side")

    async def writes() -> None:
        for i in range(30):
            side.add_message({"role": "user", "content": f"side {i}"})
            await amanager.save_session(side)
            await asyncio.sleep(0)

    imported, _ = await asyncio.gather(amanager.import_session(path), writes())
    assert imported.message_count == 8000
    assert [m["content"] for m in await (await amanager.load_session("side")).get_messages()] == [
        f"side {i}" for i in range(30)
    ]
    got = await (await amanager.load_session("big")).get_messages(limit=2)
    assert [m["content"] for m in got] == ["m7998", "m7999"]


async def test_file_problems_are_typed(amanager: AsyncSessionManager, tmp_path: Path) -> None:
    from coda_session import ImportFileNotFoundError, StorageError

    await _seed(amanager)
    with pytest.raises(StorageError, match="cannot export"):
        await amanager.export_session("orig", tmp_path / "no-such-dir" / "x.jsonl")
    latin = tmp_path / "latin1.jsonl"
    latin.write_bytes(
        b'{"coda_session": 1, "kind": "session", "name": "l"}\n'
        b'{"role": "user", "content": "caf\xe9"}\n'
        b'{"coda_session": 1, "kind": "end", "message_count": 1}\n'
    )
    with pytest.raises(FileFormatError, match="UTF-8"):
        await amanager.import_session(latin)
    with pytest.raises(ImportFileNotFoundError, match="no such file"):
        await amanager.import_session(tmp_path / "missing.jsonl")


async def test_messages_may_carry_the_control_keys(
    amanager: AsyncSessionManager, tmp_path: Path
) -> None:
    s = await amanager.create_session("k")
    tricky = {"role": "user", "content": "x", "coda_session": 1, "kind": "end"}
    s.add_message(tricky)
    await amanager.save_session(s)
    await amanager.export_session("k", tmp_path / "k.jsonl")
    back = await amanager.import_session(tmp_path / "k.jsonl", name="k2")
    got = await back.get_messages()
    assert {k: v for k, v in got[0].items() if k != "timestamp"} == tricky
