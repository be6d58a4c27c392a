"""The OpenAI Agents SDK session (coda_session.adapters.openai_agents) against the real
``openai-agents`` package, installed by the ``test`` extra: this file fails, never skips,
without it. No network: the Runner runs with a scripted model written here."""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import sys
import threading
import typing
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from agents import (
    Agent,
    ModelResponse,
    ModelSettings,
    RunConfig,
    Runner,
    Tool,
    Usage,
    function_tool,
    set_tracing_disabled,
)
from agents.agent_output import AgentOutputSchemaBase
from agents.handoffs import Handoff
from agents.items import TResponseInputItem, TResponseOutputItem, TResponseStreamEvent
from agents.memory import Session, SessionSettings
from agents.models.interface import Model, ModelTracing
from agents.run_internal.items import digest_input_item
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)
from openai.types.responses.response_input_item_param import ResponseInputItemParam
from openai.types.responses.response_prompt_param import ResponsePromptParam

from coda_session import AsyncSessionManager, InvalidMessageError, SessionTooLargeError
from coda_session.adapters.openai_agents import CodaSession
from tests.support import ROOT, Store

# the Runner would otherwise try to export traces to OpenAI
set_tracing_disabled(True)

#: One item of every type the SDK's input union defines, keys in an order of their own
#: (``type`` last in some, nested dicts unsorted) so an order change shows.
ITEMS: dict[str, dict[str, Any]] = {
    "message": {"role": "user", "content": "What is the weather in Paris?", "type": "message"},
    "function_call": {
        "type": "function_call",
        "name": "weather",
        "call_id": "call_1",
        "arguments": '{"city": "Paris"}',
        "id": "fc_1",
        "status": "completed",
    },
    "function_call_output": {
        "output": "sunny, 21°C",
        "call_id": "call_1",
        "type": "function_call_output",
    },
    "reasoning": {
        "id": "rs_1",
        "summary": [{"text": "The user wants the weather.", "type": "summary_text"}],
        "type": "reasoning",
        "encrypted_content": "gAAAA==",
    },
    "item_reference": {"type": "item_reference", "id": "msg_0"},
    "file_search_call": {
        "id": "fs_1",
        "queries": ["paris weather"],
        "status": "completed",
        "type": "file_search_call",
        "results": [{"score": 0.5, "text": "sunny", "file_id": "f1", "attributes": {"b": 1}}],
    },
    "computer_call": {
        "type": "computer_call",
        "id": "cc_1",
        "call_id": "ccall_1",
        "action": {"y": 2, "x": 1, "type": "click", "button": "left"},
        "pending_safety_checks": [],
        "status": "completed",
    },
    "computer_call_output": {
        "call_id": "ccall_1",
        "output": {"type": "computer_screenshot", "image_url": "data:image/png;base64,AA=="},
        "type": "computer_call_output",
    },
    "web_search_call": {
        "id": "ws_1",
        "action": {"type": "search", "query": "paris"},
        "status": "completed",
        "type": "web_search_call",
    },
    "tool_search_call": {"type": "tool_search_call", "arguments": {"q": "weather"}, "id": "ts_1"},
    "tool_search_output": {"tools": [], "type": "tool_search_output", "call_id": "ts_1"},
    "additional_tools": {"type": "additional_tools", "tools": []},
    "configuration_update": {"type": "configuration_update", "id": "cu_1"},
    "compaction": {"encrypted_content": "opaque==", "type": "compaction", "id": "cmp_1"},
    "image_generation_call": {
        "id": "ig_1",
        "result": None,
        "status": "generating",
        "type": "image_generation_call",
    },
    "code_interpreter_call": {
        "id": "ci_1",
        "code": "print(1)",
        "container_id": "cnt",
        "outputs": [{"type": "logs", "logs": "1"}],
        "status": "completed",
        "type": "code_interpreter_call",
    },
    "local_shell_call": {
        "type": "local_shell_call",
        "id": "ls_1",
        "call_id": "lcall",
        "action": {"type": "exec", "command": ["ls"], "env": {"Z": "1", "A": "2"}},
        "status": "completed",
    },
    "local_shell_call_output": {"id": "lcall", "output": "a\nb", "type": "local_shell_call_output"},
    "shell_call": {"call_id": "sh_1", "action": {"commands": ["ls"]}, "type": "shell_call"},
    "shell_call_output": {
        "call_id": "sh_1",
        "output": [{"stdout": "a", "stderr": "", "outcome": {"type": "exit", "exit_code": 0}}],
        "type": "shell_call_output",
    },
    "apply_patch_call": {
        "type": "apply_patch_call",
        "call_id": "ap_1",
        "operation": {"type": "create_file", "path": "a.txt", "diff": "+a"},
        "status": "completed",
    },
    "apply_patch_call_output": {
        "call_id": "ap_1",
        "status": "completed",
        "type": "apply_patch_call_output",
    },
    "mcp_list_tools": {"id": "ml_1", "server_label": "s", "tools": [], "type": "mcp_list_tools"},
    "mcp_approval_request": {
        "type": "mcp_approval_request",
        "id": "mar_1",
        "arguments": "{}",
        "name": "t",
        "server_label": "s",
    },
    "mcp_approval_response": {
        "approve": True,
        "approval_request_id": "mar_1",
        "type": "mcp_approval_response",
    },
    "mcp_call": {
        "id": "mc_1",
        "arguments": "{}",
        "name": "t",
        "server_label": "s",
        "type": "mcp_call",
        "output": "done",
    },
    "custom_tool_call_output": {
        "call_id": "ct_1",
        "output": "ok",
        "type": "custom_tool_call_output",
    },
    "custom_tool_call": {"type": "custom_tool_call", "call_id": "ct_1", "input": "x", "name": "t"},
    "compaction_trigger": {"type": "compaction_trigger"},
    "program": {"type": "program", "id": "p_1", "code": "1+1"},
    "program_output": {"output": "2", "type": "program_output", "call_id": "p_1"},
}

