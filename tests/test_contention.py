"""Contention: OS processes and asyncio tasks appending to one SQLite file at once.

Bounded by default (a few seconds); ``nox -s soak`` (CODA_SOAK=1) runs it for 30 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from coda_session import SessionManager

SECONDS = 30.0 if os.environ.get("CODA_SOAK") == "1" else 3.0
PROCESSES = 4
TASKS = 50

WRITER = r"""
import asyncio, json, sys, time
from coda_session import AsyncSessionManager, SessionError

storage, proc, tasks, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
acked = {}
errors = []

async def writer(m, task):
    shared = task % 2 == 0  # half on one session of every process, half on their own
    name = "shared" if shared else f"p{proc}-t{task}"
    session = await m.create_session(name)
    tag, k = f"p{proc}:t{task}", 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        session.add_message({"role": "user", "content": f"{tag}:{k}", "writer": tag})
        try:
            await m.save_session(session)
        except SessionError as exc:
            errors.append(f"{tag}: {type(exc).__name__}: {exc}")
            return
        k += 1
        acked[tag] = k
        await asyncio.sleep(0)

async def main():
    config = {"session": {"storage_path": storage, "autosave_interval": 0}}
    async with AsyncSessionManager(config) as m:
        await asyncio.gather(*(writer(m, t) for t in range(tasks)))

asyncio.run(main())
print(json.dumps({"acked": acked, "errors": errors}))
"""


@pytest.mark.soak
def test_processes_and_tasks_append_without_loss(tmp_path: Path) -> None:
    storage = tmp_path / "shared"
    with SessionManager({"session": {"storage_path": str(storage)}}) as m:
        m.create_session("shared")  # created once; every writer resumes it
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(storage), str(p), str(TASKS), str(SECONDS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(PROCESSES)
    ]
    acked: dict[str, int] = {}
    for proc in procs:
        out, err = proc.communicate(timeout=SECONDS * 10 + 120)
        assert proc.returncode == 0, err
        report = json.loads(out.strip().splitlines()[-1])
        assert report["errors"] == []  # no "database is locked" (nor anything) reached a writer
        acked.update(report["acked"])
    assert len(acked) == PROCESSES * TASKS

    seen: dict[str, list[int]] = defaultdict(list)
    with SessionManager({"session": {"storage_path": str(storage)}}) as m:
        infos = {i.name: i for i in m.list_sessions()}
        for name, info in infos.items():
            messages = m.load_session(name).get_messages()
            assert len(messages) == info.message_count  # counters in step with rows
            for msg in messages:
                tag, k = msg["content"].rsplit(":", 1)
                assert tag == msg["writer"]
                seen[tag].append(int(k))
    total = 0
    for tag, count in acked.items():
        # every acknowledged save is there, once, in the writer's order; nothing else
        assert seen[tag] == list(range(count)), tag
        total += count
    assert sum(len(v) for v in seen.values()) == total
    print(f"{PROCESSES} processes x {TASKS} tasks, {SECONDS:g} s: {total} messages, none lost")
