"""Export and import files as a new user meets them: the format follows the extension, an
existing file is kept unless replaced on purpose, a one-line JSON export imports, and
every file problem is typed, names the file and says what to do."""

from __future__ import annotations

import errno
import io
import json
from collections.abc import Awaitable
from pathlib import Path

import pytest

from coda_session import (
    AsyncSessionManager,
    ExportFileExistsError,
    FileFormatError,
    ImportFileNotFoundError,
    SessionError,
    SessionExistsError,
    SessionManager,
    StorageError,
)
from coda_session.transfer.files import Sink
from tests.support import Store


async def _seed(m: AsyncSessionManager, name: str = "chat", n: int = 3) -> None:
    s = await m.create_session(name)
    for i in range(n):
        s.add_message({"role": "user", "content": f"m{i}", "timestamp": f"2024-01-01T00:00:0{i}Z"})
    s.update_metadata({"topic": "files"})
    await m.save_session(s)


def _contents(text: str) -> list[str]:
    # format version 3: each entry the time the message is filed under and the message
    return [m["message"]["content"] for m in json.loads(text)["messages"]]


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".coda-export-"))


# -- the format an export writes -----------------------------------------------------------


async def test_the_export_format_follows_the_extension(store: Store, tmp_path: Path) -> None:
    async with store.async_manager() as m:
        await _seed(m)
        await m.export_session("chat", tmp_path / "chat.json")
        assert _contents((tmp_path / "chat.json").read_text()) == ["m0", "m1", "m2"]
        await m.export_session("chat", tmp_path / "CHAT.JSON")
        assert _contents((tmp_path / "CHAT.JSON").read_text()) == ["m0", "m1", "m2"]
        for name in ("chat.jsonl", "chat.txt", "chat"):
            await m.export_session("chat", tmp_path / name)
            lines = (tmp_path / name).read_text().splitlines()
            assert len(lines) == 5 and json.loads(lines[0])["kind"] == "session", name
        # a format given is the format written, whatever the name
        await m.export_session("chat", tmp_path / "lines.json", format="jsonl")
        assert len((tmp_path / "lines.json").read_text().splitlines()) == 5
        await m.export_session("chat", tmp_path / "object.jsonl", format="json")
        assert _contents((tmp_path / "object.jsonl").read_text()) == ["m0", "m1", "m2"]
        buf = io.StringIO()  # a stream has no extension: JSON Lines
        await m.export_session("chat", buf)
        assert len(buf.getvalue().splitlines()) == 5
        for name in ("chat.json", "chat.jsonl", "lines.json", "object.jsonl"):
            copy = await m.import_session(tmp_path / name, name=f"copy-{name}")
            assert [x["content"] for x in await copy.get_messages()] == ["m0", "m1", "m2"]


# -- an existing file is kept --------------------------------------------------------------


async def test_an_export_does_not_replace_a_file_unless_told(store: Store, tmp_path: Path) -> None:
    target = tmp_path / "chat.jsonl"
    target.write_text("my notes, not an export\n")
    async with store.async_manager() as m:
        await _seed(m)
        exports: list[Awaitable[int]] = [m.export_session("chat", target), m.export_store(target)]
        for export in exports:
            with pytest.raises(ExportFileExistsError) as caught:
                await export
            assert isinstance(caught.value, FileExistsError)
            assert isinstance(caught.value, SessionError)
            assert caught.value.filename == str(target) and caught.value.errno == errno.EEXIST
            assert str(target) in str(caught.value) and "overwrite=True" in str(caught.value)
            assert target.read_text() == "my notes, not an export\n"
            assert _leftovers(tmp_path) == []
        assert await m.export_session("chat", target, overwrite=True) == 3
        assert len(target.read_text().splitlines()) == 5
        assert await m.export_store(target, overwrite=True) == 1
        assert json.loads(target.read_text().splitlines()[0])["kind"] == "store"


def test_the_blocking_api_refuses_to_replace_too(tmp_path: Path) -> None:
    with SessionManager({"session": {"backend": "memory"}}) as m:
        m.create_session("s")
        m.export_session("s", tmp_path / "s.json")
        with pytest.raises(ExportFileExistsError):
            m.export_session("s", tmp_path / "s.json")
        with pytest.raises(ExportFileExistsError):
            m.export_store(tmp_path / "s.json")
        assert m.export_session("s", tmp_path / "s.json", overwrite=True) == 0
        assert m.export_store(tmp_path / "s.json", overwrite=True) == 1


async def test_a_file_made_while_the_export_runs_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "chat.jsonl"
    sink = Sink(target)
    await sink.write("the export\n")
    target.write_text("made meanwhile\n")  # by another program, after the export began
    with pytest.raises(ExportFileExistsError):
        await sink.finish(True)
    assert target.read_text() == "made meanwhile\n"
    assert _leftovers(tmp_path) == []
    replacing = Sink(target, overwrite=True)
    await replacing.write("the export\n")
    await replacing.finish(True)
    assert target.read_text() == "the export\n"