#: Messages in their other shapes (easy input, input message with parts, output message).
MESSAGES: list[dict[str, Any]] = [
    {"content": "Hi", "role": "user"},
    {"role": "developer", "content": "Be brief.", "type": "message"},
    {
        "type": "message",
        "role": "user",
        "content": [
            {"type": "input_text", "text": "look"},
            {"detail": "auto", "type": "input_image", "image_url": "https://x/a.png"},
        ],
        "status": "completed",
    },
    {
        "id": "msg_1",
        "content": [{"annotations": [], "text": "Sunny.", "type": "output_text", "logprobs": []}],
        "role": "assistant",
        "status": "completed",
        "type": "message",
    },
]

ALL_ITEMS = cast(list[TResponseInputItem], [*MESSAGES, *ITEMS.values()])


def exact(items: list[Any]) -> str:
    """Items as text that differs when any key, value or key order (nested too) differs."""
    return json.dumps(items, ensure_ascii=False)


def _type_literals(annotation: Any) -> set[str]:
    found: set[str] = set()
    for arg in typing.get_args(annotation) or ():
        if isinstance(arg, str):
            found.add(arg)
        else:
            found |= _type_literals(arg)
    return found


def test_the_samples_cover_every_item_type_of_the_installed_sdk() -> None:
    defined: set[str] = set()
    for member in typing.get_args(ResponseInputItemParam):
        hints = typing.get_type_hints(member, include_extras=True)
        defined |= _type_literals(hints["type"])
    assert defined == {*ITEMS, "message"}


@pytest.mark.asyncio
async def test_every_item_type_round_trips_exactly(store: Store) -> None:
    given = copy.deepcopy(ALL_ITEMS)
    async with store.async_manager() as manager:
        session = CodaSession("every-type", manager)
        await session.add_items(given)
        assert given == ALL_ITEMS  # the caller's items are not changed
        got = await session.get_items()
        assert got == ALL_ITEMS and exact(got) == exact(ALL_ITEMS)
        tail = await session.get_items(limit=3)
        assert exact(tail) == exact(ALL_ITEMS[-3:])
    async with store.async_manager() as manager:  # reopened: read from storage
        session = CodaSession("every-type", manager)
        assert exact(await session.get_items()) == exact(ALL_ITEMS)
        for expected in reversed(ALL_ITEMS[-4:]):
            assert exact([await session.pop_item()]) == exact([expected])
        assert exact(await session.get_items()) == exact(ALL_ITEMS[:-4])


