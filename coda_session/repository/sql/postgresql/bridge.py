"""Synchronous operations over an async driver: a greenlet bridge.

The repository's operations (:mod:`..operations`) are plain methods over a synchronous executor.
On PostgreSQL the driver (asyncpg) is async: :func:`run_bridged` runs an operation in a
greenlet of its own, and each :func:`wait` inside it hands one awaitable back to the
event loop's side, which awaits it and resumes the operation with the result (or throws
the failure into it). The operation's code stays the same for every database.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import greenlet

__all__ = ["run_bridged", "wait"]

T = TypeVar("T")


class _Bridged(greenlet.greenlet):
    """The greenlet an operation runs in (so :func:`wait` can tell it is inside one)."""


async def run_bridged(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, run so that its :func:`wait` calls await on this event loop."""
    child = _Bridged(fn, greenlet.getcurrent())
    value: Any = child.switch(*args)
    while not child.dead:
        try:
            result = await value
        except BaseException as exc:  # thrown into the operation, which may handle it
            value = child.throw(exc)
        else:
            value = child.switch(result)
    return cast(T, value)


def wait(awaitable: Awaitable[T]) -> T:
    """Inside :func:`run_bridged`: the result of ``awaitable``, awaited on the loop."""
    current = greenlet.getcurrent()
    if not isinstance(current, _Bridged) or current.parent is None:
        raise RuntimeError("wait() called outside run_bridged()")
    return cast(T, current.parent.switch(awaitable))
