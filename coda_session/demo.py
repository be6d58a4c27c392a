"""A demo of the main job: save, resume, branch and list conversations on SQLite.

Run it with ``python -m coda_session.demo [DIRECTORY]`` (``--help`` says more). Without a
directory it uses a fresh temporary one and removes it afterwards; a directory given is
kept, and running the demo on it again resumes the conversation saved there.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any

from . import AsyncSessionManager, SessionManager

CHAT = "my-chat"
Config = dict[str, dict[str, Any]]


def _show(messages: list[dict[str, Any]]) -> None:
    for message in messages:
        print(f"  [{message['role']}] {message['content']}")


def _free_branch_name(manager: SessionManager) -> str:
    """``my-chat-v2``, or the next number free (a rerun keeps the earlier branches)."""
    taken = {info.name for info in manager.list_sessions()}
    number = 2
    while f"{CHAT}-v{number}" in taken:
        number += 1
    return f"{CHAT}-v{number}"


def _sync_part(config: Config) -> int:
    """Create (or resume) the chat and branch it; returns which run this is."""
    with SessionManager(config) as manager:
        session = manager.create_session(CHAT)  # creates it, or resumes it if it exists
        if session.message_count == 0:
            session.add_message({"role": "user", "content": "Hello!"})
            session.add_message({"role": "assistant", "content": "Hi there!", "model": "gpt-4"})
            session.update_metadata({"topic": "Python programming", "tags": ["demo"]})
            print(f"{CHAT}: a new session, 2 messages")
        else:
            print(f"{CHAT}: resumed, {session.message_count} messages saved by earlier runs")
        runs = session.metadata.get("runs")
        run = runs + 1 if isinstance(runs, int) else 1
        session.update_metadata({"runs": run})
        manager.save_session(session)

        name = _free_branch_name(manager)
        branch = manager.create_session(name, branch_from=CHAT)
        branch.add_message({"role": "user", "content": "Let's try another way."})
        manager.save_session(branch)
        print(
            f"{name}: a branch of {CHAT} showing its first {branch.info().fork_point} "
            "messages, then one of its own:"
        )
        _show(branch.get_messages())
        return run


async def _async_part(config: Config, run: int) -> None:
    async with AsyncSessionManager(config) as manager:
        session = await manager.load_session(CHAT)  # a fresh manager resumes it
        question = "What is Python?" if run == 1 else f"Tell me more (run {run})."
        session.add_message({"role": "user", "content": question})
        await manager.save_session(session)
        print(f"{CHAT}, resumed by the async API, one message added (the newest 10):")
        _show(await session.get_messages(limit=10))
        print("every session:")
        names = {info.id: info.name for info in await manager.list_sessions()}
        for info in await manager.list_sessions():
            where = ""
            if info.parent_id is not None:
                parent = names.get(info.parent_id, "a deleted session")
                where = f", a branch of {parent} at message {info.fork_point}"
            print(
                f"  {info.name}: {info.message_count} messages, {info.size_bytes} bytes"
                f"{where}, metadata={info.metadata}"
            )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m coda_session.demo",
        description=(
            "Save, resume, branch and list conversations with coda_session, on its "
            "default storage (SQLite)."
        ),
    )
    parser.add_argument(
        "directory",
        nargs="?",
        type=Path,
        metavar="DIRECTORY",
        help=(
            "where the database (sessions.db) is kept afterwards; running the demo on it "
            "again resumes the conversation and adds a branch. Default: a temporary "
            "directory, removed at the end"
        ),
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="coda-session-demo-") as tmp:
        kept = args.directory is not None
        directory = args.directory.expanduser() if kept else Path(tmp) / "sessions"
        config: Config = {"session": {"storage_path": str(directory)}}
        print(f"coda_session demo: SQLite database at {directory / 'sessions.db'}")
        run = _sync_part(config)
        asyncio.run(_async_part(config, run))
        if kept:
            print(f"{directory} is kept: run the demo on it again to resume the conversation")
        else:
            print("the temporary directory is removed now: name a DIRECTORY to keep it")


if __name__ == "__main__":
    main()
