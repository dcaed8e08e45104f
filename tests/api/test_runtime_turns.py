"""More of the loop: thinking previews, session.usage, system.message, a message steered into a
running turn, and the compaction limit."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import anthropic
import httpx
from anthropic.types.beta.sessions import BetaManagedAgentsStreamSessionEvents

from tests.api.test_stream import read_until
from tests.conftest import API_KEY
from tests.helpers import strict
from tests.sessions_helpers import all_events, make_agent_env, user_message, wait_idle


def test_thinking_preview_is_start_only(client: anthropic.Anthropic, server: Any) -> None:
    agent_id, env_id = make_agent_env(client)
    s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    url = f"{server.base_url}/v1/sessions/{s.id}/events/stream?event_deltas[]=agent.thinking"
    ready = threading.Event()
    got: list[dict[str, Any]] = []
    t = threading.Thread(
        target=read_until, args=(url, "session.status_idle"), kwargs={"ready": ready, "out": got}
    )
    t.start()
    assert ready.wait(10)
    time.sleep(0.2)
    client.beta.sessions.events.send(s.id, events=[user_message("hmm [[thinking]]")])
    t.join(20)
    kinds = [f["event"] for f in got]
    assert kinds.count("event_start") == 1 and "event_delta" not in kinds  # agent.message not asked for
    start = json.loads(got[kinds.index("event_start")]["data"])
    thinking = json.loads(got[kinds.index("agent.thinking")]["data"])
    assert start["event"] == {"type": "agent.thinking", "id": thinking["id"]}
    assert kinds.index("event_start") < kinds.index("agent.thinking") < kinds.index("agent.message")
    for f in got:
        strict(BetaManagedAgentsStreamSessionEvents, json.loads(f["data"]))


def test_session_usage_events(make_server: Any) -> None:
    srv = make_server(env={"HANGAR_USAGE_EVENT_INTERVAL_S": "0"})
    with anthropic.Anthropic(base_url=srv.base_url, api_key=API_KEY, max_retries=0) as client:
        agent_id, env_id = make_agent_env(client, tools=[{"type": "agent_toolset_20260401"}])
        s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
        client.beta.sessions.events.send(s.id, events=[user_message('[[tool:bash {"command": "true"}]]')])
        events = wait_idle(client, s.id)
        usage = [e for e in events if e.type == "session.usage"]
        ends = [e for e in events if e.type == "span.model_request_end"]
        assert len(usage) == len(ends) == 2
        assert usage[-1].usage.output_tokens == sum(e.model_usage.output_tokens for e in ends)
        assert usage[0].usage.output_tokens == ends[0].model_usage.output_tokens
        assert usage[-1].budget is None
        final = client.beta.sessions.retrieve(s.id).usage
        assert final.output_tokens == usage[-1].usage.output_tokens


def test_system_message_joins_the_conversation(client: anthropic.Anthropic) -> None:
    agent_id, env_id = make_agent_env(client, model="scripted-echo")
    s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    client.beta.sessions.events.send(
        s.id,
        events=[
            user_message("hello"),
            {"type": "system.message", "content": [{"type": "text", "text": "be brief"}]},
        ],
    )
    events = wait_idle(client, s.id)
    system = next(e for e in events if e.type == "system.message")
    assert system.processed_at is not None and system.content[0].text == "be brief"
    assert events[-1].stop_reason.type == "end_turn"


def test_message_sent_mid_turn_is_steered_into_it(client: anthropic.Anthropic) -> None:
    agent_id, env_id = make_agent_env(client, tools=[{"type": "agent_toolset_20260401"}])
    s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    client.beta.sessions.events.send(s.id, events=[user_message('[[tool:bash {"command": "sleep 0.8"}]]')])
    deadline = time.monotonic() + 10
    while not any(e.type == "agent.tool_use" for e in all_events(client, s.id)):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    steer = client.beta.sessions.events.send(s.id, events=[user_message("also: mind the gap")])
    assert steer.data is not None and steer.data[0].processed_at is None
    events = wait_idle(client, s.id)
    kinds = [e.type for e in events]
    # One turn: a single running/idle pair, the steered message processed after the tool result
    # and before the next model request.
    assert kinds.count("session.status_running") == 1 and kinds.count("session.status_idle") == 1
    steered = next(e for e in events if e.id == steer.data[0].id)
    result = next(e for e in events if e.type == "agent.tool_result")
    second_start = [e for e in events if e.type == "span.model_request_start"][1]
    assert result.processed_at <= steered.processed_at <= second_start.processed_at
    assert "mind the gap" in [e for e in events if e.type == "agent.message"][-1].content[0].text


def test_compaction_limit(client: anthropic.Anthropic) -> None:
    agent_id, env_id = make_agent_env(client, model="scripted-small")
    s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    # One message larger than the whole 4k-token window: there is nothing older to summarise.
    client.beta.sessions.events.send(s.id, events=[user_message("word " * 20_000)])
    events = wait_idle(client, s.id)
    error = next(e for e in events if e.type == "session.error")
    assert error.error.type == "compaction_limit_reached_error"
    assert error.error.retry_status.type == "exhausted"
    assert events[-1].stop_reason.type == "retries_exhausted"


def test_system_message_refused_while_awaiting_confirmation(client: anthropic.Anthropic, server: Any) -> None:
    ask = {"type": "agent_toolset_20260401", "default_config": {"permission_policy": {"type": "always_ask"}}}
    agent_id, env_id = make_agent_env(client, tools=[ask])
    s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    client.beta.sessions.events.send(s.id, events=[user_message('[[tool:bash {"command": "true"}]]')])
    events = wait_idle(client, s.id)
    assert events[-1].stop_reason.type == "requires_action"
    r = httpx.post(
        f"{server.base_url}/v1/sessions/{s.id}/events",
        headers={"x-api-key": API_KEY},
        json={
            "events": [
                user_message("x"),
                {"type": "system.message", "content": [{"type": "text", "text": "s"}]},
            ]
        },
    )
    assert r.status_code == 400 and "requires_action" in r.json()["error"]["message"]


def test_an_internal_failure_ends_the_turn_with_unknown_error(make_server: Any, tmp_path: Any) -> None:
    broken = tmp_path / "script.json"
    broken.write_text("{not json")  # the scripted provider cannot load its script
    srv = make_server(env={"HANGAR_SCRIPTED_SCRIPT": str(broken)})
    with anthropic.Anthropic(base_url=srv.base_url, api_key=API_KEY, max_retries=0) as client:
        agent_id, env_id = make_agent_env(client)
        s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
        client.beta.sessions.events.send(s.id, events=[user_message("hi")])
        events = wait_idle(client, s.id)
        error = next(e for e in events if e.type == "session.error")
        assert error.error.type == "unknown_error" and error.error.retry_status.type == "exhausted"
        assert "json" not in error.error.message.lower()  # details stay in the server log
        end = next(e for e in events if e.type == "span.model_request_end")
        assert end.is_error is True
        assert events[-1].stop_reason.type == "retries_exhausted"
        assert client.beta.sessions.retrieve(s.id).status == "idle"
