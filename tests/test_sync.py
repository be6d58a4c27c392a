"""The blocking API: threads, running event loops, shutdown."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from coda_session import ManagerClosedError, SessionError, SessionManager
from tests.support import Store


def test_from_inside_a_running_event_loop(store: Store) -> None:
    async def notebook_cell() -> list[str]:
        with store.sync_manager() as m:
            s = m.create_session("nb")
            s.add_message({"role": "user", "content": "from a loop"})
            m.save_session(s)
            return [x["content"] for x in m.load_session("nb").get_messages()]

    assert asyncio.run(notebook_cell()) == ["from a loop"]


def test_close_stops_its_thread_and_is_idempotent(store: Store) -> None:
    before = set(threading.enumerate())
    m = store.sync_manager()
    m.save_session(m.create_session("x"))
    m.close()
    m.close()
    # AnyIO's worker threads (the custom backend's storage calls run on them) are told to
    # stop when their loop's call ends and finish a moment later, on their own: give the
    # threads this test started that moment, then none may be left
    for thread in [t for t in threading.enumerate() if t not in before]:
        thread.join(timeout=5)
    leftover = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert leftover == []
    with pytest.raises(ManagerClosedError):
        m.list_sessions()


def test_context_manager_closes(store: Store) -> None:
    with store.sync_manager() as m:
        m.create_session("x")
    assert m.closed


def test_threads_share_one_manager(manager: SessionManager) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            s = manager.create_session(f"t{n}")
            for i in range(20):
                s.add_message({"role": "user", "content": f"{n}-{i}"})
                manager.save_session(s)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for n in range(6):
        got = [m["content"] for m in manager.load_session(f"t{n}").get_messages()]
        assert got == [f"{n}-{i}" for i in range(20)]


def test_sync_errors_are_the_typed_ones(manager: SessionManager) -> None:
    from coda_session import SessionNotFoundError

    with pytest.raises(SessionNotFoundError):
        manager.load_session("missing")


def test_close_while_another_thread_waits_does_not_hang(store: Store, tmp_path: Path) -> None:
    import json

    from coda_session import SessionError

    path = tmp_path / "big.jsonl"
    lines = [json.dumps({"coda_session": 1, "kind": "session", "name": "big"})]
    lines += [json.dumps({"role": "user", "content": f"m{i}"}) for i in range(30000)]
    lines.append(json.dumps({"coda_session": 1, "kind": "end", "message_count": 30000}))
    path.write_text("\n".join(lines) + "\n")
    m = store.sync_manager()
    outcome: list[object] = []

    def importer() -> None:
        try:
            outcome.append(m.import_session(path).message_count)
        except SessionError as exc:  # closed under it: an error, never a hang
            outcome.append(exc)

    worker = threading.Thread(target=importer)
    worker.start()
    m.close()
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert len(outcome) == 1
    assert outcome[0] == 30000 or isinstance(outcome[0], SessionError)


@pytest.mark.parametrize("index_in_background", [False, True])
def test_calls_run_in_the_calling_thread_without_a_thread_of_their_own(
    store: Store, index_in_background: bool
) -> None:
    """A script's calls run the manager's loop in the script's own thread: with autosave
    off the manager starts no thread for them (a hand-off costs two thread wake-ups); the
    only thread it may start is the search indexer's, after a save (SQL backends, with
    ``index_in_background``), which writes the index beside the calls."""
    before = set(threading.enumerate())
    config = store.config.model_copy(
        update={"autosave_interval": 0, "index_in_background": index_in_background}
    )
    store.config = config
    with SessionManager(config, store.repository(private_loop=True)) as m:
        s = m.create_session("here")
        s.add_message({"role": "user", "content": "x"})
        m.save_session(s)
        assert [x["content"] for x in m.load_session("here").get_messages()] == ["x"]
        started = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        names = {t.name for t in started if t.name.startswith("coda-session")}
        assert names <= ({"coda-session-indexer"} if index_in_background else set())
    after = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert [t.name for t in after if t.name.startswith("coda-session")] == []


def test_a_notebook_call_uses_a_helper_thread_that_close_stops(store: Store) -> None:
    before = set(threading.enumerate())

    async def cell() -> list[str]:
        config = store.config.model_copy(update={"autosave_interval": 0})
        m = SessionManager(config, store.repository(private_loop=True))
        s = m.create_session("nb")
        s.add_message({"role": "user", "content": "cell"})
        m.save_session(s)
        got = [x["content"] for x in m.load_session("nb").get_messages()]
        names = {t.name for t in threading.enumerate()}
        assert "coda-session-helper" in names
        m.close()
        with pytest.raises(ManagerClosedError):
            m.list_sessions()
        return got

    assert asyncio.run(cell()) == ["cell"]
    leftover = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert [t.name for t in leftover if t.name.startswith("coda-session")] == []


def test_calls_from_many_threads_and_a_notebook_at_once(store: Store) -> None:
    """Threads without a loop run the manager's loop themselves, one at a time; a thread
    with a running loop goes through the helper; all of them share one manager."""
    m = store.sync_manager()
    errors: list[BaseException] = []

    def plain(n: int) -> None:
        try:
            s = m.create_session(f"p{n}")
            for i in range(30):
                s.add_message({"role": "user", "content": f"{n}-{i}"})
                m.save_session(s)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def notebook() -> None:
        async def cell() -> None:
            s = m.create_session("nb")
            for i in range(30):
                s.add_message({"role": "user", "content": f"nb-{i}"})
                m.save_session(s)
                await asyncio.sleep(0)

        try:
            asyncio.run(cell())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=plain, args=(n,)) for n in range(4)]
    threads.append(threading.Thread(target=notebook))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert errors == []
        for n in range(4):
            got = [x["content"] for x in m.load_session(f"p{n}").get_messages()]
            assert got == [f"{n}-{i}" for i in range(30)]
        got = [x["content"] for x in m.load_session("nb").get_messages()]
        assert got == [f"nb-{i}" for i in range(30)]
    finally:
        m.close()


def test_close_cancels_a_call_that_does_not_end_and_never_hangs(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An import reading from a pipe nobody writes to never ends by itself. close()
    waits CLOSE_WAIT, cancels it, waits CANCEL_WAIT, then returns; the manager closes in
    the importing thread once its call ends (here: when the pipe is closed)."""
    import os
    import time

    from coda_session import runtime

    monkeypatch.setattr(runtime, "CLOSE_WAIT", 0.3)
    monkeypatch.setattr(runtime, "CANCEL_WAIT", 0.3)
    m = store.sync_manager()
    m.save_session(m.create_session("before"))
    read_end, write_end = os.pipe()
    outcome: list[BaseException] = []

    def importer() -> None:
        with os.fdopen(read_end) as stream:
            try:
                m.import_session(stream, name="never", format="jsonl")
            except BaseException as exc:
                outcome.append(exc)

    worker = threading.Thread(target=importer)
    worker.start()
    time.sleep(0.2)  # the import is waiting for its first line
    t0 = time.monotonic()
    m.close()
    assert time.monotonic() - t0 < 5
    with pytest.raises(ManagerClosedError):
        m.list_sessions()
    os.close(write_end)  # the read returns: the call ends, the manager closes
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], SessionError)
    with store.sync_manager() as again:
        assert [i.name for i in again.list_sessions()] == ["before"]


