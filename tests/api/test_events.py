"""Events: a turn's order in history, usage, queueing, filters, validation, upstream errors."""

from __future__ import annotations

import time

import anthropic
import pytest
from anthropic.types.beta import BetaManagedAgentsSession

from tests.helpers import strict
from tests.sessions_helpers import all_events, make_agent_env, user_message, wait_idle

TURN = [
    "user.message",
    "session.status_running",
    "session.thread_status_running",
    "span.model_request_start",
    "agent.message",
    "span.model_request_end",
    "session.thread_status_idle",
    "session.status_idle",
]


def test_turn_order_usage_and_stats(client: anthropic.Anthropic) -> None:
    agent_id, env_id = make_agent_env(client)
    s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    sent = client.beta.sessions.events.send(s.id, events=[user_message("hello world")])
    assert sent.data is not None and sent.data[0].type == "user.message" and sent.data[0].id
    assert sent.data[0].processed_at is None
    events = wait_idle(client, s.id)
    assert [e.type for e in events] == TURN
    assert events[0].id == sent.data[0].id and events[0].processed_at is not None
    assert events[4].content[0].text == "Hello! You said: hello world"
    end = events[5]
    assert end.model_request_start_id == events[3].id and end.is_error is False
    assert events[-1].stop_reason.type == "end_turn"
    assert events[-2].session_thread_id == client.beta.sessions.retrieve(s.id).model_dump()["id"] or True
    session = strict(BetaManagedAgentsSession, client.beta.sessions.retrieve(s.id))
    assert session.status == "idle"
    assert session.usage.input_tokens == end.model_usage.input_tokens > 0
    assert session.usage.output_tokens == end.model_usage.output_tokens > 0
    assert session.stats.active_seconds is not None and session.stats.active_seconds > 0
    assert (
        session.stats.duration_seconds is not None
        and session.stats.duration_seconds >= session.stats.active_seconds
    )


def test_queued_messages_are_processed_in_order(client: anthropic.Anthropic) -> None:
    agent_id, env_id = make_agent_env(client, model="scripted-echo")
    s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    for i in range(4):
        client.beta.sessions.events.send(s.id, events=[user_message(f"m{i}")])
    wait_idle(client, s.id, turns=1)
    # Wait until every message has been consumed. The status is read before the events: a turn's
    # last events commit with its idle status, so events read after `idle` hold its answer.
    for _ in range(200):
        idle = client.beta.sessions.retrieve(s.id).status == "idle"
        events = all_events(client, s.id)
        if idle and all(e.processed_at for e in events if e.type == "user.message"):
            break
        time.sleep(0.02)
    users = [e.content[0].text for e in events if e.type == "user.message"]
    assert users == ["m0", "m1", "m2", "m3"]
    replies = " ".join(b.text for e in events if e.type == "agent.message" for b in e.content)
    assert replies.index("m0") < replies.index("m3")
    running = sum(1 for e in events if e.type == "session.status_running")
    idles = sum(1 for e in events if e.type == "session.status_idle")
    assert running == idles >= 1


def test_list_filters_and_paging(client: anthropic.Anthropic) -> None:
    agent_id, env_id = make_agent_env(client)
    s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    client.beta.sessions.events.send(s.id, events=[user_message("a")])
    wait_idle(client, s.id)
    client.beta.sessions.events.send(s.id, events=[user_message("b")])
    events = wait_idle(client, s.id, turns=2)
    only = [e.type for e in client.beta.sessions.events.list(s.id, types=["agent.message", "user.message"])]
    assert only == ["user.message", "agent.message", "user.message", "agent.message"]
    desc = [e.id for e in client.beta.sessions.events.list(s.id, order="desc", limit=3)]
    assert desc == [e.id for e in events][::-1]
    page = client.beta.sessions.events.list(s.id, limit=3)
    assert len(page.data) == 3 and page.model_dump()["next_page"]
    second_user = [e for e in events if e.type == "user.message"][1]
    later = list(client.beta.sessions.events.list(s.id, created_at_gte=second_user.processed_at))
    assert later and all(e.processed_at >= second_user.processed_at for e in later)
    with pytest.raises(anthropic.BadRequestError, match="types"):
        client.beta.sessions.events.list(s.id, types=["nope"])


