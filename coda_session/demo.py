"""A demo of the main job: save, resume, branch and list conversations on SQLite.

Run it with ``python -m coda_session.demo [DIRECTORY]``; without a directory it uses a
fresh temporary one and removes it afterwards.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from . import AsyncSessionManager, SessionManager


def _sync_part(config: dict[str, dict[str, str]]) -> None:
    with SessionManager(config) as manager:
        session = manager.create_session("my-chat")
        session.add_message({"role": "user", "content": "Hello!"})
        session.add_message({"role": "assistant", "content": "Hi there!", "model": "gpt-4"})
        session.update_metadata({"topic": "Python programming", "tags": ["demo"]})
        manager.save_session(session)
        branch = manager.create_session("my-chat-v2", branch_from="my-chat")
        branch.add_message({"role": "user", "content": "Let's try another way."})
        manager.save_session(branch)


async def _async_part(config: dict[str, dict[str, str]]) -> None:
    async with AsyncSessionManager(config) as manager:
        session = await manager.load_session("my-chat")  # a fresh manager resumes it
        session.add_message({"role": "user", "content": "What is Python?"})
        await manager.save_session(session)
        for message in await session.get_messages(limit=10):
            print(f"  [{message['role']}] {message['content']}")
        for info in await manager.list_sessions():
            print(
                f"{info.name}: {info.message_count} messages, {info.size_bytes} bytes, "
                f"metadata={info.metadata}"
            )


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    with tempfile.TemporaryDirectory(prefix="coda-session-demo-") as tmp:
        directory = Path(args[0]).expanduser() if args else Path(tmp) / "sessions"
        config = {"session": {"storage_path": str(directory)}}
        print(f"coda_session demo: SQLite database at {directory / 'sessions.db'}")
        _sync_part(config)
        print("my-chat, resumed by the async API:")
        asyncio.run(_async_part(config))


if __name__ == "__main__":
    main()
