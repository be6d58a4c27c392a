"""User code typed with :data:`coda_session.Message`: this file is type-checked with
``mypy --strict`` with the rest of the tests (``nox -s typecheck``, ``mypy``), which is
what it proves (keys of the caller's own pass; the public signatures take and return
``Message``); the test runs the same code."""

from __future__ import annotations

from typing import Any, get_type_hints

from coda_session import Message, MessageEntry, MessageInput, SessionManager


def build() -> list[Message]:
    msg: Message = {"role": "user", "content": "hi", "model": "gpt-4"}
    call: Message = {
        "type": "function_call",
        "call_id": "call_1",
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
    }
    output: Message = {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}
    return [msg, call, output]


def first_role(messages: list[Message]) -> str | None:
    role = messages[0].get("role")
    return role if isinstance(role, str) else None


def test_typed_user_code(manager: SessionManager) -> None:
    session = manager.create_session("typed")
    messages = build()
    for message in messages:
        session.add_message(message)
    batch: list[MessageInput] = [*messages]
    session.set_messages(batch)
    manager.save_session(session)
    got: list[Message] = session.get_messages()
    assert got == messages and first_role(got) == "user"
    entries: list[MessageEntry] = session.get_entries()
    assert [e.message for e in entries] == got
    popped: list[Message] = session.pop_messages()
    assert popped == [messages[-1]]


def test_message_is_a_typeddict_allowing_any_key() -> None:
    """At run time (and for checkers implementing PEP 728) ``Message`` is a TypedDict of
    the keys the library knows, none required, any other key allowed."""
    hints: dict[str, Any] = get_type_hints(Message)
    assert {"role", "content", "type", "name", "tool_calls", "tool_call_id"} <= set(hints)
    # read with getattr: under mypy Message is dict[str, Any] (see coda_session.models)
    assert getattr(Message, "__required_keys__", None) == frozenset()
    assert getattr(Message, "__extra_items__", None) is Any