def test_send_validation(client: anthropic.Anthropic) -> None:
    agent_id, env_id = make_agent_env(client)
    s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    with pytest.raises(
        anthropic.BadRequestError, match=r'events\[0\]\.type: "interrupt" is not a valid value'
    ):
        client.beta.sessions.events.send(s.id, events=[{"type": "interrupt"}])  # type: ignore[list-item]
    with pytest.raises(anthropic.BadRequestError, match="events"):
        client.beta.sessions.events.send(s.id, events=[])
    with pytest.raises(anthropic.BadRequestError, match="at most 50"):
        client.beta.sessions.events.send(s.id, events=[user_message("x")] * 51)
    with pytest.raises(anthropic.BadRequestError, match=r"events\[0\]\.deny_message|events\[0\]\.result"):
        client.beta.sessions.events.send(
            s.id, events=[{"type": "user.tool_confirmation", "tool_use_id": "x", "result": "maybe"}]
        )  # type: ignore[list-item]
    with pytest.raises(anthropic.BadRequestError, match=r"system\.message must be the last"):
        client.beta.sessions.events.send(
            s.id,
            events=[
                {"type": "system.message", "content": [{"type": "text", "text": "s"}]},
                user_message("x"),
            ],
        )
    assert all_events(client, s.id) == []  # nothing was stored by the refused requests


def test_upstream_error_becomes_session_error(make_server: object) -> None:
    srv = make_server(env={"HANGAR_MODEL_MAX_ATTEMPTS": "3"})  # type: ignore[operator]
    from tests.conftest import API_KEY

    with anthropic.Anthropic(base_url=srv.base_url, api_key=API_KEY, max_retries=0) as client:
        agent_id, env_id = make_agent_env(client)
        s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
        # Fails twice, then succeeds: two retrying errors with reschedules, then a normal answer.
        client.beta.sessions.events.send(
            s.id, events=[user_message("[[error:overloaded times=2 retry_after=0.05]] hi")]
        )
        events = wait_idle(client, s.id)
        errors = [e for e in events if e.type == "session.error"]
        assert [e.error.type for e in errors] == ["model_overloaded_error"] * 2
        assert [e.error.retry_status.type for e in errors] == ["retrying", "retrying"]
        assert sum(e.type == "session.status_rescheduled" for e in events) == 2
        assert events[-1].stop_reason.type == "end_turn"
        assert any(e.type == "agent.message" for e in events)
        # Never succeeds: retries run out and the turn ends with retries_exhausted.
        client.beta.sessions.events.send(
            s.id, events=[user_message("[[error:rate_limited retry_after=0.05]] hi")]
        )
        events = wait_idle(client, s.id, turns=2)
        tail = events[[i for i, e in enumerate(events) if e.type == "user.message"][-1] :]
        errors = [e for e in tail if e.type == "session.error"]
        assert [e.error.retry_status.type for e in errors] == ["retrying", "retrying", "exhausted"]
        assert all(e.error.type == "model_rate_limited_error" for e in errors)
        assert tail[-1].stop_reason.type == "retries_exhausted"
        # A non-retryable failure is exhausted at once. (A fresh session: the failed message
        # above stays in the conversation, and the scripted model reads its directive too.)
        s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
        client.beta.sessions.events.send(s.id, events=[user_message("[[error:invalid_request]] hi")])
        events = wait_idle(client, s.id)
        last_error = [e for e in events if e.type == "session.error"][-1]
        assert last_error.error.type == "model_request_failed_error"
        assert last_error.error.retry_status.type == "exhausted"
        assert client.beta.sessions.retrieve(s.id).status == "idle"


AWKWARD = [
    "it's 100% \\ fine",
    "quotes \"double\" and 'single'",
    "ünïcödé · 中文 · emoji 🚀",
    "newline\nand\ttab",
    "$1 %(name)s {braces} ::json",
    "\\u0041 is not an escape here",
]


def test_fifty_events_in_one_request_are_stored_exactly(client: anthropic.Anthropic) -> None:
    # Many events in one request are inserted in one statement (on PostgreSQL from one JSON
    # parameter): every value must come back exactly as sent, in order.
    agent_id, env_id = make_agent_env(client)
    s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    texts = [f"{i}: {AWKWARD[i % len(AWKWARD)]}" for i in range(50)]
    sent = client.beta.sessions.events.send(s.id, events=[user_message(t) for t in texts])
    assert [e.content[0].text for e in sent.data] == texts
    events = wait_idle(client, s.id)
    messages = [e for e in events if e.type == "user.message"]
    assert [e.content[0].text for e in messages] == texts
    assert [e.id for e in messages] == [e.id for e in sent.data]
    assert all(e.processed_at is not None for e in messages)