async def test_an_export_into_a_missing_directory_names_the_target(
    amanager: AsyncSessionManager, tmp_path: Path
) -> None:
    await _seed(amanager)
    target = tmp_path / "no-such-dir" / "chat.jsonl"
    with pytest.raises(StorageError) as caught:
        await amanager.export_session("chat", target)
    message = str(caught.value)
    assert str(target) in message and ".coda-export" not in message
    assert "does not exist" in message and "create it" in message
    with pytest.raises(StorageError, match="it is a directory"):
        await amanager.export_session("chat", tmp_path)


# -- what an import reads ------------------------------------------------------------------


def _one_line(text: str) -> str:
    """What ``jq -c .`` writes: the same object, on one line."""
    return json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False) + "\n"


async def test_a_json_export_saved_again_on_one_line_imports(store: Store, tmp_path: Path) -> None:
    async with store.async_manager() as m:
        await _seed(m)
        await m.export_session("chat", tmp_path / "chat.json")
        text = (tmp_path / "chat.json").read_text()
        one_line = tmp_path / "one-line.json"
        one_line.write_text(_one_line(text))
        assert len(one_line.read_text().splitlines()) == 1
        copy = await m.import_session(one_line, name="copy")
        assert [x["content"] for x in await copy.get_messages()] == ["m0", "m1", "m2"]
        assert copy.metadata == {"topic": "files"}
        # the same with blank lines before it, and through a stream
        again = await m.import_session(io.StringIO("\n\n" + _one_line(text)), name="again")
        assert again.message_count == 3
        # read as JSON Lines on purpose, it says what it is and what to do
        with pytest.raises(FileFormatError, match=r"line 1: a JSON export .*import_session"):
            await m.import_session(one_line, name="forced", format="jsonl")
        with pytest.raises(FileFormatError, match="a JSON export"):
            await m.import_store(one_line)
        assert await m.get_session_info("forced") is None


async def test_a_missing_import_file_is_not_found(store: Store, tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    async with store.async_manager() as m:
        loads: list[Awaitable[object]] = [m.import_session(missing), m.import_store(missing)]
        for load in loads:
            with pytest.raises(ImportFileNotFoundError) as caught:
                await load
            assert isinstance(caught.value, FileNotFoundError)
            assert isinstance(caught.value, SessionError)
            assert not isinstance(caught.value, FileFormatError)
            assert caught.value.filename == str(missing) and caught.value.errno == errno.ENOENT
            assert str(missing) in str(caught.value)
        assert await m.list_sessions() == []


def test_a_relative_missing_path_says_where_it_was_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with (
        SessionManager({"session": {"backend": "memory"}}) as m,
        pytest.raises(ImportFileNotFoundError, match=f"chat.jsonl: no such file .*{tmp_path}"),
    ):
        m.import_session("chat.jsonl")


async def test_shares_past_the_parents_messages_is_a_file_error(
    store: Store, tmp_path: Path
) -> None:
    path = tmp_path / "store.jsonl"
    async with store.async_manager() as m:
        await _seed(m, "root", 2)
        branch = await m.create_session("branch", branch_from="root")
        branch.add_message({"role": "user", "content": "own"})
        await m.save_session(branch)
        await m.export_store(path)
    lines = path.read_text().splitlines()
    number = next(i for i, x in enumerate(lines, 1) if '"shares":2' in x)
    lines[number - 1] = lines[number - 1].replace('"shares":2', '"shares":7')
    path.write_text("\n".join(lines) + "\n")
    async with Store(store.backend, tmp_path / "target").async_manager() as target:
        with pytest.raises(FileFormatError) as caught:
            await target.import_store(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: line {number}: 'shares' is 7")
        assert "'root'" in message and "shows 2 messages" in message
        assert "export the store again" in message
        assert await target.get_session_info("branch") is None
        assert [i.name for i in await target.list_sessions()] == ["root"]


async def test_errors_say_what_to_do(amanager: AsyncSessionManager, tmp_path: Path) -> None:
    await _seed(amanager)
    path = tmp_path / "chat.jsonl"
    await amanager.export_session("chat", path)
    with pytest.raises(SessionExistsError) as caught:
        await amanager.import_session(path)
    message = str(caught.value)
    assert str(path) in message and "'chat'" in message
    assert "name=" in message and "delete" in message
    store_path = tmp_path / "all.jsonl"
    await amanager.export_store(store_path)
    with pytest.raises(SessionExistsError, match="delete the existing session first"):
        await amanager.import_store(store_path)

    bare = tmp_path / "list.json"
    bare.write_text(json.dumps([{"role": "user", "content": "hi"}]))
    for fmt in (None, "json", "jsonl"):
        with pytest.raises(FileFormatError) as bad:
            await amanager.import_session(bare, name="bare", format=fmt)
        assert f"{bare}: line 1" in str(bad.value)
        assert '{"messages": [...]}' in str(bad.value) and "name=" in str(bad.value)
    # and what it says works
    bare.write_text(json.dumps({"messages": json.loads(bare.read_text())}))
    done = await amanager.import_session(bare, name="bare")
    assert done.message_count == 1


def test_the_new_errors_are_exported_and_documented() -> None:
    import coda_session
    from tests.support import ROOT

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for error in (ExportFileExistsError, ImportFileNotFoundError):
        assert getattr(coda_session, error.__name__) is error
        assert error.__name__ in readme
