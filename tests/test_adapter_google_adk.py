"""The Google ADK session service (coda_session.adapters.google_adk) against the real
``google-adk`` package, installed by the ``test`` extra: this file fails, never skips,
without it. No network: the Runner runs with a scripted model written here."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from google.adk.agents import LlmAgent
from google.adk.errors import StaleSessionError
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.models import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import Runner
from google.adk.sessions import BaseSessionService, Session
from google.adk.sessions.base_session_service import GetSessionConfig
from google.genai import types
from pydantic import Field

from coda_session import AsyncSessionManager
from coda_session.adapters.google_adk import (
    EVENT_TYPE,
    CodaSessionService,
    app_state_name,
    session_name,
    user_state_name,
)
from tests.support import ROOT, Store

APP = "weather_app"


def _text(role: str, text: str) -> types.Content:
    return types.Content(role=role, parts=[types.Part.from_text(text=text)])


def _events(base: float) -> list[Event]:
    """Events of the kinds a run produces, one second apart from ``base``."""
    return [
        Event(
            invocation_id="inv-1",
            author="user",
            content=_text("user", "Weather in Paris?"),
            timestamp=base + 1,
        ),
        Event(
            invocation_id="inv-1",
            author="forecaster",
            content=types.Content(
                role="model",
                parts=[
                    types.Part.from_function_call(name="weather", args={"city": "Paris", "n": 1})
                ],
            ),
            timestamp=base + 2,
            usage_metadata=types.GenerateContentResponseUsageMetadata(
                prompt_token_count=12, candidates_token_count=3
            ),
        ),
        Event(
            invocation_id="inv-1",
            author="forecaster",
            content=types.Content(
                role="user",
                parts=[
                    types.Part.from_function_response(
                        name="weather", response={"result": "sunny", "deg": 21.5}
                    )
                ],
            ),
            actions=EventActions(state_delta={"last_city": "Paris"}),
            timestamp=base + 3,
        ),
        Event(
            invocation_id="inv-1",
            author="forecaster",
            content=_text("model", "Sunny in Paris, 21.5°C."),
            custom_metadata={"z": 1, "a": [1, {"b": None}]},
            turn_complete=True,
            timestamp=base + 4,
        ),
        Event(  # bytes, a set, actions and metadata of every kind
            invocation_id="inv-2",
            author="painter",
            branch="root.painter",
            content=types.Content(
                role="model",
                parts=[
                    types.Part(inline_data=types.Blob(mime_type="image/png", data=b"\x89PNG\xff")),
                    types.Part(text="thinking", thought=True, thought_signature=b"\x01\x02"),
                ],
            ),
            long_running_tool_ids={"t1", "t2"},
            actions=EventActions(
                artifact_delta={"sky.png": 2},
                transfer_to_agent="forecaster",
                escalate=True,
                skip_summarization=True,
            ),
            grounding_metadata=types.GroundingMetadata(web_search_queries=["paris weather"]),
            error_code="SAFETY",
            error_message="blocked",
            interrupted=False,
            timestamp=base + 5,
        ),
    ]


async def _new(
    service: CodaSessionService, user: str = "u1", sid: str = "s1", **kw: Any
) -> Session:
    return await service.create_session(app_name=APP, user_id=user, session_id=sid, **kw)


async def _get(
    service: CodaSessionService, user: str = "u1", sid: str = "s1", **config: Any
) -> Session:
    got = await service.get_session(
        app_name=APP,
        user_id=user,
        session_id=sid,
        config=GetSessionConfig(**config) if config else None,
    )
    assert got is not None
    return got


def test_it_is_an_adk_session_service(amanager: AsyncSessionManager) -> None:
    assert isinstance(CodaSessionService(amanager), BaseSessionService)


async def test_create_get_list_delete(amanager: AsyncSessionManager) -> None:
    service = CodaSessionService(amanager)
    made = await _new(service, state={"topic": "weather"})
    assert (made.app_name, made.user_id, made.id, made.state) == (
        APP,
        "u1",
        "s1",
        {"topic": "weather"},
    )
    assert made.events == [] and made.last_update_time > 0
    with pytest.raises(AlreadyExistsError):
        await _new(service)
    generated = await service.create_session(app_name=APP, user_id="u1")
    assert generated.id and generated.id != "s1"
    await _new(service, user="u2", sid="s9")
    await service.create_session(app_name="other_app", user_id="u1", session_id="s1")

    got = await _get(service)
    assert got == made  # the same fields, no events yet
    assert await service.get_session(app_name=APP, user_id="u2", session_id="s1") is None

    mine = (await service.list_sessions(app_name=APP, user_id="u1")).sessions
    assert sorted(s.id for s in mine) == sorted(["s1", generated.id])
    assert all(s.events == [] for s in mine)
    everyone = (await service.list_sessions(app_name=APP)).sessions
    assert sorted((s.user_id, s.id) for s in everyone) == sorted(
        [("u1", "s1"), ("u1", generated.id), ("u2", "s9")]
    )
    # ordered by last update, oldest first, as ADK orders them
    times = [s.last_update_time for s in everyone]
    assert times == sorted(times)

    await service.delete_session(app_name=APP, user_id="u1", session_id="s1")
    assert await service.get_session(app_name=APP, user_id="u1", session_id="s1") is None
    await service.delete_session(app_name=APP, user_id="u1", session_id="s1")  # no error
    assert [s.id for s in (await service.list_sessions(app_name=APP, user_id="u1")).sessions] == [
        generated.id
    ]
    # the other app's session of the same ids is untouched
    assert await service.get_session(app_name="other_app", user_id="u1", session_id="s1")


async def test_ids_with_separators_stay_apart(amanager: AsyncSessionManager) -> None:
    service = CodaSessionService(amanager)
    await service.create_session(app_name="a/b", user_id="c", session_id="d")
    await service.create_session(app_name="a", user_id="b/c", session_id="d")
    await service.create_session(app_name="a%2Fb", user_id="c", session_id="d")
    names = {info.name for info in await amanager.list_sessions()}
    assert names == {"adk/a%2Fb/c/d", "adk/a/b%2Fc/d", "adk/a%252Fb/c/d"}
    assert session_name("a/b", "c", "d") == "adk/a%2Fb/c/d"
    assert [s.user_id for s in (await service.list_sessions(app_name="a")).sessions] == ["b/c"]
    assert [s.app_name for s in (await service.list_sessions(app_name="a/b")).sessions] == ["a/b"]


async def test_events_round_trip_equal_and_are_stored_as_adk_dumps_them(
    store: Store,
) -> None:
    manager = store.async_manager()
    service = CodaSessionService(manager)
    session = await _new(service)
    events = _events(session.last_update_time)
    for event in events:
        returned = await service.append_event(session, event)
        assert returned is event
    assert session.events == events

    stored = await manager.load_session(session_name(APP, "u1", "s1"))
    messages = await stored.get_messages()
    dumps = [e.model_dump(mode="json", exclude_none=True) for e in events]
    assert messages == [{"type": EVENT_TYPE, "event": d} for d in dumps]
    assert [list(m["event"]) for m in messages] == [list(d) for d in dumps]  # key order too
    await manager.close()

    # another manager on the same storage reads them back equal
    again = store.async_manager()
    try:
        got = await _get(CodaSessionService(again))
        assert got.events == events
        assert got.state == {"last_city": "Paris"}
        assert got.last_update_time == events[-1].timestamp
    finally:
        await again.close()


async def test_num_recent_events_and_after_timestamp(amanager: AsyncSessionManager) -> None:
    service = CodaSessionService(amanager)
    session = await _new(service)
    base = session.last_update_time
    events = _events(base)
    for event in events:
        await service.append_event(session, event)
    assert (await _get(service, num_recent_events=2)).events == events[-2:]
    assert (await _get(service, num_recent_events=10)).events == events
    assert (await _get(service, num_recent_events=0)).events == []
    assert (await _get(service, after_timestamp=base + 3)).events == events[2:]
    assert (await _get(service, after_timestamp=base + 2.5, num_recent_events=1)).events == [
        events[-1]
    ]
    assert (await _get(service, after_timestamp=base + 99)).events == []
    with pytest.raises(ValueError, match="num_recent_events"):
        GetSessionConfig(num_recent_events=-1)


async def test_state_scopes_across_sessions_users_and_apps(amanager: AsyncSessionManager) -> None:
    service = CodaSessionService(amanager)
    s1 = await _new(service, state={"app:greeting": "hi", "user:units": "C", "k": 1, "temp:t": 0})
    assert s1.state == {"k": 1, "app:greeting": "hi", "user:units": "C"}
    s2 = await _new(service, sid="s2")
    assert s2.state == {"app:greeting": "hi", "user:units": "C"}
    other_user = await _new(service, user="u2", sid="s3")
    assert other_user.state == {"app:greeting": "hi"}
    other_app = await service.create_session(app_name="other", user_id="u1", session_id="s1")
    assert other_app.state == {}

    delta = {"app:greeting": "hello", "user:units": "F", "user:name": "Ann", "k": 2}
    await service.append_event(
        s2,
        Event(
            author="agent",
            actions=EventActions(state_delta=delta),
            timestamp=s2.last_update_time + 1,
        ),
    )
    assert s2.state == {"app:greeting": "hello", "user:units": "F", "user:name": "Ann", "k": 2}
    assert (await _get(service)).state == {
        "k": 1,
        "app:greeting": "hello",
        "user:units": "F",
        "user:name": "Ann",
    }
    assert (await _get(service, sid="s2")).state["k"] == 2
    assert (await _get(service, user="u2", sid="s3")).state == {"app:greeting": "hello"}
    assert await service.get_user_state(app_name=APP, user_id="u1") == {
        "units": "F",
        "name": "Ann",
    }
    assert await service.get_user_state(app_name=APP, user_id="nobody") == {}
    assert await service.get_app_state(app_name=APP) == {"greeting": "hello"}
    listed = {s.id: s.state for s in (await service.list_sessions(app_name=APP)).sessions}
    assert listed["s3"] == {"app:greeting": "hello"}
    assert listed["s1"]["user:name"] == "Ann"

    # deleting a session keeps the app's and the user's state, as in ADK
    await service.delete_session(app_name=APP, user_id="u1", session_id="s1")
    await service.delete_session(app_name=APP, user_id="u1", session_id="s2")
    assert (await _new(service, sid="s4")).state == {
        "app:greeting": "hello",
        "user:units": "F",
        "user:name": "Ann",
    }
    # the state holders are not ADK sessions of the app
    assert {s.id for s in (await service.list_sessions(app_name=APP)).sessions} == {"s3", "s4"}
    assert await amanager.get_session_info(app_state_name(APP)) is not None
    assert await amanager.get_session_info(user_state_name(APP, "u1")) is not None


async def test_temp_state_reaches_the_session_object_only(amanager: AsyncSessionManager) -> None:
    service = CodaSessionService(amanager)
    session = await _new(service)
    event = Event(
        author="agent",
        actions=EventActions(state_delta={"temp:scratch": [1, 2], "kept": True}),
        timestamp=session.last_update_time + 1,
    )
    await service.append_event(session, event)
    assert session.state == {"temp:scratch": [1, 2], "kept": True}
    assert event.actions.state_delta == {"kept": True}  # trimmed before storing, as ADK does
    got = await _get(service)
    assert got.state == {"kept": True}
    assert got.events[0].actions.state_delta == {"kept": True}


async def test_a_partial_event_is_neither_stored_nor_applied(
    amanager: AsyncSessionManager,
) -> None:
    service = CodaSessionService(amanager)
    session = await _new(service)
    event = Event(author="agent", partial=True, content=_text("model", "Sun"))
    assert await service.append_event(session, event) is event
    assert session.events == [] and (await _get(service)).events == []


async def test_a_stale_session_object_is_refused(store: Store) -> None:
    service = CodaSessionService(store.async_manager())
    elsewhere = CodaSessionService(store.async_manager())  # another process, in effect
    try:
        await _new(service)
        mine = await _get(service)
        theirs = await _get(elsewhere)
        base = mine.last_update_time
        await service.append_event(mine, Event(author="user", timestamp=base + 1))
        with pytest.raises(StaleSessionError):
            await elsewhere.append_event(theirs, Event(author="user", timestamp=base + 2))
        assert len((await _get(service)).events) == 1  # the refused event was not stored
        # reloaded, it appends; the first object is now the stale one
        theirs = await _get(elsewhere)
        await elsewhere.append_event(theirs, Event(author="user", timestamp=base + 3))
        with pytest.raises(StaleSessionError):
            await service.append_event(mine, Event(author="user", timestamp=base + 4))
        # an object that shows storage's last event is not stale, whatever its time says
        current = await _get(service)
        current.last_update_time = 0.0
        await service.append_event(current, Event(author="user", timestamp=base + 5))
        assert len((await _get(service)).events) == 3

        # a write whose event carries an earlier timestamp still makes older objects stale
        mine, theirs = await _get(service), await _get(elsewhere)
        await service.append_event(mine, Event(author="user", timestamp=base - 100))
        assert mine.last_update_time > base + 5
        assert mine.last_update_time == (await _get(elsewhere)).last_update_time
        with pytest.raises(StaleSessionError):
            await elsewhere.append_event(theirs, Event(author="user", timestamp=base + 6))
        await service.append_event(mine, Event(author="user", timestamp=base + 7))
        current = await _get(service)
        assert len(current.events) == 5

        await service.delete_session(app_name=APP, user_id="u1", session_id="s1")
        with pytest.raises(SessionNotFoundError):
            await service.append_event(current, Event(author="user", timestamp=base + 8))
    finally:
        await service.manager.close()
        await elsewhere.manager.close()


async def test_fork(amanager: AsyncSessionManager) -> None:
    service = CodaSessionService(amanager)
    session = await _new(service, state={"k": 1, "user:u": 2})
    events = _events(session.last_update_time)
    for event in events:
        await service.append_event(session, event)

    branch = await service.fork_session(
        app_name=APP, user_id="u1", session_id="s1", num_events=2, new_session_id="retry"
    )
    assert (branch.id, branch.events) == ("retry", events[:2])
    assert branch.state == {"k": 1, "last_city": "Paris", "user:u": 2}
    whole = await service.fork_session(app_name=APP, user_id="u1", session_id="s1")
    assert whole.events == events and whole.id not in ("s1", "retry")
    cut = await service.fork_session(app_name=APP, user_id="u1", session_id="s1", num_events=-1)
    assert cut.events == events[:-1]

    # the branch is a session of its own: appends go there only
    extra = Event(author="user", content=_text("user", "And Rome?"), timestamp=time.time() + 10)
    await service.append_event(branch, extra)
    assert (await _get(service, sid="retry")).events == [*events[:2], extra]
    assert (await _get(service)).events == events
    assert {s.id for s in (await service.list_sessions(app_name=APP, user_id="u1")).sessions} == {
        "s1",
        "retry",
        whole.id,
        cut.id,
    }
    with pytest.raises(AlreadyExistsError):
        await service.fork_session(
            app_name=APP, user_id="u1", session_id="s1", new_session_id="retry"
        )
    with pytest.raises(SessionNotFoundError):
        await service.fork_session(app_name=APP, user_id="u1", session_id="missing")


async def test_paged_listing(amanager: AsyncSessionManager) -> None:
    service = CodaSessionService(amanager)
    for i in range(5):
        await _new(service, sid=f"s{i}")
    await _new(service, user="u2", sid="x")
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page, cursor = await service.list_sessions_page(
            app_name=APP, user_id="u1", limit=2, cursor=cursor
        )
        assert len(page) <= 2
        seen += [s.id for s in page]
        if cursor is None:
            break
    assert seen == [f"s{i}" for i in range(5)]
    everyone, cursor = await service.list_sessions_page(app_name=APP, limit=10)
    assert cursor is None and len(everyone) == 6


async def test_ownership_of_the_manager(tmp_path: Any) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'adk.db'}"
    async with CodaSessionService.from_url(url) as service:
        await _new(service)
    assert service.manager.closed
    given = AsyncSessionManager({"session": {"database_url": url}})
    async with CodaSessionService(given) as service:
        assert (await _get(service)).id == "s1"
    assert not given.closed
    await given.close()


def test_importing_coda_session_does_not_import_adk() -> None:
    code = "import sys, coda_session; assert 'google.adk' not in sys.modules, 'adk imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# -- a Runner run with a scripted model ---------------------------------------------------------


class ScriptedLlm(BaseLlm):
    """Answers each call with the next canned part and records the contents it was given."""

    replies: list[types.Part]
    seen: list[list[types.Content]] = Field(default_factory=list)

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        self.seen.append(list(llm_request.contents))
        yield LlmResponse(content=types.Content(role="model", parts=[self.replies.pop(0)]))


def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


async def test_a_runner_run_keeps_the_history(store: Store) -> None:
    manager = store.async_manager()
    service = CodaSessionService(manager)
    model = ScriptedLlm(
        model="scripted",
        replies=[
            types.Part.from_function_call(name="weather", args={"city": "Paris"}),
            types.Part.from_text(text="Sunny in Paris."),
            types.Part.from_text(text="You asked about Paris."),
        ],
    )
    agent = LlmAgent(name="forecaster", model=model, tools=[weather], output_key="last_answer")
    runner = Runner(agent=agent, app_name=APP, session_service=service)
    await _new(service, state={"user:units": "C"})

    async def run(text: str) -> list[Event]:
        return [
            e
            async for e in runner.run_async(
                user_id="u1", session_id="s1", new_message=_text("user", text)
            )
        ]

    yielded = await run("Weather in Paris?")
    assert yielded[-1].is_final_response()
    await manager.close()

    # read back through another manager: the whole turn, in order, exactly
    manager = store.async_manager()
    service = CodaSessionService(manager)
    try:
        session = await _get(service)
        parts = [
            (e.author, e.content.parts[0] if e.content and e.content.parts else None)
            for e in session.events
        ]
        assert [a for a, _ in parts] == ["user", "forecaster", "forecaster", "forecaster"]
        assert parts[0][1] is not None and parts[0][1].text == "Weather in Paris?"
        call = parts[1][1]
        assert call is not None and call.function_call is not None
        assert (call.function_call.name, call.function_call.args) == ("weather", {"city": "Paris"})
        answer = parts[2][1]
        assert answer is not None and answer.function_response is not None
        assert answer.function_response.response == {"result": "sunny in Paris"}
        assert parts[3][1] is not None and parts[3][1].text == "Sunny in Paris."
        assert session.events[1:] == yielded  # what the Runner yielded is what was stored
        assert session.state == {"user:units": "C", "last_answer": "Sunny in Paris."}

        # the next run (a new Runner on the reopened storage) starts from the stored history
        runner = Runner(agent=agent, app_name=APP, session_service=service)
        await run("What did I ask?")
        history = model.seen[-1]
        assert [c.parts[0].text for c in history if c.parts and c.parts[0].text] == [
            "Weather in Paris?",
            "Sunny in Paris.",
            "What did I ask?",
        ]
        assert len((await _get(service)).events) == 6
    finally:
        await manager.close()


async def test_the_manager_searches_the_events(amanager: AsyncSessionManager) -> None:
    service = CodaSessionService(amanager)
    session = await _new(service)
    events = _events(session.last_update_time)
    for event in events:
        await service.append_event(session, event)
    hits = await amanager.search("sunny", session=session_name(APP, "u1", "s1"))
    found = [Event.model_validate(hit.message["event"]) for hit in hits]
    assert found and all(e in events for e in found)
    assert events[3] in found  # the answer's text