def test_close_from_a_signal_handler_during_calls(store: Store) -> None:
    """A SIGALRM handler closes the manager while the main thread is (most likely) inside
    a call: close() returns at once and the manager closes when that call ends; nothing
    saved is lost and nothing hangs."""
    import signal
    import time

    if not hasattr(signal, "setitimer"):
        pytest.skip("needs POSIX interval timers")
    m = store.sync_manager()
    s = m.create_session("busy")
    fired: list[bool] = []

    def handler(signum: int, frame: object) -> None:
        m.close()
        fired.append(True)

    previous = signal.signal(signal.SIGALRM, handler)
    saved = 0
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                s.add_message({"role": "user", "content": f"m{saved}"})
                m.save_session(s)
            except ManagerClosedError:
                break
            saved += 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert fired and m.closed
    with pytest.raises(ManagerClosedError):
        m.list_sessions()
    with store.sync_manager() as again:
        info = again.get_session_info("busy")
        # every acknowledged save is there; the one in flight when closed may be too
        # (the close flushes what the object held), never more
        assert info is not None and saved <= info.message_count <= saved + 1


def test_ctrl_c_during_calls_never_splits_a_save(store: Store) -> None:
    """Real SIGINTs at random moments of blocking saves in the main thread. Each is held
    until the call is over (the call is cancelled at its next await) and then raised as
    KeyboardInterrupt; no transaction is left open, and no message is lost or stored
    twice, however the interrupts fall."""
    import os
    import random
    import signal

    if not hasattr(signal, "setitimer"):
        pytest.skip("needs POSIX interval timers")
    rng = random.Random(7)
    armed = [False]

    def ctrl_c(signum: int, frame: object) -> None:
        if armed[0]:
            os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGALRM, ctrl_c)
    m = store.sync_manager()
    added = interrupts = 0
    try:
        s = m.create_session("interrupted")
        for _ in range(400):
            s.add_message({"role": "user", "content": "x" * 200})
            added += 1
            try:
                armed[0] = True
                signal.setitimer(signal.ITIMER_REAL, rng.uniform(0, 0.0004))
                m.save_session(s)
            except KeyboardInterrupt:
                interrupts += 1
            finally:
                armed[0] = False
                signal.setitimer(signal.ITIMER_REAL, 0)
        m.save_session(s)  # whatever an interrupted save did not write
        assert not s.has_unsaved_changes
    finally:
        signal.signal(signal.SIGALRM, previous)
        m.close()
    assert interrupts > 0
    with store.sync_manager() as again:
        info = again.get_session_info("interrupted")
        assert info is not None and info.message_count == added
