"""A manager inherited across fork() raises a clear SessionError in the child, never hangs;
a process whose SIGINT is ignored is not interrupted by one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")

FORK_CHILD = r"""
import asyncio, os, signal, sys, threading, time, warnings
warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: what we test
from coda_session import AsyncSessionManager, SessionError, SessionManager

store, api = sys.argv[1], sys.argv[2]
config = {"session": {"storage_path": store, "autosave_interval": 0}}

def child_checks(calls):
    errors = 0
    for call in calls:
        try:
            call()
        except SessionError as exc:
            if "another process" in str(exc) and "new manager" in str(exc):
                errors += 1
    return errors

if api == "sync":
    m = SessionManager(config)
    s = m.create_session("parent")
    stop = threading.Event()
    child_running = threading.Event()
    idle = threading.Event()
    def saver():
        i = 0
        while not stop.is_set():
            # no fork lands inside a save: SQLite's in-process lock state is copied into the
            # child, and a write lock the parent held at the fork would stay held there,
            # locking the child's new manager out of writing (see the README's fork())
            while child_running.is_set():
                idle.set()
                time.sleep(0.005)
            idle.clear()
            s.add_message({"role": "user", "content": f"m{i}"})
            m.save_session(s)
            i += 1
            time.sleep(0.001)  # a writer that never pauses starves other processes
    t = threading.Thread(target=saver)
    t.start()
    time.sleep(0.3)
    results = []
    for attempt in range(3):
        r, w = os.pipe()
        child_running.set()
        idle.wait(30)
        pid = os.fork()
        if pid == 0:
            signal.alarm(30)  # a hung child ends itself (and the parent's read returns)
            os.close(r)
            calls = [
                lambda: m.list_sessions(),
                lambda: m.create_session("child"),
                lambda: m.save_session(s),
                lambda: s.add_message({"role": "user", "content": "c"}),
                lambda: s.get_messages(),
            ]
            n = child_checks(calls)
            m.close()  # drops the inherited manager without touching the parent's files
            with SessionManager(config) as fresh:  # a new manager works
                fresh.create_session(f"child{attempt}").add_message({"role": "user", "content": "x"})
            os.write(w, str(n).encode())
            os._exit(0)
        os.close(w)
        got = b""
        while chunk := os.read(r, 100):
            got += chunk
        os.close(r)
        _, status = os.waitpid(pid, 0)
        child_running.clear()
        results.append((got.decode(), os.waitstatus_to_exitcode(status)))
    stop.set()
    t.join()
    names = {i.name for i in m.list_sessions()}
    m.close()
    print(results, sorted(names))
else:
    async def main():
        m = AsyncSessionManager(config)
        s = await m.create_session("parent")
        s.add_message({"role": "user", "content": "a"})
        await m.save_session(s)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            signal.alarm(30)
            os.close(r)
            async def child():
                n = 0
                for coro in (m.list_sessions, lambda: m.create_session("c"), lambda: m.save_session(s)):
                    try:
                        await coro()
                    except SessionError as exc:
                        n += "another process" in str(exc)
                n += child_checks([lambda: s.add_message({"role": "user", "content": "c"})])
                await m.close()
                fresh = AsyncSessionManager(config)
                await fresh.create_session("child0")
                await fresh.close()
                return n
            n = asyncio.new_event_loop().run_until_complete(child())
            os.write(w, str(n).encode())
            os._exit(0)
        os.close(w)
        got = b""
        while chunk := os.read(r, 100):
            got += chunk
        _, status = os.waitpid(pid, 0)
        names = {i.name for i in await m.list_sessions()}
        await m.close()
        print([(got.decode(), os.waitstatus_to_exitcode(status))], sorted(names))
    asyncio.run(main())
"""


@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_manager_inherited_across_fork_raises_in_the_child(tmp_path: Path, api: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", FORK_CHILD, str(tmp_path / "s"), api],
        capture_output=True,
        text=True,
        timeout=120,  # a hang fails here instead of stalling the suite
    )
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip().splitlines()[-1]
    if api == "sync":
        assert line == (
            "[('5', 0), ('5', 0), ('5', 0)] ['child0', 'child1', 'child2', 'parent']"
        ), out.stderr
    else:
        assert line == "[('4', 0)] ['child0', 'parent']", out.stderr


SIGINT_IGNORED = r"""
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # as `cmd &` from a non-interactive shell
from coda_session import SessionManager
with SessionManager({"session": {"storage_path": sys.argv[1], "autosave_interval": 0}}) as m:
    s = m.create_session("s")
    print("ready", flush=True)
    deadline = time.monotonic() + 3
    n = 0
    while time.monotonic() < deadline:
        s.add_message({"role": "user", "content": f"m{n}"})
        m.save_session(s)
        m.list_sessions()
        n += 1
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    print("done", n, m.load_session("s").message_count == n, flush=True)
"""


def test_ignored_sigint_does_not_interrupt_calls(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGINT_IGNORED, str(tmp_path / "s")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        for _ in range(20):
            time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    words = out.split()
    assert words[0] == "done" and words[2] == "True", (out, err)


def test_fork_check_is_documented() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert "fork" in readme and "SIG_IGN" in readme
