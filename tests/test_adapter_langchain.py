"""The LangChain chat history (coda_session.adapters.langchain) against the real
``langchain-core`` package, installed by the ``test`` extra: this file fails, never skips,
without it. No network: ``RunnableWithMessageHistory`` runs with LangChain's own scripted
chat model."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from typing import Any

import pytest
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    ChatMessageChunk,
    FunctionMessage,
    FunctionMessageChunk,
    HumanMessage,
    HumanMessageChunk,
    RemoveMessage,
    SystemMessage,
    SystemMessageChunk,
    ToolMessage,
    ToolMessageChunk,
    message_to_dict,
)
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory

from coda_session import (
    AsyncSessionManager,
    InvalidMessageError,
    SessionError,
    SessionManager,
)
from coda_session.adapters.langchain import CodaChatMessageHistory, from_stored
from tests.support import ROOT, Store


def samples() -> list[BaseMessage]:
    """One message of every type LangChain's ``messages_from_dict`` reads back, with the
    optional fields set (ids, names, metadata, tool calls, usage, content parts)."""
    return [
        SystemMessage("You answer briefly.", id="sys-1", additional_kwargs={"z": 1, "a": 2}),
        HumanMessage(
            [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
            ],
            id="h-1",
            name="ann",
        ),
        AIMessage(
            "",
            id="ai-1",
            tool_calls=[
                {"name": "weather", "args": {"city": "Paris"}, "id": "call_1", "type": "tool_call"}
            ],
            invalid_tool_calls=[
                {
                    "name": "weather",
                    "args": '{"city": ',
                    "id": "call_2",
                    "error": "truncated JSON",
                    "type": "invalid_tool_call",
                }
            ],
            usage_metadata={
                "input_tokens": 12,
                "output_tokens": 5,
                "total_tokens": 17,
                "input_token_details": {"cache_read": 4},
            },
            response_metadata={"model_name": "scripted", "finish_reason": "tool_calls"},
            additional_kwargs={"refusal": None},
        ),
        ToolMessage(
            "sunny, 21°C",
            tool_call_id="call_1",
            artifact={"raw": {"temp": 21.5, "hourly": [20, 21, 22]}},
            status="error",
            name="weather",
            id="tool-1",
        ),
        FunctionMessage(content="42", name="answer", id="fn-1"),
        ChatMessage(content="Too long.", role="critic", id="chat-1"),
        AIMessage(
            [{"type": "text", "text": "Sunny in Paris.", "annotations": []}],
            id="ai-2",
            response_metadata={"model_provider": "scripted"},
        ),
        AIMessageChunk(
            content="Sun",
            id="chunk-1",
            tool_call_chunks=[
                {
                    "name": "weather",
                    "args": '{"ci',
                    "id": "call_3",
                    "index": 0,
                    "type": "tool_call_chunk",
                }
            ],
            chunk_position="last",
        ),
        HumanMessageChunk(content="par", id="hc-1"),
        SystemMessageChunk(content="sys", id="sc-1"),
        ToolMessageChunk(content="out", tool_call_id="call_3", id="tc-1"),
        FunctionMessageChunk(content="f", name="answer", id="fc-1"),
        ChatMessageChunk(content="c", role="critic", id="cc-1"),
        RemoveMessage(id="ai-1"),
    ]


def test_the_samples_cover_every_message_type() -> None:
    types = {type(m) for m in samples()}
    assert {AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage} <= types
    assert {FunctionMessage, ChatMessage, HumanMessageChunk, SystemMessageChunk} <= types
    assert {ToolMessageChunk, FunctionMessageChunk, ChatMessageChunk, RemoveMessage} <= types


async def test_every_message_type_round_trips_equal_async(amanager: AsyncSessionManager) -> None:
    history = CodaChatMessageHistory("chat", amanager)
    assert isinstance(history, BaseChatMessageHistory)
    await history.aadd_messages(samples())
    back = await history.aget_messages()
    assert back == samples()
    assert [type(m) for m in back] == [type(m) for m in samples()]
    # the AIMessage's fields LangChain compares loosely, checked one by one
    assert back[2].tool_calls == samples()[2].tool_calls  # type: ignore[attr-defined]
    assert back[2].invalid_tool_calls == samples()[2].invalid_tool_calls  # type: ignore[attr-defined]
    assert back[2].usage_metadata == samples()[2].usage_metadata  # type: ignore[attr-defined]
    assert back[3].artifact == samples()[3].artifact  # type: ignore[attr-defined]
    assert back[3].status == "error"  # type: ignore[attr-defined]
    assert [m.id for m in back] == [m.id for m in samples()]


def test_every_message_type_round_trips_equal_sync(manager: SessionManager) -> None:
    history = CodaChatMessageHistory("chat", manager)
    history.add_messages(samples())
    assert history.messages == samples()
    assert [type(m) for m in history.messages] == [type(m) for m in samples()]


async def test_each_message_is_stored_as_message_to_dict_gives_it(store: Store) -> None:
    async with store.async_manager() as manager:
        await CodaChatMessageHistory("chat", manager).aadd_messages(samples())
    async with store.async_manager() as manager:
        stored = await (await manager.load_session("chat")).get_messages()
    expected = [message_to_dict(m) for m in samples()]
    assert stored == expected
    for got, want in zip(stored, expected, strict=True):
        assert list(got) == list(want) == ["type", "data"]
        assert list(got["data"]) == list(want["data"])


async def test_add_messages_is_one_save_all_or_nothing(amanager: AsyncSessionManager) -> None:
    history = CodaChatMessageHistory("chat", amanager)
    await history.aadd_messages([HumanMessage("first", id="1")])
    refused = [
        HumanMessage("kept out", id="2"),
        ToolMessage("x", tool_call_id="c", artifact=object()),  # not JSON: refused
    ]
    with pytest.raises(InvalidMessageError, match="artifact"):
        await history.aadd_messages(refused)
    assert await history.aget_messages() == [HumanMessage("first", id="1")]
    info = await amanager.get_session_info("chat")
    assert info is not None and info.message_count == 1
    await history.aadd_messages([])
    assert await history.aget_messages() == [HumanMessage("first", id="1")]


def test_a_refused_batch_writes_nothing_sync(manager: SessionManager) -> None:
    history = CodaChatMessageHistory("chat", manager)
    with pytest.raises(InvalidMessageError):
        history.add_messages([HumanMessage("a"), ToolMessage("x", tool_call_id="c", artifact={1})])
    assert history.messages == []
    history.add_message(HumanMessage("b"))  # LangChain's single add goes through add_messages
    assert history.messages == [HumanMessage("b")]


async def test_clear_empties_the_session_and_keeps_it(amanager: AsyncSessionManager) -> None:
    history = CodaChatMessageHistory("chat", amanager)
    await history.aclear()  # nothing to clear: creates nothing
    assert await amanager.get_session_info("chat") is None
    assert await history.aget_messages() == []
    assert await amanager.get_session_info("chat") is None
    await history.aadd_messages([HumanMessage("hi"), AIMessage("hello")])
    await history.aclear()
    assert await history.aget_messages() == []
    info = await amanager.get_session_info("chat")
    assert info is not None and info.message_count == 0
    await history.aadd_messages([HumanMessage("again")])
    assert await history.aget_messages() == [HumanMessage("again")]


def test_clear_sync(manager: SessionManager) -> None:
    history = CodaChatMessageHistory("chat", manager)
    history.clear()
    assert manager.get_session_info("chat") is None
    history.add_user_message("hi")
    history.add_ai_message("hello")
    assert history.messages == [HumanMessage("hi"), AIMessage("hello")]
    history.clear()
    assert history.messages == []
    assert manager.get_session_info("chat") is not None


async def test_blocking_methods_over_the_async_manager(store: Store) -> None:
    # called from inside a running loop: the blocking methods run on a helper thread's loop
    async with store.async_manager() as manager:
        history = CodaChatMessageHistory("chat", manager)
        history.add_messages(samples()[:3])
        assert history.messages == samples()[:3]
        assert await history.aget_messages() == samples()[:3]
        history.clear()
        assert await history.aget_messages() == []


def test_blocking_methods_over_the_async_manager_without_a_loop(store: Store) -> None:
    manager = store.async_manager()
    try:
        history = CodaChatMessageHistory("chat", manager)
        history.add_messages(samples())
        assert history.messages == samples()
        history.clear()
        assert history.messages == []
    finally:
        asyncio.run(manager.close())


async def test_async_methods_over_the_blocking_manager(store: Store) -> None:
    manager = store.sync_manager()
    try:
        history = CodaChatMessageHistory("chat", manager)
        await history.aadd_messages(samples())
        assert await history.aget_messages() == samples()
        assert history.messages == samples()
        await history.aclear()
        assert await history.aget_messages() == []
    finally:
        manager.close()


async def test_several_sessions_and_histories(store: Store) -> None:
    async with store.async_manager() as manager:
        ann = CodaChatMessageHistory("ann", manager)
        bob = CodaChatMessageHistory("bob", manager)
        ann_again = CodaChatMessageHistory("ann", manager)
        await ann.aadd_messages([HumanMessage("I am Ann", id="a1")])
        await bob.aadd_messages([HumanMessage("I am Bob", id="b1")])
        await ann_again.aadd_messages([AIMessage("Hi Ann", id="a2")])
        assert await ann.aget_messages() == [
            HumanMessage("I am Ann", id="a1"),
            AIMessage("Hi Ann", id="a2"),
        ]
        assert await bob.aget_messages() == [HumanMessage("I am Bob", id="b1")]
        await bob.aclear()
        assert len(await ann.aget_messages()) == 2
    # another manager on the same storage sees it all
    with store.sync_manager() as blocking:
        assert CodaChatMessageHistory("ann", blocking).messages == [
            HumanMessage("I am Ann", id="a1"),
            AIMessage("Hi Ann", id="a2"),
        ]
        assert sorted(info.name for info in blocking.list_sessions()) == ["ann", "bob"]


def test_messages_of_the_plain_api_read_as_langchain_messages(manager: SessionManager) -> None:
    session = manager.create_session("mixed")
    session.add_message({"role": "user", "content": "Hello"})
    session.add_message({"role": "assistant", "content": "Hi!"})
    manager.save_session(session)
    history = CodaChatMessageHistory("mixed", manager)
    history.add_messages([HumanMessage("More", id="m")])
    assert history.messages == [
        HumanMessage("Hello"),
        AIMessage("Hi!"),
        HumanMessage("More", id="m"),
    ]
    with pytest.raises(ValueError):
        from_stored([{"type": "nonsense", "data": {"content": "x"}}])


def test_a_manager_is_required() -> None:
    with pytest.raises(SessionError, match="SessionManager or an AsyncSessionManager"):
        CodaChatMessageHistory("chat", "sqlite:///x.db")  # type: ignore[arg-type]


def _chain(seen: list[list[BaseMessage]], replies: list[AIMessage]) -> Any:
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "You are terse."),
            MessagesPlaceholder("history"),
            ("human", "{question}"),
        ]
    )

    def record(value: Any) -> Any:
        seen.append(list(value.to_messages()))
        return value

    model = GenericFakeChatModel(messages=iter(replies))
    return prompt | RunnableLambda(record) | model


def _replies() -> list[AIMessage]:
    return [AIMessage("Hello Ann.", id="r1"), AIMessage("Your name is Ann.", id="r2")]


def _expected_history() -> list[BaseMessage]:
    return [
        HumanMessage("I am Ann."),
        AIMessage("Hello Ann.", id="r1"),
        HumanMessage("What is my name?"),
        AIMessage("Your name is Ann.", id="r2"),
    ]


def _strip(messages: list[BaseMessage]) -> list[tuple[str, Any]]:
    # the model's outputs gain run metadata; the turns are compared by type and content
    return [(m.type, m.content) for m in messages]


async def test_runnable_with_message_history_async(amanager: AsyncSessionManager) -> None:
    seen: list[list[BaseMessage]] = []
    with pytest.warns(DeprecationWarning, match="RunnableWithMessageHistory is deprecated"):
        chain = RunnableWithMessageHistory(
            _chain(seen, _replies()),
            lambda session_id: CodaChatMessageHistory(session_id, amanager),
            input_messages_key="question",
            history_messages_key="history",
        )
    config: Any = {"configurable": {"session_id": "ann"}}
    first = await chain.ainvoke({"question": "I am Ann."}, config=config)
    second = await chain.ainvoke({"question": "What is my name?"}, config=config)
    assert (first.content, second.content) == ("Hello Ann.", "Your name is Ann.")
    # the second turn's prompt held the first turn, read back from storage
    assert _strip(seen[1]) == [("system", "You are terse."), *_strip(_expected_history()[:3])]
    stored = await CodaChatMessageHistory("ann", amanager).aget_messages()
    assert _strip(stored) == _strip(_expected_history())
    assert stored[1] == first and stored[3] == second
    assert [m.id for m in stored[1::2]] == ["r1", "r2"]
    info = await amanager.get_session_info("ann")
    assert info is not None and info.message_count == 4


def test_runnable_with_message_history_sync(manager: SessionManager) -> None:
    seen: list[list[BaseMessage]] = []
    with pytest.warns(DeprecationWarning, match="LangGraph"):
        chain = RunnableWithMessageHistory(
            _chain(seen, [*_replies(), AIMessage("Hello.", id="r3")]),
            lambda session_id: CodaChatMessageHistory(session_id, manager),
            input_messages_key="question",
            history_messages_key="history",
        )
    for session_id in ("ann", "other"):
        config: Any = {"configurable": {"session_id": session_id}}
        chain.invoke({"question": "I am Ann."}, config=config)
        if session_id == "ann":
            chain.invoke({"question": "What is my name?"}, config=config)
    assert _strip(seen[1][1:]) == _strip(_expected_history()[:3])
    assert _strip(CodaChatMessageHistory("ann", manager).messages) == _strip(_expected_history())
    assert _strip(CodaChatMessageHistory("other", manager).messages) == [
        ("human", "I am Ann."),
        ("ai", "Hello."),
    ]


def test_import_coda_session_does_not_import_langchain() -> None:
    code = "import sys, coda_session; assert 'langchain_core' not in sys.modules, 'imported'"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


async def test_search_finds_the_messages_text(amanager: AsyncSessionManager) -> None:
    history = CodaChatMessageHistory("chat", amanager)
    await history.aadd_messages(samples())
    found = await amanager.search("Paris", session="chat")
    assert {hit.message["data"]["id"] for hit in found} == {"ai-1", "ai-2"}
    # every string of ``data`` but ids and types is text, a ChatMessage's role among them
    critic = await amanager.search("critic", session="chat")
    assert {hit.message["data"]["id"] for hit in critic} == {"chat-1", "cc-1"}
    assert [hit for hit in await amanager.search("Tokyo")] == []
    assert [hit for hit in await amanager.search("Paris", role="assistant")] == []


async def test_concurrent_bulk_adds_keep_each_batch_whole(amanager: AsyncSessionManager) -> None:
    async def turn(n: int) -> None:
        history = CodaChatMessageHistory("chat", amanager)
        await history.aadd_messages(
            [HumanMessage(f"q{n}", id=f"q{n}"), AIMessage(f"a{n}", id=f"a{n}")]
        )

    await asyncio.gather(*(turn(n) for n in range(8)))
    stored = await CodaChatMessageHistory("chat", amanager).aget_messages()
    assert len(stored) == 16
    # each batch is one save: a question is always followed by its own answer
    pairs = [(q.id, a.id) for q, a in zip(stored[::2], stored[1::2], strict=True)]
    assert sorted(pairs) == sorted((f"q{n}", f"a{n}") for n in range(8))


def test_concurrent_bulk_adds_from_threads(manager: SessionManager) -> None:
    def turn(n: int) -> None:
        history = CodaChatMessageHistory("chat", manager)
        history.add_messages([HumanMessage(f"q{n}", id=f"q{n}"), AIMessage(f"a{n}", id=f"a{n}")])

    threads = [threading.Thread(target=turn, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = CodaChatMessageHistory("chat", manager).messages
    pairs = [(q.id, a.id) for q, a in zip(stored[::2], stored[1::2], strict=True)]
    assert sorted(pairs) == sorted((f"q{n}", f"a{n}") for n in range(6))