@pytest.mark.asyncio
async def test_the_runners_write_check_matches_what_comes_back(store: Store) -> None:
    """The Runner digests the items it wrote and compares them with
    ``get_items(limit=len(written))`` to settle an interrupted write."""
    async with store.async_manager() as manager:
        session = CodaSession("digests", manager)
        await session.add_items([cast(TResponseInputItem, {"role": "user", "content": "first"})])
        await session.add_items(ALL_ITEMS)
        back = await session.get_items(limit=len(ALL_ITEMS))
        assert [digest_input_item(i) for i in back] == [digest_input_item(i) for i in ALL_ITEMS]


@pytest.mark.asyncio
async def test_limits_and_order(amanager: AsyncSessionManager) -> None:
    items = [cast(TResponseInputItem, {"role": "user", "content": f"m{i}"}) for i in range(6)]
    session = CodaSession("limits", amanager)
    await session.add_items(items[:2])
    await session.add_items(items[2:])
    assert await session.get_items() == items
    assert await session.get_items(limit=None) == items
    for limit in (1, 3, 6, 10):
        assert await session.get_items(limit=limit) == items[-limit:]
    for limit in (0, -1):
        assert await session.get_items(limit=limit) == []
    limited = CodaSession("limits", amanager, session_settings=SessionSettings(limit=2))
    assert await limited.get_items() == items[-2:]
    assert await limited.get_items(limit=4) == items[-4:]  # an explicit limit wins
    assert await limited.get_items(limit=0) == []


@pytest.mark.asyncio
async def test_a_session_never_written_reads_empty_and_is_not_created(
    amanager: AsyncSessionManager,
) -> None:
    session = CodaSession("never", amanager)
    assert await session.get_items() == []
    assert await session.get_items(limit=3) == []
    assert await session.pop_item() is None
    await session.clear_session()
    await session.add_items([])
    assert await session.info() is None
    assert await amanager.list_sessions() == []


@pytest.mark.asyncio
async def test_add_items_is_all_or_nothing(store: Store) -> None:
    async with store.async_manager() as manager:
        session = CodaSession("batch", manager)
        await session.add_items([cast(TResponseInputItem, {"role": "user", "content": "kept"})])
        bad = [
            cast(TResponseInputItem, {"role": "user", "content": "not kept"}),
            cast(TResponseInputItem, {"content": "neither role nor type"}),
        ]
        with pytest.raises(InvalidMessageError):
            await session.add_items(bad)
        assert await session.get_items() == [{"role": "user", "content": "kept"}]
    # the refused batch was not left with the manager to be written when it closed
    async with store.async_manager() as manager:
        assert await CodaSession("batch", manager).get_items() == [
            {"role": "user", "content": "kept"}
        ]


@pytest.mark.asyncio
async def test_clear_keeps_the_session_and_its_metadata(amanager: AsyncSessionManager) -> None:
    session = CodaSession("clear", amanager)
    await session.add_items(ALL_ITEMS[:3])
    stored = await amanager.load_session("clear")
    stored.update_metadata({"user": "ada"})
    await amanager.save_session(stored)
    await session.clear_session()
    assert await session.get_items() == []
    assert await session.pop_item() is None
    info = await session.info()
    assert info is not None and info.message_count == 0 and info.metadata == {"user": "ada"}
    await session.add_items(ALL_ITEMS[3:5])
    assert await session.get_items() == ALL_ITEMS[3:5]


@pytest.mark.asyncio
async def test_pops_racing_in_tasks_never_get_the_same_item(store: Store) -> None:
    items = [cast(TResponseInputItem, {"role": "user", "content": f"m{i}"}) for i in range(12)]
    async with store.async_manager() as manager:
        await CodaSession("pops", manager).add_items(items)
        # each caller its own session object, as separate requests of a server would be
        popped = await asyncio.gather(*(CodaSession("pops", manager).pop_item() for _ in range(16)))
    got = [p for p in popped if p is not None]
    assert popped.count(None) == 4
    assert sorted(exact([p]) for p in got) == sorted(exact([i]) for i in items)


