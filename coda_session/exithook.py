"""Work at interpreter exit that must run before the interpreter joins its threads.

The blocking runtime closes the managers never closed by their owner, and the async
manager settles unsaved changes, while the threads they need (a loop's helper thread, a
connection's worker) still run: after the join, they would be waited on or gone.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

__all__ = ["before_threads_join"]

_lock = threading.Lock()
_installed: set[Callable[[], None]] = set()


def _after_fork_in_child() -> None:
    global _lock
    # another thread may have held the lock at the fork
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def before_threads_join(hook: Callable[[], None]) -> None:
    """Call ``hook`` once when the interpreter exits, before it joins the threads that
    are not daemons. Registering the same hook again does nothing."""
    with _lock:
        if hook in _installed:
            return
        register = getattr(threading, "_register_atexit", None)
        if register is not None:
            register(hook)
        else:  # pragma: no cover - CPython has had it since 3.9
            import atexit

            atexit.register(hook)
        _installed.add(hook)