@pytest.mark.asyncio
async def test_pops_racing_in_threads_never_get_the_same_item(store: Store) -> None:
    items = [cast(TResponseInputItem, {"role": "user", "content": f"m{i}"}) for i in range(12)]
    async with store.async_manager() as manager:
        await CodaSession("pops", manager).add_items(items)
        results: list[TResponseInputItem | None] = []
        lock = threading.Lock()
        start = threading.Barrier(4)

        def popper() -> None:
            async def pops() -> list[TResponseInputItem | None]:
                session = CodaSession("pops", manager)
                return [await session.pop_item() for _ in range(4)]

            start.wait()
            # each thread its own event loop, over the one manager
            mine = asyncio.run(pops())
            with lock:
                results.extend(mine)

        threads = [threading.Thread(target=popper) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            await asyncio.to_thread(thread.join)
        got = [p for p in results if p is not None]
        assert results.count(None) == 4
        assert sorted(exact([p]) for p in got) == sorted(exact([i]) for i in items)
        assert await CodaSession("pops", manager).get_items() == []


POP_IN_A_PROCESS = """
import asyncio, json, sys
from coda_session.adapters.openai_agents import CodaSession

async def main():
    async with CodaSession.from_url("pops", sys.argv[1]) as session:
        await session.get_items(limit=1)  # storage open before the start
        print("ready", flush=True)
        sys.stdin.readline()
        print(json.dumps([await session.pop_item() for _ in range(int(sys.argv[2]))]))

asyncio.run(main())
"""


def test_pops_racing_in_processes_never_get_the_same_item(tmp_path: Path) -> None:
    """This process and another pop from one SQLite file at the same time (one child
    process: importing the SDK takes seconds of CPU)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'pops.db'}"
    items = [cast(TResponseInputItem, {"role": "user", "content": f"m{i}"}) for i in range(12)]

    async def pops(session: CodaSession, n: int) -> list[Any]:
        return [await session.pop_item() for _ in range(n)]

    async def race() -> list[Any]:
        async with CodaSession.from_url("pops", url) as session:
            await session.add_items(items)
            child = subprocess.Popen(
                [sys.executable, "-c", POP_IN_A_PROCESS, url, "8"],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert child.stdin is not None and child.stdout is not None
            assert child.stdout.readline() == "ready\n"
            child.stdin.write("go\n")
            child.stdin.flush()
            mine = await pops(session, 8)
            out, _ = child.communicate(timeout=120)
            assert child.returncode == 0
            return [*mine, *json.loads(out)]

    results = asyncio.run(race())
    got = [p for p in results if p is not None]
    assert results.count(None) == 4
    assert sorted(exact([p]) for p in got) == sorted(exact([i]) for i in items)


@pytest.mark.asyncio
async def test_several_sessions_at_once_stay_apart(amanager: AsyncSessionManager) -> None:
    sessions = [CodaSession(f"s{i}", amanager) for i in range(5)]

    async def converse(session: CodaSession, n: int) -> None:
        for k in range(3):
            await session.add_items(
                [cast(TResponseInputItem, {"role": "user", "content": f"{n}-{k}"})]
            )

    await asyncio.gather(*(converse(s, n) for n, s in enumerate(sessions)))
    for n, session in enumerate(sessions):
        assert await session.get_items() == [
            {"role": "user", "content": f"{n}-{k}"} for k in range(3)
        ]


@pytest.mark.asyncio
async def test_fork_search_and_listing(amanager: AsyncSessionManager) -> None:
    session = CodaSession("trip", amanager)
    await session.add_items(ALL_ITEMS[:4])
    branch = await session.fork(-1, name="trip-retry")
    assert branch.session_id == "trip-retry" and branch.manager is amanager
    assert await branch.get_items() == ALL_ITEMS[:3]
    await branch.add_items([cast(TResponseInputItem, {"role": "user", "content": "Lyon?"})])
    assert await session.get_items() == ALL_ITEMS[:4]  # the source is untouched
    hits = await branch.search("Lyon")
    assert [h.message for h in hits] == [{"role": "user", "content": "Lyon?"}]
    assert [h.session for h in await session.search("look")] == ["trip"]
    assert [i.name for i in await amanager.list_branches("trip")] == ["trip-retry"]
    assert sorted(i.name for i in await session.manager.list_sessions()) == ["trip", "trip-retry"]


@pytest.mark.asyncio
async def test_ownership_of_the_manager(tmp_path: Path) -> None:
    owned = CodaSession.from_config("x", {"session": {"storage_path": str(tmp_path)}})
    async with owned:
        await owned.add_items(ALL_ITEMS[:1])
    assert owned.manager.closed
    given = AsyncSessionManager({"session": {"storage_path": str(tmp_path)}})
    async with CodaSession("x", given) as session:
        assert await session.get_items() == ALL_ITEMS[:1]
    assert not given.closed
    await given.close()
    assert isinstance(session, Session)  # the SDK's runtime-checkable protocol


def test_importing_coda_session_does_not_import_the_sdk() -> None:
    code = "import sys, coda_session; assert 'agents' not in sys.modules, 'agents imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# -- full Runner runs with a scripted model ---------------------------------------------------


class ScriptedModel(Model):
    """Answers each call with the next canned output and records the input it was given."""

    def __init__(self, turns: list[list[TResponseOutputItem]]) -> None:
        self.turns = list(turns)
        self.inputs: list[list[TResponseInputItem]] = []

    def _next(self, given: str | list[TResponseInputItem]) -> list[TResponseOutputItem]:
        self.inputs.append(copy.deepcopy(given) if isinstance(given, list) else [])
        return self.turns.pop(0)

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> ModelResponse:
        return ModelResponse(output=self._next(input), usage=Usage(), response_id=None)

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        response = Response(
            id="resp",
            created_at=0,
            model="scripted",
            object="response",
            output=self._next(input),
            tool_choice="none",
            tools=[],
            top_p=None,
            parallel_tool_calls=False,
            status="completed",
        )
        yield ResponseCompletedEvent(
            type="response.completed", sequence_number=0, response=response
        )


def tool_call(city: str, n: int) -> list[TResponseOutputItem]:
    return [
        ResponseFunctionToolCall(
            type="function_call",
            id=f"fc_{n}",
            call_id=f"call_{n}",
            name="weather",
            arguments=json.dumps({"city": city}),
        )
    ]


def answer(text: str, n: int) -> list[TResponseOutputItem]:
    return [
        ResponseOutputMessage(
            id=f"msg_{n}",
            type="message",
            role="assistant",
            status="completed",
            content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
        )
    ]


@function_tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def turn(question: str, city: str, n: int) -> list[dict[str, Any]]:
    """The items one run stores: the question, the tool call, its output, the answer."""
    return [
        {"content": question, "role": "user"},
        {
            "arguments": json.dumps({"city": city}),
            "call_id": f"call_{n}",
            "name": "weather",
            "type": "function_call",
            "id": f"fc_{n}",
        },
        {"call_id": f"call_{n}", "output": f"sunny in {city}", "type": "function_call_output"},
        {
            "id": f"msg_{n}",
            "content": [{"annotations": [], "text": f"Sunny in {city}.", "type": "output_text"}],
            "role": "assistant",
            "status": "completed",
            "type": "message",
        },
    ]


def script() -> ScriptedModel:
    return ScriptedModel(
        [
            tool_call("Paris", 1),
            answer("Sunny in Paris.", 1),
            tool_call("Lyon", 2),
            answer("Sunny in Lyon.", 2),
            tool_call("Nice", 3),
            answer("Sunny in Nice.", 3),
        ]
    )


def check_history(model: ScriptedModel, stored: list[Any]) -> None:
    first, second, third = (
        turn("Paris?", "Paris", 1),
        turn("Lyon?", "Lyon", 2),
        turn("Nice?", "Nice", 3),
    )
    assert exact(stored) == exact(first + second + third)
    # what the model was given: each run starts from the whole history stored before it
    assert exact(model.inputs[2]) == exact([*first, second[0]])
    assert exact(model.inputs[4]) == exact([*first, *second, third[0]])
    assert exact(model.inputs[5]) == exact([*first, *second, *third[:3]])


@pytest.mark.asyncio
async def test_runner_run_and_run_streamed_keep_the_history(store: Store) -> None:
    model = script()
    agent = Agent(name="forecaster", model=model, tools=[weather])
    async with store.async_manager() as manager:
        session = CodaSession("runs", manager)
        result = await Runner.run(agent, "Paris?", session=session)
        assert result.final_output == "Sunny in Paris."
        streamed = Runner.run_streamed(agent, "Lyon?", session=session)
        async for _ in streamed.stream_events():
            pass
        assert streamed.final_output == "Sunny in Lyon."
        # another session object over the same session carries on from what is stored
        result = await Runner.run(agent, "Nice?", session=CodaSession("runs", manager))
        assert result.final_output == "Sunny in Nice."
        check_history(model, await session.get_items())


def test_runner_run_sync_across_event_loops(store: Store) -> None:
    model = script()
    agent = Agent(name="forecaster", model=model, tools=[weather])
    manager = store.async_manager()
    session = CodaSession("sync-runs", manager)
    # run_sync runs on the thread's default event loop and leaves it open on purpose (the
    # SDK's choice): the test gives it one, and closes it at the end
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        assert Runner.run_sync(agent, "Paris?", session=session).final_output == "Sunny in Paris."
        # a run on another event loop, in another thread, with the same objects
        results: list[Any] = []
        thread = threading.Thread(
            target=lambda: results.append(asyncio.run(Runner.run(agent, "Lyon?", session=session)))
        )
        thread.start()
        thread.join()
        assert results[0].final_output == "Sunny in Lyon."
        assert Runner.run_sync(agent, "Nice?", session=session).final_output == "Sunny in Nice."
        check_history(model, loop.run_until_complete(session.get_items()))
    finally:
        loop.run_until_complete(manager.close())
        asyncio.set_event_loop(None)
        loop.close()


# -- interrupted runs, the SDK's pending-write recovery, handoffs -----------------------------


@function_tool(needs_approval=True)
def booking(city: str) -> str:
    """Book a trip (needs the user's approval)."""
    BOOKED.append(city)
    return f"booked {city}"


#: The trips ``booking`` made: a resumed run must not run the tool twice.
BOOKED: list[str] = []


def approval_turn() -> list[dict[str, Any]]:
    return [
        {"content": "Book Paris", "role": "user"},
        {
            "arguments": json.dumps({"city": "Paris"}),
            "call_id": "call_1",
            "name": "booking",
            "type": "function_call",
            "id": "fc_1",
        },
        {"call_id": "call_1", "output": "booked Paris", "type": "function_call_output"},
        {
            "id": "msg_1",
            "content": [{"annotations": [], "text": "Booked.", "type": "output_text"}],
            "role": "assistant",
            "status": "completed",
            "type": "message",
        },
    ]


def booking_call() -> list[TResponseOutputItem]:
    return [
        ResponseFunctionToolCall(
            type="function_call",
            id="fc_1",
            call_id="call_1",
            name="booking",
            arguments=json.dumps({"city": "Paris"}),
        )
    ]


@pytest.mark.asyncio
async def test_an_interrupted_run_resumes_after_a_failed_write(tmp_path: Path) -> None:
    """A run stopped for an approval resumes with another manager; the resumed write is
    refused once (the session is over its size limit), and the Runner's recovery, which
    compares its digests of the stored tail with ``get_items(limit=...)``, then writes it
    exactly once."""
    BOOKED.clear()
    config: dict[str, Any] = {"session": {"storage_path": str(tmp_path)}}
    agent = Agent(
        name="agent", model=ScriptedModel([booking_call(), answer("Booked.", 1)]), tools=[booking]
    )
    async with CodaSession.from_config("trip", config) as session:
        first = await Runner.run(agent, "Book Paris", session=session)
        assert first.interruptions and BOOKED == []
        assert exact(await session.get_items()) == exact(approval_turn()[:2])
        info = await session.info()
    assert info is not None
    state = first.to_state()
    state.approve(first.interruptions[0])
    tight = {"session": {**config["session"], "max_session_size": (info.size_bytes + 10) / 1e6}}
    async with CodaSession.from_config("trip", tight) as session:
        with pytest.raises(SessionTooLargeError):
            await Runner.run(agent, state, session=session)
        assert exact(await session.get_items()) == exact(approval_turn()[:2])
    async with CodaSession.from_config("trip", config) as session:
        result = await Runner.run(agent, state, session=session)
        assert result.final_output == "Booked."
        assert exact(await session.get_items()) == exact(approval_turn())
    assert BOOKED == ["Paris"]


class PausedAfterWrite(CodaSession):
    """Stops after its writes commit, until released: a caller cancelled there has its
    write stored without having seen it succeed."""

    def __init__(self, session_id: str, manager: AsyncSessionManager) -> None:
        super().__init__(session_id, manager)
        self.committed = asyncio.Event()
        self.release = asyncio.Event()

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        await super().add_items(items)
        self.committed.set()
        await self.release.wait()


@pytest.mark.asyncio
async def test_a_write_cancelled_after_it_committed_is_not_written_again(
    store: Store,
) -> None:
    """The Runner finds the write in ``get_items(limit=len(expected))`` by the digests of
    the items it wrote: only items stored exactly match, so it neither writes them again
    nor refuses to go on."""
    BOOKED.clear()
    agent = Agent(
        name="agent", model=ScriptedModel([booking_call(), answer("Booked.", 1)]), tools=[booking]
    )
    async with store.async_manager() as manager:
        session = CodaSession("trip", manager)
        first = await Runner.run(agent, "Book Paris", session=session)
        state = first.to_state()
        state.approve(first.interruptions[0])
        paused = PausedAfterWrite("trip", manager)
        run = asyncio.ensure_future(Runner.run(agent, state, session=paused))
        await paused.committed.wait()
        run.cancel()
        paused.release.set()
        with pytest.raises(asyncio.CancelledError):
            await run
        assert exact(await session.get_items()) == exact(approval_turn()[:3])
        result = await Runner.run(agent, state, session=session)
        assert result.final_output == "Booked."
        assert exact(await session.get_items()) == exact(approval_turn())
    assert BOOKED == ["Paris"]


@pytest.mark.asyncio
async def test_a_handoff_is_stored_and_the_next_agent_sees_the_history(
    amanager: AsyncSessionManager,
) -> None:
    french = ScriptedModel([answer("Bonjour.", 9)])
    triage = ScriptedModel(
        [
            [
                ResponseFunctionToolCall(
                    type="function_call",
                    id="h_1",
                    call_id="hc_1",
                    name="transfer_to_french",
                    arguments="{}",
                )
            ]
        ]
    )
    agent = Agent(name="triage", model=triage, handoffs=[Agent(name="french", model=french)])
    session = CodaSession("hand", amanager)
    result = await Runner.run(agent, "Salut", session=session)
    assert result.final_output == "Bonjour." and result.last_agent.name == "french"
    stored = await session.get_items()
    assert [i.get("type", "message") for i in stored] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]
    assert exact(french.inputs[0]) == exact(stored[:3])


@pytest.mark.asyncio
async def test_the_runner_reads_only_the_limit_it_is_given(amanager: AsyncSessionManager) -> None:
    """``session_settings.limit`` (the session's, or the run's ``RunConfig``) bounds the
    history the model is given; everything stays stored."""
    model = ScriptedModel([answer("One.", 1), answer("Two.", 2), answer("Three.", 3)])
    agent = Agent(name="agent", model=model)
    session = CodaSession("bounded", amanager, session_settings=SessionSettings(limit=2))
    await Runner.run(agent, "first", session=session)
    await Runner.run(agent, "second", session=session)
    stored = await CodaSession("bounded", amanager).get_items()
    assert len(stored) == 4
    assert exact(model.inputs[1]) == exact([*stored[:2], {"content": "second", "role": "user"}])
    await Runner.run(
        agent,
        "third",
        session=session,
        run_config=RunConfig(session_settings=SessionSettings(limit=1)),
    )
    # the newest stored item and the question (the SDK itself drops the id of an assistant
    # message that starts the history it sends)
    given = cast(list[dict[str, Any]], model.inputs[2])
    assert [i.get("role") for i in given] == ["assistant", "user"]
    assert exact([given[0]["content"]]) == exact([cast(dict[str, Any], stored[3])["content"]])
    assert len(await CodaSession("bounded", amanager).get_items()) == 6
